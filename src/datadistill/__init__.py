"""datadistill: dataset distillation (dataset condensation) for PyTorch.

Distil a real set into a small synthetic set, evaluate it under the field's protocols, and use it.

    >>> from datadistill import load_dataset
    >>> from datadistill.methods import distill
    >>> from datadistill.evaluate import evaluate
    >>> train, test = load_dataset("fashion-mnist")
    >>> synset = distill("dm", train, ipc=10, preset="fast", seed=0)
    >>> result = evaluate(synset, "dsa", models=["convnet"], num_eval=5, test=test, train=train)
"""

__version__ = "0.1.0"

from datadistill.data import RealDataset, load_dataset  # noqa: E402
from datadistill.synthetic import SyntheticSet  # noqa: E402

__all__ = ["RealDataset", "SyntheticSet", "load_dataset", "__version__"]
