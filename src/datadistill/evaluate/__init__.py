"""Evaluation: named protocols, the train-on-synthetic loops (epoch-based and FRePo's step-based),
the KRR predictor, and the ``evaluate`` API."""

from datadistill.evaluate.api import EvalResult, ModelScores, evaluate
from datadistill.evaluate.frepo_train import train_network_steps
from datadistill.evaluate.krr import krr_accuracy, krr_predict, krr_solve
from datadistill.evaluate.protocols import PROTOCOLS, Protocol, get_protocol
from datadistill.evaluate.train import NetworkResult, test_accuracy, train_and_test, train_network

__all__ = ["EvalResult", "ModelScores", "NetworkResult", "PROTOCOLS", "Protocol", "evaluate",
           "get_protocol", "krr_accuracy", "krr_predict", "krr_solve", "test_accuracy",
           "train_and_test", "train_network", "train_network_steps"]
