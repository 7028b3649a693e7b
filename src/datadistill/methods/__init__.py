"""Base distillation methods (one module each) and the ``distill`` entry point."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from datadistill.config import resolve_config
from datadistill.data import RealDataset
from datadistill.errors import ConfigError
from datadistill.methods import coreset, dm, gm, idc  # noqa: F401  (registers the methods)
from datadistill.methods.base import (
    METHODS,
    Checkpointer,
    Distiller,
    SegmentContext,
    StepCallback,
    check_ipc,
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
    frozen_images: torch.Tensor | None = None,
    frozen_labels: torch.Tensor | None = None,
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
        frozen_images, frozen_labels: optional synthetic images ``(F, C, H, W)`` (model-input
            space) and labels ``(F,)`` of earlier segments, kept fixed; only methods whose
            ``distill`` takes them (dc, dsa, idc) accept them, others raise ConfigError.
        overrides: any other hyperparameter of the preset (unknown keys raise ConfigError).

    Raises:
        UnknownNameError, ConfigError: bad method, preset, IPC or hyperparameter.
    """
    if steps is not None:
        overrides["steps"] = int(steps)
    d = make_distiller(method, dataset=real.name, ipc=ipc, preset=preset, overrides=overrides)
    extra: dict[str, Any] = {}
    if frozen_images is not None or frozen_labels is not None:
        if "frozen_images" not in inspect.signature(d.distill).parameters:
            raise ConfigError(f"method {d.name} does not take frozen synthetic images")
        extra = {"frozen_images": frozen_images, "frozen_labels": frozen_labels}
    return d.distill(real, ipc, seed=seed, device=resolve_device(device),
                     checkpoint=None if checkpoint is None else Path(checkpoint), resume=resume,
                     progress=progress, callbacks=callbacks, **extra)
