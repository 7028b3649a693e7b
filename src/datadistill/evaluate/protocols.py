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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from datadistill.errors import ConfigError
from datadistill.registry import Registry


@dataclass(frozen=True)
class Protocol:
    """How networks are trained on a synthetic set and tested.

    Attributes:
        name: registry name.
        epochs: passes over the synthetic set.
        batch_size: images per step.
        lr, momentum, weight_decay: SGD hyperparameters.
        milestones: fractions of ``epochs`` at which the lr is multiplied by ``gamma``.
        gamma: lr decay factor.
        augment: ``"none"``, ``"dsa"`` (per-sample DSA, one op group per batch) or ``"composed"``
            (per-sample IDC ``DiffAug``: :class:`~datadistill.augment.ComposedDSA`); the strategy
            is the dataset default (:meth:`strategy_for`).
        dsa_drop: ops removed from the dataset's default strategy (IDC drops cutout).
        cutmix_p: probability of CutMix per batch (IDC's protocol uses 0.5).
        no_cutmix: datasets on which CutMix is off (:meth:`for_dataset`).
        reset_momentum: clear the SGD momentum at each lr decay (the original DC evaluator
            re-creates its optimiser when it decays the lr).
    """

    name: str
    epochs: int
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

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"protocol {self.name}: epochs and batch_size must be >= 1")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"protocol {self.name}: augment must be one of {', '.join(AUGMENTS)}")
        if self.lr <= 0 or self.gamma <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError(f"protocol {self.name}: lr and gamma must be > 0, momentum and "
                              "weight_decay >= 0")
        if any(not 0.0 < m <= 1.0 for m in self.milestones):
            raise ConfigError(f"protocol {self.name}: milestones are fractions in (0, 1]")
        if not 0.0 <= self.cutmix_p <= 1.0:
            raise ConfigError(f"protocol {self.name}: cutmix_p must lie in [0, 1]")

    def lr_at(self, epoch: int) -> float:
        """Learning rate for 0-based ``epoch`` (step decay at the milestone epochs).

        Decays apply from 0-based epoch ``int(epochs * m)``. The original DC evaluator runs
        ``epochs + 1`` epochs and decays after 0-based epoch ``epochs // 2 + 1``; we run exactly
        ``epochs`` and decay at ``epochs // 2`` (a two-epoch shift out of 1000, not measurable).
        """
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


AUGMENTS = ("none", "dsa", "composed")
PROTOCOLS: Registry[Protocol] = Registry("protocol")
for _p in (
    Protocol("dc", epochs=300, augment="none", description="DC: 300 epochs, no augmentation"),
    Protocol("dsa", epochs=1000, augment="dsa", description="DSA/DM: 1000 epochs, per-sample DSA"),
    Protocol("idc", epochs=1000, batch_size=64, milestones=(2 / 3, 5 / 6), gamma=0.2,
             augment="composed", dsa_drop=("cutout",), cutmix_p=0.5, no_cutmix=("mnist",),
             reset_momentum=False,
             description="IDC: 1000 epochs, batch 64, lr x0.2 at 2/3 and 5/6, DiffAug, CutMix 0.5"),
):
    PROTOCOLS.add(_p.name, _p, _p.description)


def get_protocol(protocol: str | Protocol) -> Protocol:
    """A registered protocol by name (UnknownNameError lists the valid ones), or ``protocol``."""
    return protocol if isinstance(protocol, Protocol) else PROTOCOLS.get(protocol)
