"""Evaluation: named protocols, the train-on-synthetic loop, and the ``evaluate`` API."""

from datadistill.evaluate.api import EvalResult, ModelScores, evaluate
from datadistill.evaluate.protocols import PROTOCOLS, Protocol, get_protocol
from datadistill.evaluate.train import test_accuracy, train_and_test, train_network

__all__ = ["EvalResult", "ModelScores", "PROTOCOLS", "Protocol", "evaluate", "get_protocol",
           "test_accuracy", "train_and_test", "train_network"]
