"""IDC's composition of differentiable augmentations (``DiffAug`` of Kim et al., ICML 2022,
snu-mllab/Efficient-Dataset-Condensation ``augment.py``).

Unlike DSA, which applies ONE op group per call, IDC's ``DiffAug`` applies, in this order:
``flip`` (if in the strategy), ``color`` (brightness, saturation, contrast), ONE op chosen
uniformly among the remaining ops (``crop``, ``scale``, ``rotate``), then ``cutout``. So IDC's
matching strategy ``color_crop_cutout`` applies all three every time, and its evaluation strategy
``color_crop_flip_scale_rotate`` applies flip, color and one of crop / scale / rotate.

The ops and their ranges are those of :class:`~datadistill.augment.DSA`; this class only composes
them. It has the three modes of :class:`DSA` (per-sample, siamese, grouped).
"""

from __future__ import annotations

import torch
from torch import Tensor

from datadistill.augment.dsa import DSA

#: Ops that IDC applies on every call when present (in this order around the one chosen op).
ALWAYS_BEFORE = ("flip", "color")
ALWAYS_AFTER = ("cutout",)


class ComposedDSA:
    """IDC-style augmentation: flip -> color -> one of the other ops -> cutout.

    Args:
        strategy: op groups joined by ``_`` (see :data:`datadistill.augment.dsa.OP_GROUPS`), or
            ``"none"``.

    Raises:
        ConfigError: an unknown op in ``strategy`` (from :class:`DSA`).
    """

    def __init__(self, strategy: str) -> None:
        DSA(strategy)  # validates the op names
        ops = () if strategy.lower() in ("", "none") else tuple(strategy.split("_"))
        self.strategy = strategy
        chosen = [o for o in ops if o not in ALWAYS_BEFORE + ALWAYS_AFTER]
        self.stages: list[DSA] = [DSA(o) for o in ALWAYS_BEFORE if o in ops]
        if chosen:
            self.stages.append(DSA("_".join(chosen)))
        self.stages += [DSA(o) for o in ALWAYS_AFTER if o in ops]

    def __repr__(self) -> str:
        return f"ComposedDSA({self.strategy!r})"

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Per-sample mode (network training): (N, C, H, W) -> same shape, differentiable."""
        for stage in self.stages:
            x = stage(x, generator)
        return x

    def siamese(self, *batches: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        """One draw per stage shared by every sample of every batch."""
        for stage in self.stages:
            batches = stage.siamese(*batches, generator=generator)
        return batches

    def grouped(
        self, batches: tuple[Tensor, ...], groups: tuple[Tensor, ...], num_groups: int,
        generator: torch.Generator,
    ) -> tuple[Tensor, ...]:
        """One draw per stage and group (class), shared across ``batches`` (see
        :meth:`DSA.grouped`): IDC's per-class siamese call for all classes at once."""
        for stage in self.stages:
            batches = stage.grouped(batches, groups, num_groups, generator)
        return batches
