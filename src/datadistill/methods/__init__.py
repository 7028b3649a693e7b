"""Base distillation methods (one module each) and the ``distill`` entry point."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from datadistill.config import resolve_config
from datadistill.data import RealDataset
from datadistill.methods import coreset, dm, frepo, gm, idc  # noqa: F401  (registers the methods)
from datadistill.methods.base import (
    METHODS,
    Checkpointer,
    Distiller,
    SegmentContext,
    StepCallback,
    check_ipc,
    check_segment_support,
)
from datadistill.synthetic import SyntheticSet
from datadistill.utils import resolve_device

__all__ = ["METHODS", "Checkpointer", "Distiller", "SegmentContext", "StepCallback", "check_ipc",
           "distill", "make_distiller"]


def make_distiller(method: str, *, dataset: str, ipc: int, preset: str = "fast",
                   overrides: Mapping[str, Any] | None = None) -> Distiller:
    """The registered ``method`` configured by ``preset`` for (dataset, ipc) plus ``overrides``."""
    cls = METHODS.get(method)
    return cls(resolve_config(cls.name, preset, dataset=dataset, ipc=ipc, overrides=overrides))


def distill(
    method: str,
    real: RealDataset,
    ipc: int,
    *,
    preset: str = "fast",
    seed: int = 0,
    steps: int | None = None,
    device: torch.device | str | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: tuple[StepCallback, ...] = (),
    segment: SegmentContext | None = None,
    **overrides: Any,
) -> SyntheticSet:
    """Distil ``real`` with ``method`` into ``ipc`` images per class.

    Args:
        method: a registered method name (``datadistill list``), e.g. ``"dm"``.
        real: the real training set (from :func:`datadistill.load_dataset`).
        ipc: images per class.
        preset: ``"paper"`` (published hyperparameters) or ``"fast"`` (CPU-sized).
        seed: fixes every random draw; the same seed gives the same synthetic set.
        steps: overrides the preset's number of iterations.
        segment: distil one segment of a sequential synthetic set (frozen earlier segments,
            dropped real images, regulariser weight, trained network state; see
            :class:`SegmentContext`); the result then holds only the new segment. Only methods
            with ``supports_segments`` (dm, dc, dsa, idc) accept it, others raise ConfigError.
        overrides: any other hyperparameter of the preset (unknown keys raise ConfigError).

    Raises:
        UnknownNameError, ConfigError: bad method, preset, IPC or hyperparameter; a segment for a
            method without segment support.
    """
    if steps is not None:
        overrides["steps"] = int(steps)
    d = make_distiller(method, dataset=real.name, ipc=ipc, preset=preset, overrides=overrides)
    extra: dict[str, Any] = {}
    if segment is not None:
        check_segment_support(d)
        extra["segment"] = segment  # methods without segment support do not take the argument
    return d.distill(real, ipc, seed=seed, device=resolve_device(device),
                     checkpoint=None if checkpoint is None else Path(checkpoint), resume=resume,
                     progress=progress, callbacks=callbacks, **extra)
