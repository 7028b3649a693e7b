"""The Distiller interface, the method registry, and the step loop shared by image-optimising
methods (progress bar, periodic atomic checkpoints, resume)."""

from __future__ import annotations

import io
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from datadistill.data import RealDataset
from datadistill.errors import ArtifactError, ConfigError
from datadistill.registry import Registry
from datadistill.synthetic import SyntheticSet, library_versions
from datadistill.utils import atomic_path, machine_description

log = logging.getLogger(__name__)

#: ``callback(step, synset_fn)`` is called after every step; ``synset_fn()`` builds the current
#: synthetic set (only call it when needed, e.g. to snapshot at chosen steps).
StepCallback = Callable[[int, Callable[[], SyntheticSet]], None]


def check_ipc(real: RealDataset, ipc: int) -> None:
    """Raise ConfigError unless 1 <= ipc <= the smallest class of ``real``."""
    if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1:
        raise ConfigError(f"IPC must be a positive integer, got {ipc!r}")
    smallest = int(real.class_counts().min())
    if ipc > smallest:
        raise ConfigError(
            f"IPC {ipc} is larger than the smallest class of {real.name} ({smallest} images); "
            f"choose --ipc <= {smallest}"
        )


def cosine_lr(base: float, step: int, total: int, final: float) -> float:
    """Cosine decay from ``base`` to ``final * base`` over ``total`` steps, at 0-based ``step``
    (clamped to ``total``): optax's ``cosine_decay_schedule(base, total, alpha=final)``, which
    FRePo uses; ``final = 1`` is a constant rate."""
    t = min(step, total) / max(total, 1)
    return base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t)))


class Distiller(ABC):
    """A base method: ``distill(real, ipc, seed=...) -> SyntheticSet``.

    Subclasses set ``name`` and ``description`` and receive their resolved config (a dict of the
    preset's hyperparameters with user overrides) in ``__init__``.

    ``sample_policy``: a hook that a strategy may set (e.g. crucial-sample selection + ISA,
    :mod:`datadistill.strategies.isa`) and that a method whose class sets
    ``supports_sample_policy`` calls in its per-step objective instead of its plain loss; ``None``
    (the default) is the plain loss. ``default_protocol``: the evaluation protocol that fits the
    method's output (e.g. ``frepo`` for learned regression labels).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: True when ``distill`` accepts ``segment=SegmentContext`` (sequential strategy).
    supports_segments: ClassVar[bool] = False
    #: True when ``distill`` honours ``sample_policy`` (crucial-sample selection / ISA).
    supports_sample_policy: ClassVar[bool] = False
    default_protocol: ClassVar[str] = "dsa"
    sample_policy: Any = None

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    #: config keys that do not change the result (a resumed run may grow ``steps``, switch
    #: compilation, vectorisation or the checkpoint period) and so stay out of the fingerprint
    UNFINGERPRINTED: ClassVar[tuple[str, ...]] = ("steps", "checkpoint_every", "compile",
                                                  "vectorize")

    def run_fingerprint(self, real: RealDataset, ipc: int, seed: int,
                        segment: SegmentContext | None = None) -> dict[str, Any]:
        """What identifies a run in its checkpoint: method, dataset checksum, IPC, seed, the
        config that changes the result and, in a sequential run, the segment (strings and
        numbers only; :class:`Checkpointer` refuses a checkpoint whose fingerprint differs)."""
        same = {k: v for k, v in self.config.items() if k not in self.UNFINGERPRINTED}
        fingerprint = {"method": self.name, "dataset": real.checksum(), "ipc": ipc, "seed": seed,
                       "config": repr(sorted(same.items()))}
        if segment is not None:
            fingerprint["segment"] = repr(segment.fingerprint())
        return fingerprint

    def cfg(self, key: str) -> Any:
        try:
            return self.config[key]
        except KeyError:
            raise ConfigError(f"method {self.name}: missing config key {key!r}") from None

    def lr_final(self) -> float:
        """The ``lr_final`` option, for :func:`cosine_lr`: the final learning rate as a fraction
        of the initial one (1 = constant). Raises ConfigError outside [0, 1]."""
        value = float(self.cfg("lr_final"))
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"lr_final must be in [0, 1] (the final learning rate as a fraction "
                              f"of the initial one; 1 = constant), got {value}")
        return value

    @abstractmethod
    def distill(
        self,
        real: RealDataset,
        ipc: int,
        *,
        seed: int = 0,
        device: torch.device | None = None,
        checkpoint: Path | None = None,
        resume: bool = False,
        progress: bool = True,
        callbacks: tuple[StepCallback, ...] = (),
        segment: SegmentContext | None = None,
    ) -> SyntheticSet:
        """Distil ``real`` into ``ipc`` images per class.

        Args:
            real: the real training set (model-input space).
            ipc: images per class, 1 <= ipc <= smallest class (else ConfigError).
            seed: fixes every random draw (init, networks, batches, augmentation).
            device: where to compute (default: CUDA if available, else CPU).
            checkpoint: file for periodic checkpoints; with ``resume`` a run continues from it.
            progress: show a tqdm bar with the loss and ETA.
            callbacks: called after each step (see :data:`StepCallback`).
            segment: only for methods with ``supports_segments``: distil one segment of a
                sequential synthetic set (see :class:`SegmentContext`); the result then holds
                only the new segment. Others raise ConfigError when it is given.
        """

    def make_synset(self, images: torch.Tensor, labels: torch.Tensor, real: RealDataset, ipc: int,
                    seed: int, wall: float, extra: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> SyntheticSet:
        """Wrap tensors in a SyntheticSet with the standard metadata."""
        meta = {
            "method": self.name,
            "dataset": real.name,
            "dataset_checksum": real.checksum(),
            "ipc": ipc,
            "seed": seed,
            "config": self.config,
            "distill_seconds": round(wall, 2),
            "machine": machine_description(images.device),  # a wall time means nothing without it
            "versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        meta.update(extra or {})
        return SyntheticSet(images, labels, real.class_names, real.preprocessing, meta=meta,
                            **kwargs)


METHODS: Registry[type[Distiller]] = Registry("method")


@dataclass(frozen=True)
class SegmentContext:
    """What a base method needs to distil ONE segment of a sequentially built synthetic set
    (the sequential difficulty-aligned segments of the ADS / EDD / DASM drafts; REFERENCE.md).

    A method that supports segments (``Distiller.supports_segments``) receives it as
    ``distill(pool, ipc_segment, segment=ctx)``: ``pool`` (the ``real`` argument) is the current
    real pool, which the NEW segment's images are matched to; the method returns only the new
    segment. The earlier segments stay frozen: they enter only the regulariser, which matches
    the whole synthetic set so far (frozen + new) to a batch of the dropped (easy) real images,
    with the same network and augmentation draw as the main loss, weighted by ``reg_weight``.

    Attributes:
        index: 0-based index of the segment being distilled.
        frozen_images: (M, C, H, W) float32, the earlier segments in model-input space (M may
            be 0), decoded training images (a method with a compact parameterisation passes
            decoded images here).
        frozen_labels: (M,) int64 in [0, K).
        reg_pool: the real images dropped from the pool so far (a class may have none), or
            None when nothing was dropped; the regulariser skips classes without any.
        reg_weight: weight of the regulariser (>= 0; 0 switches it off exactly).
        net_state: an optional ``state_dict`` of the network trained on the earlier segments
            (the strategy's probe network, same architecture as the method's ``net``); matching
            networks may start from it instead of a fresh random initialisation.
        trained_net_fraction: in [0, 1], the fraction of matching steps that start from
            ``net_state`` (drawn per step with the method's generator); the rest use the
            method's usual fresh random network. Ignored when ``net_state`` is None.

    Raises:
        ConfigError: inconsistent shapes, a negative or non-finite weight, a fraction outside
            [0, 1].
    """

    index: int
    frozen_images: torch.Tensor
    frozen_labels: torch.Tensor
    reg_pool: RealDataset | None = None
    reg_weight: float = 0.0
    net_state: Mapping[str, torch.Tensor] | None = None
    trained_net_fraction: float = 0.0

    def __post_init__(self) -> None:
        x, y = self.frozen_images, self.frozen_labels
        if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ConfigError(
                f"segment {self.index}: frozen images must be (M, C, H, W) with labels (M,), got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        if not (math.isfinite(self.reg_weight) and self.reg_weight >= 0):
            raise ConfigError(f"reg_weight must be a finite number >= 0, got {self.reg_weight}")
        if not 0.0 <= self.trained_net_fraction <= 1.0:
            raise ConfigError(
                f"trained_net_fraction must lie in [0, 1], got {self.trained_net_fraction}"
            )

    @property
    def uses_regulariser(self) -> bool:
        """True when the regulariser has weight, frozen images and dropped real images."""
        return (self.reg_weight > 0 and self.frozen_images.shape[0] > 0
                and self.reg_pool is not None and len(self.reg_pool) > 0)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this segment's run in a checkpoint (cheap summaries, not tensors)."""
        return {
            "segment": self.index,
            "frozen": [int(self.frozen_images.shape[0]),
                       round(float(self.frozen_images.double().sum()), 4)],
            "reg_pool": None if self.reg_pool is None else self.reg_pool.checksum(),
            "reg_weight": self.reg_weight,
            "trained_net": self.net_state is not None,
            "trained_net_fraction": self.trained_net_fraction,
        }


def check_segment_support(distiller: Distiller) -> None:
    """Raise ConfigError unless ``distiller`` implements ``distill(..., segment=...)``."""
    if not getattr(distiller, "supports_segments", False):
        able = [n for n in METHODS.names() if getattr(METHODS.get(n), "supports_segments", False)]
        raise ConfigError(
            f"method {distiller.name} cannot distil sequential segments; use one of: "
            f"{', '.join(able) or '(none)'}"
        )


class Checkpointer:
    """Atomic periodic checkpoints of a step loop's state (a dict of tensors and numbers)."""

    def __init__(self, path: Path | None, every: int) -> None:
        self.path, self.every = path, max(int(every), 1)

    def due(self, step: int, total: int) -> bool:
        """Whether to checkpoint after ``step`` (1-based) of ``total``: every ``every`` steps
        and after the last."""
        return self.path is not None and (step % self.every == 0 or step == total)

    def save(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` with ``torch.save`` atomically (a no-op without a path)."""
        if self.path is None:
            return
        buf = io.BytesIO()
        torch.save(dict(state), buf)
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(buf.getvalue())

    def load(self, fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
        """The saved state, if any; ArtifactError when it is corrupt or from another run."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ArtifactError(
                f"checkpoint {self.path} is unreadable ({e.__class__.__name__}); delete it to "
                "start over, or run without --resume"
            ) from None
        if not isinstance(state, dict) or state.get("fingerprint") != dict(fingerprint):
            raise ArtifactError(
                f"checkpoint {self.path} belongs to another run (method, dataset, IPC, seed or "
                "config differ); use another --out folder or run without --resume"
            )
        return state

    def restore(self, fingerprint: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                optimizer: torch.optim.Optimizer,
                generator: torch.Generator) -> dict[str, Any] | None:
        """Resume a run: load the saved state (as :meth:`load`) and copy it into the live
        objects: each of ``tensors`` in place (by its key in the state), the optimiser's and the
        generator's states. Returns the saved dict (``step``, ``wall`` and the method's own
        entries) or None when there is nothing to resume (the objects are then untouched)."""
        saved = self.load(fingerprint)
        if saved is None:
            return None
        with torch.no_grad():
            for key, t in tensors.items():
                t.copy_(saved[key].to(t.device))
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        return saved

    @staticmethod
    def snapshot(fingerprint: Mapping[str, Any], step: int, tensors: Mapping[str, torch.Tensor],
                 optimizer: torch.optim.Optimizer, generator: torch.Generator, wall: float,
                 **extra: Any) -> dict[str, Any]:
        """The state :meth:`restore` reads: ``tensors`` (detached, on the CPU), the optimiser's
        and generator's states, the 1-based ``step`` done, ``wall`` seconds so far, and
        ``extra`` entries of the method's own."""
        return {"fingerprint": dict(fingerprint), "step": step,
                **{k: t.detach().cpu() for k, t in tensors.items()},
                "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                "wall": wall, **extra}


def step_loop(
    total: int,
    start: int,
    step_fn: Callable[[int], float],
    *,
    desc: str,
    progress: bool,
    checkpointer: Checkpointer,
    state_fn: Callable[[int], Mapping[str, Any]],
    callbacks: tuple[StepCallback, ...],
    synset_fn: Callable[[], SyntheticSet],
) -> None:
    """Run ``step_fn(step)`` for steps ``start+1 .. total`` (1-based), with a progress bar showing
    the loss, checkpoints via ``state_fn(step)``, and callbacks."""
    bar = tqdm(total=total, initial=start, desc=desc, disable=not progress, dynamic_ncols=True,
               mininterval=1.0)
    try:
        for step in range(start + 1, total + 1):
            loss = step_fn(step)
            if not torch.isfinite(torch.tensor(loss)):
                raise ArtifactError(
                    f"{desc}: the loss became {loss} at step {step}; lower the image learning rate"
                    " (--set lr_img=...)"
                )
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            bar.update(1)
            if checkpointer.due(step, total):
                checkpointer.save(state_fn(step))
            for cb in callbacks:
                cb(step, synset_fn)
    finally:
        bar.close()
