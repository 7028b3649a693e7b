"""``evaluate``: the standalone evaluation API (separate from the methods).

Honest by construction: the accuracy of each network is measured once, after its last epoch; the
result carries mean and std over ``num_eval`` networks per architecture, and (unless disabled) a
random real subset at the same IPC trained under the same protocol with the same seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from datadistill.data import Preprocessing, RealDataset, load_dataset
from datadistill.errors import ConfigError
from datadistill.evaluate.checkpoint import EvalCheckpoint, tensor_digest
from datadistill.evaluate.frepo_train import frepo_strategy
from datadistill.evaluate.protocols import Protocol, get_protocol
from datadistill.evaluate.train import train_and_test
from datadistill.models import NETWORKS
from datadistill.synthetic import SyntheticSet
from datadistill.utils import Timer, resolve_device, resolve_precision

log = logging.getLogger(__name__)


@dataclass
class ModelScores:
    """Last-epoch test accuracies (%) of ``len(accuracies)`` networks of one architecture."""

    model: str
    accuracies: list[float]
    seconds: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Population std (``np.std``, as the original DC code reports)."""
        return float(np.std(self.accuracies))

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass
class EvalResult:
    """Result of :func:`evaluate`.

    ``scores[model]`` for the synthetic set, ``baseline[model]`` for the random real subset at the
    same IPC under the same protocol (``None`` when disabled), ``wall_seconds`` for everything;
    with ``evaluate(krr=True)`` also ``krr_scores`` / ``krr_baseline``: the KRR predictor's
    accuracies with the features of the same networks (else ``None``).
    """

    protocol: dict[str, Any]
    dataset: str
    ipc: int
    method: str
    scores: dict[str, ModelScores]
    baseline: dict[str, ModelScores] | None
    wall_seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    krr_scores: dict[str, ModelScores] | None = None
    krr_baseline: dict[str, ModelScores] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for part in ("scores", "baseline", "krr_scores", "krr_baseline"):
            for name, s in (getattr(self, part) or {}).items():
                d[part][name].update(mean=s.mean, std=s.std)
        return d

    def table(self) -> str:
        """A plain-text table: one row per model, synthetic vs random subset, mean ± std."""
        head = f"{'model':<16}{self.method + ' (synthetic)':>26}"
        if self.baseline is not None:
            head += f"{'random subset':>22}"
        head += f"{'train s/model':>16}"
        lines = [
            f"{self.dataset}, IPC {self.ipc}, protocol {self.protocol['name']}: last-epoch test "
            f"accuracy %, mean ± std over {len(next(iter(self.scores.values())).accuracies)} "
            "networks",
            head,
        ]
        for name, s in self.scores.items():
            row = f"{name:<16}{str(s):>26}"
            if self.baseline is not None:
                row += f"{str(self.baseline[name]):>22}"
            row += f"{np.mean(s.seconds):>16.1f}"
            lines.append(row)
            if self.krr_scores is not None:  # the same networks, KRR predictor
                row = f"{'  + KRR':<16}{str(self.krr_scores[name]):>26}"
                if self.krr_baseline is not None:
                    row += f"{str(self.krr_baseline[name]):>22}"
                lines.append(row)
        lines.append(f"evaluation wall time: {self.wall_seconds:.1f} s")
        return "\n".join(lines)


def _as_input_space(ds: RealDataset, prep: Preprocessing) -> RealDataset:
    """``ds`` (normalised, no ZCA) whitened with ``prep.zca`` when ``prep`` has one."""
    if prep.zca is None:
        return ds
    return RealDataset(prep.zca.apply(ds.images), ds.labels, ds.class_names, prep, ds.name,
                       ds.split)


def _same_preprocessing(a: Preprocessing, b: Preprocessing) -> bool:
    if not np.allclose(a.mean, b.mean) or not np.allclose(a.std, b.std):
        return False
    if (a.zca is None) != (b.zca is None):
        return False
    return a.zca is None or torch.allclose(a.zca.transform, b.zca.transform, atol=1e-4)


def resolve_splits(
    synset: SyntheticSet,
    train: RealDataset | None,
    test: RealDataset | None,
    need_train: bool,
    data_root: str | None = None,
) -> tuple[RealDataset | None, RealDataset]:
    """Load the dataset named in ``synset.meta`` when ``train``/``test`` are not given."""
    if test is None or (need_train and train is None):
        name = synset.meta.get("dataset")
        if not name:
            raise ConfigError("the synthetic set does not name its dataset: pass train= and test=")
        size = synset.image_shape[-1] if name == "imagefolder" else None
        tr, te = load_dataset(name, data_root, zca=False, im_size=size)
        # Whiten with the synthetic set's own ZCA (a refit could differ in the last bits).
        tr, te = (_as_input_space(d, synset.preprocessing) for d in (tr, te))
        train = train if train is not None else tr
        test = test if test is not None else te
    if test.image_shape != synset.image_shape or test.num_classes != synset.num_classes:
        raise ConfigError(
            f"test set {test.name} {test.image_shape} with {test.num_classes} classes does not fit "
            f"the synthetic set {synset.image_shape} with {synset.num_classes} classes"
        )
    for split in (test, train):
        if split is not None and not _same_preprocessing(split.preprocessing, synset.preprocessing):
            raise ConfigError(
                f"the {split.split} set's preprocessing ({split.preprocessing.describe()}) differs "
                f"from the synthetic set's ({synset.preprocessing.describe()}): evaluate with "
                "matching data"
            )
    return train, test


def _method_label(meta: dict) -> str:
    """``dm``, or ``dm+sequential`` for a set made by a strategy wrapping ``dm``."""
    label = str(meta.get("method", "synthetic"))
    strategy = meta.get("strategy")
    if isinstance(strategy, dict) and strategy.get("name"):
        label += f"+{strategy['name']}"
    return label


def evaluate(
    synset: SyntheticSet,
    protocol: str | Protocol = "dsa",
    models: Sequence[str] | None = None,
    num_eval: int = 5,
    seed: int = 0,
    *,
    train: RealDataset | None = None,
    test: RealDataset | None = None,
    baseline: bool = True,
    device: torch.device | str | None = None,
    precision: str = "auto",
    compile: bool | str = "auto",
    data_root: str | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    krr: bool = False,
) -> EvalResult:
    """Train ``num_eval`` fresh networks of each architecture on ``synset`` and test them.

    Args:
        synset: the synthetic set.
        protocol: a registered protocol name (``"dc"``, ``"dsa"``, ``"frepo"``, ``"frepo-krr"``)
            or a :class:`Protocol`.
        models: network names; several give the cross-architecture table (default: the
            protocol's network, ``convnet``, or ``frepo-convnet`` for the frepo protocols).
        num_eval: networks per architecture (>= 1; report at least 5).
        seed: network i is initialised and trained with seed ``seed + i``; the random-subset
            baseline uses the same seeds and the subset drawn with ``seed``.
        train, test: the real sets; loaded from ``synset.meta["dataset"]`` when omitted.
        baseline: also evaluate a random real subset at the same IPC.
        precision: ``"auto"`` (bf16 where the hardware runs it natively, else float32),
            ``"bf16"`` (autocast for the forward pass; measured harmless, BENCHMARKS.md) or
            ``"fp32"``.
        compile: ``torch.compile`` the training step: True, False or ``"auto"`` (when the run is
            long enough to repay the compilation, about 30-60 s on a CPU).
        checkpoint: a JSON file that records each finished network; an evaluation given the
            file of an interrupted one trains only the networks still missing (same results,
            see :mod:`datadistill.evaluate.checkpoint`). ``wall_seconds`` then adds the
            recorded seconds of the networks taken from the file to this call's own time.
        krr: also predict the test set by kernel ridge regression on the features of each
            trained network (FRePo's KRR predictor, computed as its evaluator does with
            ``eval_krr``: the same networks, no retraining; ``krr_scores`` / ``krr_baseline``).
            Ignored by a protocol whose predictor already is KRR (``frepo-krr``).

    Returns:
        EvalResult with per-network last-epoch accuracies (percent).

    Raises:
        UnknownNameError: unknown protocol or network. ConfigError: ``num_eval < 1``, a test set
        that does not fit the synthetic set, or a ``checkpoint`` written for another evaluation.
    """
    proto = get_protocol(protocol)
    if models is None:
        models = (proto.model,)
    if not models:
        raise ConfigError("models must name at least one network, e.g. convnet")
    for m in models:
        NETWORKS.get(m)
    if num_eval < 1:
        raise ConfigError(f"num_eval must be >= 1, got {num_eval}")
    dev = resolve_device(device)
    train, test = resolve_splits(synset, train, test, baseline, data_root)
    images, labels = synset.decode()
    if proto.loss == "ce" and labels.dim() == 2 and bool((labels < 0).any()):
        raise ConfigError(
            f"the synthetic set's labels are regression targets with negative entries (made by "
            f"{synset.meta.get('method', 'a regression method')}), not class probabilities: "
            "evaluate it with an MSE protocol, e.g. --protocol frepo"
        )
    steps_per_model = proto.train_steps(images.shape[0])
    if compile == "auto":
        use_compile = steps_per_model * num_eval * len(models) >= 2000
    else:
        use_compile = bool(compile)
    data_name = synset.meta.get("dataset") or test.name
    proto = proto.for_dataset(data_name)  # e.g. IDC: no CutMix on MNIST
    strategy = (frepo_strategy(data_name) if proto.augment == "frepo"
                else proto.strategy_for(data_name))
    runs: list[tuple[str, str, torch.Tensor, torch.Tensor, float | None]] = [
        ("scores", m, images, labels, synset.lr) for m in models
    ]
    if baseline:
        from datadistill.methods.coreset import random_subset

        assert train is not None
        # the baseline gets the same storage budget (IDC's multi-formation decodes f^2 images from
        # each stored one; the papers compare at equal stored IPC)
        bx, by = random_subset(train, synset.stored_ipc, seed)
        runs += [("baseline", m, bx, by, None) for m in models]
    also_krr = krr and proto.predictor != "krr"
    results: dict[str, dict[str, ModelScores]] = {"scores": {}, "baseline": {}}
    krr_results: dict[str, dict[str, ModelScores]] = {"scores": {}, "baseline": {}}
    earlier = 0.0
    resolved_precision = resolve_precision(precision, dev)
    done = None if checkpoint is None else EvalCheckpoint(checkpoint, {
        "synset": tensor_digest(images, labels), "lr": synset.lr, "protocol": proto.to_dict(),
        "seed": seed, "dsa_strategy": strategy, "precision": resolved_precision,
        "compile": use_compile, "device": dev.type, "test": test.checksum(),
        "baseline": [train.checksum(), synset.stored_ipc] if baseline else None})
    test_dev = test.to(dev)
    with Timer() as total, tqdm(total=len(runs) * num_eval, desc=f"evaluate ({proto.name})",
                                disable=not progress, dynamic_ncols=True) as bar:
        for part, model, x, y, lr in runs:
            accs, secs, krr_accs = [], [], []
            for i in range(num_eval):
                key = EvalCheckpoint.key(part, model, i)
                r = None if done is None else done.get(key, krr=also_krr)
                if r is not None:
                    earlier += r.seconds  # trained by an interrupted call
                else:
                    r = train_and_test(model, x, y, test_dev, proto, seed=seed + i,
                                       dsa_strategy=strategy, device=dev, precision=precision,
                                       compile=use_compile, lr=lr, krr=also_krr)
                    if done is not None:
                        done.record(key, r)
                accs.append(r.accuracy)
                secs.append(r.seconds)
                krr_accs.append(r.krr_accuracy)
                bar.set_postfix(model=model, set=part, acc=f"{r.accuracy:.2f}")
                bar.update(1)
            results[part][model] = ModelScores(model, accs, secs)
            if also_krr:
                krr_results[part][model] = ModelScores(model, krr_accs, secs)
    return EvalResult(
        protocol=proto.to_dict(),
        dataset=test.name,
        ipc=synset.stored_ipc,
        method=_method_label(synset.meta),
        scores=results["scores"],
        baseline=results["baseline"] if baseline else None,
        wall_seconds=total.seconds + earlier,
        krr_scores=krr_results["scores"] if also_krr else None,
        krr_baseline=krr_results["baseline"] if also_krr and baseline else None,
        settings={"num_eval": num_eval, "seed": seed,
                  "precision": resolved_precision,
                  "compile": use_compile, "device": str(dev), "dsa_strategy": strategy},
    )
