"""Named evaluation protocols: how a synthetic set is turned into test accuracy.

A :class:`Protocol` is a frozen record; every result carries the protocol it was measured under.
Sources (REFERENCE.md): ``dc`` and ``dsa`` are the evaluation of the original DC/DSA/DM code
(``evaluate_synset``: SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, lr x0.1 at half the
epochs; 300 epochs without augmentation for DC, 1000 epochs with per-sample DSA for DSA and DM).
``idc`` is the evaluation of IDC (snu-mllab/Efficient-Dataset-Condensation ``train.py`` /
``argument.py`` / ``test.py``): 1000 epochs, batch 64, SGD lr 0.01 momentum 0.9 wd 5e-4,
``MultiStepLR`` x0.2 at 2/3 and 5/6 of the epochs (no momentum reset), per-sample augmentation
with IDC's ``DiffAug`` composition (flip, color, one of crop/scale/rotate; cutout removed because
CutMix is on), CutMix with p 0.5 - except MNIST, whose factor-2 runs use no CutMix (``test.py``);
Fashion-MNIST keeps CutMix (``argument.py`` sets ``mix_p = 0.5`` for it and its run name has
``_cut``).

``frepo`` is the evaluation of FRePo (Zhou et al., NeurIPS 2022; ``script/eval.py`` and
``proto_evaluate`` of yongchaoz/FRePo): FRePo's ConvNet without normalisation, Adam lr 3e-4 (no
weight decay), 500 steps of linear warm-up from 0 then cosine decay to 0.01x, batch
``min(N, 500)``, MSE (``0.5 * sum over classes``) on the learned labels (hard labels become
centred one-hot targets ``onehot - 1/K``), one random augmentation group per batch with its own
parameters per image (no flip for the MNISTs), and a number of optimizer steps that depends on the
size of the synthetic set (1000 / 2000 / 5000 for 10 / 100 / 500 images). ``frepo-krr`` trains
the same way and predicts the test set with kernel ridge regression on the trained network's
features instead of its classifier (FRePo's second evaluation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from datadistill.errors import ConfigError
from datadistill.registry import Registry

#: FRePo's ``step_per_prototpyes`` (script/eval.py): optimizer steps by synthetic-set size.
FREPO_STEPS: tuple[tuple[int, int], ...] = (
    (10, 1000), (100, 2000), (200, 20000), (400, 5000), (500, 5000), (1000, 10000), (2000, 40000),
    (5000, 40000),
)
AUGMENTS = ("none", "dsa", "composed", "frepo")
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("ce", "mse")
PREDICTORS = ("network", "krr")


@dataclass(frozen=True)
class Protocol:
    """How networks are trained on a synthetic set and tested.

    A protocol is either *epoch-based* (``epochs``: the DC/DSA evaluator, SGD with step decay at
    ``milestones``) or *step-based* (``steps`` or ``steps_by_images``: a fixed number of optimizer
    steps with linear warm-up and cosine decay, FRePo's evaluator).

    Attributes:
        name: registry name.
        epochs: passes over the synthetic set (epoch-based protocols).
        batch_size: images per step (step-based: ``min(N, batch_size)``).
        lr, momentum, weight_decay: optimizer hyperparameters (momentum: SGD only).
        milestones: fractions of ``epochs`` at which the lr is multiplied by ``gamma``.
        gamma: lr decay factor.
        augment: ``"none"``, ``"dsa"`` (per-sample DSA, one op group per batch), ``"composed"``
            (per-sample IDC ``DiffAug``: :class:`~datadistill.augment.ComposedDSA`) or ``"frepo"``
            (FRePo's ranges: DSA's op groups with scale 1.25, cutout 1/4, brightness +-0.25; no
            flip for the MNISTs); the strategy is the dataset default (:meth:`strategy_for`).
        dsa_drop: ops removed from the dataset's default strategy (IDC drops cutout).
        cutmix_p: probability of CutMix per batch (IDC's protocol uses 0.5).
        no_cutmix: datasets on which CutMix is off (:meth:`for_dataset`).
        reset_momentum: clear the SGD momentum at each lr decay (the original DC evaluator
            re-creates its optimiser when it decays the lr).
        optimizer: ``"sgd"`` or ``"adam"`` (``"adam"`` only for step-based protocols).
        steps: optimizer steps (step-based protocols), whatever the size of the set.
        steps_by_images: ``((images, steps), ...)``: steps for a set of that many images; a size
            between two entries takes the next larger entry (the largest beyond the table). Used
            when ``steps`` is None.
        warmup: linear warm-up steps from lr 0 (step-based; capped at half the steps so that a
            shortened run still reaches the peak lr).
        final_lr: the cosine schedule ends at ``final_lr * lr`` (step-based).
        loss: ``"ce"`` (cross-entropy) or ``"mse"`` (``0.5 * squared error`` summed over classes,
            on the soft labels, or on centred one-hot targets for hard labels).
        predictor: ``"network"`` (the trained network's classifier) or ``"krr"`` (kernel ridge
            regression on the trained network's features, support set = the synthetic set).
        model: the network evaluated when the caller names none.
    """

    name: str
    epochs: int | None = None
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.5,)
    gamma: float = 0.1
    augment: str = "dsa"
    dsa_drop: tuple[str, ...] = ()
    cutmix_p: float = 0.0
    no_cutmix: tuple[str, ...] = ()
    reset_momentum: bool = True
    description: str = ""
    optimizer: str = "sgd"
    steps: int | None = None
    steps_by_images: tuple[tuple[int, int], ...] = ()
    warmup: int = 0
    final_lr: float = 0.0
    loss: str = "ce"
    predictor: str = "network"
    model: str = "convnet"

    def __post_init__(self) -> None:
        n = self.name
        if self.step_based:
            if self.epochs is not None:
                raise ConfigError(f"protocol {n} counts optimizer steps, not epochs: set steps "
                                  "(--eval-steps) instead of epochs")
            if self.steps is not None and self.steps < 1:
                raise ConfigError(f"protocol {n}: steps must be >= 1")
            if any(len(e) != 2 or e[0] < 1 or e[1] < 1 for e in self.steps_by_images):
                raise ConfigError(f"protocol {n}: steps_by_images holds (images, steps) pairs >= 1")
            if self.warmup < 0 or not 0.0 <= self.final_lr <= 1.0:
                raise ConfigError(f"protocol {n}: warmup must be >= 0 and final_lr in [0, 1]")
        else:
            if self.epochs is None:
                raise ConfigError(f"protocol {n}: set epochs (or steps for a step-based protocol)")
            if self.optimizer != "sgd" or self.loss != "ce" or self.warmup:
                raise ConfigError(f"protocol {n}: optimizer, loss and warmup other than SGD, "
                                  "cross-entropy and 0 need a step-based protocol (set steps)")
        if (self.epochs is not None and self.epochs < 1) or self.batch_size < 1:
            raise ConfigError(f"protocol {n}: epochs and batch_size must be >= 1")
        for field_, value, valid in (("augment", self.augment, AUGMENTS),
                                     ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("loss", self.loss, LOSSES),
                                     ("predictor", self.predictor, PREDICTORS)):
            if value not in valid:
                raise ConfigError(f"protocol {n}: {field_} must be one of {', '.join(valid)}, "
                                  f"got {value!r}")
        if self.lr <= 0 or self.gamma <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError(f"protocol {self.name}: lr and gamma must be > 0, momentum and "
                              "weight_decay >= 0")
        if any(not 0.0 < m <= 1.0 for m in self.milestones):
            raise ConfigError(f"protocol {self.name}: milestones are fractions in (0, 1]")
        if not 0.0 <= self.cutmix_p <= 1.0:
            raise ConfigError(f"protocol {self.name}: cutmix_p must lie in [0, 1]")

    @property
    def step_based(self) -> bool:
        """True when the protocol counts optimizer steps (``steps`` or ``steps_by_images``)."""
        return self.steps is not None or bool(self.steps_by_images)

    def train_steps(self, num_images: int) -> int:
        """Total optimizer steps for a training set of ``num_images`` images."""
        if not self.step_based:
            assert self.epochs is not None
            return self.epochs * -(-num_images // self.batch_size)
        if self.steps is not None:
            return self.steps
        table = sorted(self.steps_by_images)
        return next((s for size, s in table if num_images <= size), table[-1][1])

    def lr_at_step(self, step: int, total: int) -> float:
        """Step-based schedule: lr for 0-based ``step`` of ``total`` (optax's
        ``linear_schedule(0, lr, warmup)`` joined with ``cosine_decay_schedule(lr, total - warmup,
        alpha=final_lr)``, as FRePo's evaluator)."""
        warm = min(self.warmup, total // 2)
        if step < warm:
            return self.lr * step / warm
        t = min(step - warm, max(total - warm, 1)) / max(total - warm, 1)
        return self.lr * (self.final_lr + (1 - self.final_lr) * 0.5 * (1 + math.cos(math.pi * t)))

    def lr_at(self, epoch: int) -> float:
        """Learning rate for 0-based ``epoch`` (step decay at the milestone epochs).

        Decays apply from 0-based epoch ``int(epochs * m)``. The original DC evaluator runs
        ``epochs + 1`` epochs and decays after 0-based epoch ``epochs // 2 + 1``; we run exactly
        ``epochs`` and decay at ``epochs // 2`` (a two-epoch shift out of 1000, not measurable).
        """
        assert self.epochs is not None, "lr_at is for epoch-based protocols; see lr_at_step"
        # + 1e-9: 300 * (2/3) is 199.999... in floating point; MultiStepLR's 2 * 300 // 3 is 200
        drops = sum(epoch >= int(self.epochs * m + 1e-9) for m in self.milestones)
        return self.lr * self.gamma**drops

    def for_dataset(self, dataset: str | None) -> Protocol:
        """This protocol as run on ``dataset`` (CutMix off where ``no_cutmix`` says so)."""
        if dataset is not None and dataset.lower() in self.no_cutmix and self.cutmix_p > 0:
            return replace(self, cutmix_p=0.0)
        return self

    def strategy_for(self, dataset: str | None) -> str:
        """The augmentation strategy on ``dataset``: its DSA default minus ``dsa_drop``."""
        from datadistill.augment import default_strategy

        ops = [o for o in default_strategy(dataset).split("_") if o not in self.dsa_drop]
        return "_".join(ops) or "none"

    def with_(self, **changes: Any) -> Protocol:
        """A copy with some fields changed (e.g. fewer epochs for a quick look)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROTOCOLS: Registry[Protocol] = Registry("protocol")
for _p in (
    Protocol("dc", epochs=300, augment="none", description="DC: 300 epochs, no augmentation"),
    Protocol("dsa", epochs=1000, augment="dsa", description="DSA/DM: 1000 epochs, per-sample DSA"),
    Protocol("idc", epochs=1000, batch_size=64, milestones=(2 / 3, 5 / 6), gamma=0.2,
             augment="composed", dsa_drop=("cutout",), cutmix_p=0.5, no_cutmix=("mnist",),
             reset_momentum=False,
             description="IDC: 1000 epochs, batch 64, lr x0.2 at 2/3 and 5/6, DiffAug, CutMix 0.5"),
    Protocol("frepo", optimizer="adam", lr=3e-4, momentum=0.0, weight_decay=0.0, batch_size=500,
             steps_by_images=FREPO_STEPS, warmup=500, final_lr=0.01, loss="mse", augment="frepo",
             model="frepo-convnet",
             description="FRePo: Adam 3e-4, warm-up + cosine, MSE on learned labels, "
                         "1000/2000/5000 steps at 10/100/500 images"),
    Protocol("frepo-krr", optimizer="adam", lr=3e-4, momentum=0.0, weight_decay=0.0,
             batch_size=500, steps_by_images=FREPO_STEPS, warmup=500, final_lr=0.01, loss="mse",
             augment="frepo", predictor="krr", model="frepo-convnet",
             description="FRePo's training, then kernel ridge regression on the network's "
                         "features (FRePo's KRR predictor)"),
):
    PROTOCOLS.add(_p.name, _p, _p.description)


def get_protocol(protocol: str | Protocol) -> Protocol:
    """A registered protocol by name (UnknownNameError lists the valid ones), or ``protocol``."""
    return protocol if isinstance(protocol, Protocol) else PROTOCOLS.get(protocol)
