"""Sequential difficulty-aligned segments (the ADS / EDD / DASM drafts in ``papers/``; their method
sections are missing, the design below follows their introductions and REFERENCE.md).

The synthetic set is built in K segments. Segment 1 matches the whole real set. After segment k
a *probe* network is trained on all segments so far (the protocol ``probe_protocol``, ``dsa``
for every base method, IDC's included, shortened to ``probe_epochs``) and classifies the real
training set; in every class a fraction
``drop_fraction`` of the correctly classified images still in the pool is dropped, easiest
(lowest cross-entropy) first, so segment k+1 matches mainly what the earlier segments have not
captured. Earlier segments stay frozen; a regulariser (weight ``reg_weight``) matches the whole
synthetic set so far to the dropped (easy) real images, against "forgetting": real training
images that the probe trained before segment k classified correctly and the probe trained after
segment k classifies wrongly (EDD, section 1). Counted for every segment after the first.

Decisions the drafts leave open (documented here and in the returned ``meta``):

* Dropping is per class (each class keeps at least ``min_pool`` images, default
  ``max(10, 2 * largest segment IPC)``), so class-balanced matching stays possible. Nothing is
  dropped after the last segment; its probe only counts forgetting. The regulariser's pool is
  every image dropped so far (the real set minus the current pool).
* Compute: the base method's ``steps`` are split over the segments (segment k gets
  ``steps // K``, the first ``steps % K`` one more), so the number of image-update steps equals
  the base method's; the regulariser's extra forward pass and the probe trainings are extra.
  ``segment_steps`` overrides this with a fixed number per segment. With IDC at Fashion-MNIST
  IPC 10 the split cost about 2 points, while the base's full steps in each of 2 segments
  (``--steps 60``) beat IDC alone at about equal compute, on the test set and on a validation
  split, a gain that comes from the filtering (the rows and their commands: BENCHMARKS.md,
  "Sequential segments vs the base method" and "Preset tuning").
* ``reg_weight`` defaults to 1, the better of 0.1 / 1 on a validation split at the default
  number of segments (DM, Fashion-MNIST IPC 50, 5 segments: 86.84 vs 86.38 %, 2 networks each;
  BENCHMARKS.md). The best weight depends on the number of segments: with 2 segments (DM, IPC
  10) 0 / 0.1 / 0.3 / 1 gave 80.9 / 81.2 / 80.9 / 79.7 % there, so ``reg_weight=0.1`` is the
  choice for two segments. Larger weights forget fewer real images but match the new
  segment's pool less.
* ``init_from_trained``: matching networks start from the probe trained on the earlier
  segments in a fraction ``trained_net_fraction`` of the steps (DM otherwise samples a fresh
  random network per step; DM's matching relies on that randomness, so we mix, default half).
  Off by default (set before any measurement); the Fashion-MNIST test-set rows since then
  found it costs DM 1.0 (IPC 10) and 0.7 (IPC 50) points and IDC 1.6 (IPC 10) against fresh
  networks (BENCHMARKS.md).
* The returned set is class-major (each class: segment 1's images, then segment 2's, ...);
  ``meta["segment"]`` gives each stored image's 0-based segment index and
  ``meta["sequential"]["segments"]`` per segment: IPC, steps, pool size (total and per class),
  a hash of the pool, regulariser pool size, probe accuracy on the real training set,
  forgotten / newly learned counts, dropped count, wall seconds.
* Checkpoints: the state after every finished segment is written atomically to ``checkpoint``;
  each running segment checkpoints to ``<checkpoint stem>.segment<k>.pt`` (removed once it
  finishes); ``resume`` continues from both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from datadistill.augment import default_strategy
from datadistill.data import RealDataset
from datadistill.errors import ConfigError
from datadistill.evaluate.protocols import get_protocol
from datadistill.evaluate.train import autocast, train_network
from datadistill.methods.base import (
    Checkpointer,
    SegmentContext,
    check_ipc,
    check_segment_support,
)
from datadistill.strategies import STRATEGIES, Strategy
from datadistill.synthetic import SyntheticSet
from datadistill.utils import resolve_device

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- pure rules
def segment_plan(ipc: int, segments: int | None, segment_ipc: int | None) -> list[int]:
    """IPC of each segment, summing to ``ipc``.

    ``segments=K``: ``ipc // K`` each, the first ``ipc % K`` segments one more;
    ``segment_ipc=s``: ``ceil(ipc / s)`` segments of ``s``, the last one takes the remainder.
    Neither: 5 segments (fewer when ``ipc < 5``). Both must agree when both are given.

    Raises:
        ConfigError: K or s < 1, K > ipc (a segment would be empty), or disagreeing options.
    """
    if (segments is not None and segment_ipc is not None
            and segment_plan(ipc, None, segment_ipc) != segment_plan(ipc, segments, None)):
        raise ConfigError(f"--segments {segments} and --segment-ipc {segment_ipc} disagree for "
                              f"IPC {ipc}; give only one of them")
    if segment_ipc is not None:
        if segment_ipc < 1:
            raise ConfigError(f"segment_ipc must be >= 1, got {segment_ipc}")
        s = min(segment_ipc, ipc)
        plan = [s] * (ipc // s)
        return plan + ([ipc % s] if ipc % s else [])
    k = min(5, ipc) if segments is None else segments
    if not 1 <= k <= ipc:
        raise ConfigError(f"segments must lie in [1, IPC={ipc}] (each segment needs an image per "
                          f"class), got {k}")
    return [ipc // k + (1 if i < ipc % k else 0) for i in range(k)]


def split_steps(steps: int, k: int) -> list[int]:
    """``steps`` split over ``k`` segments: ``steps // k`` each, the first ``steps % k`` one more.

    Raises ConfigError when ``steps < k`` (a segment would get no step)."""
    if steps < k:
        raise ConfigError(f"{steps} steps cannot be split over {k} segments; raise --steps to at "
                          f"least {k} or set segment_steps")
    return [steps // k + (1 if i < steps % k else 0) for i in range(k)]


def select_dropped(loss: Tensor, correct: Tensor, labels: Tensor, in_pool: Tensor, fraction: float,
                   num_classes: int, min_keep: int = 0) -> Tensor:
    """The filtering rule: which real images leave the pool after a segment.

    In every class c, of the images still in the pool that the probe classifies correctly,
    ``floor(fraction * count)`` with the LOWEST loss are dropped (ties: lower index first), but
    never so many that fewer than ``min_keep`` images of class c stay in the pool.

    Args:
        loss: (N,) float per-image cross-entropy of the probe network.
        correct: (N,) bool, probe prediction == label.
        labels: (N,) int64 in [0, num_classes).
        in_pool: (N,) bool, the current pool.
        fraction: in [0, 1].
        min_keep: images each class keeps at least (>= 0).

    Returns:
        (N,) bool mask of the images to drop (a subset of ``in_pool & correct``).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"drop_fraction must lie in [0, 1], got {fraction}")
    n = loss.shape[0]
    if not (correct.shape == labels.shape == in_pool.shape == (n,)):
        raise ConfigError("loss, correct, labels and in_pool must all be (N,) tensors")
    drop = torch.zeros(n, dtype=torch.bool, device=loss.device)
    for c in range(num_classes):
        of_c = in_pool & (labels == c)
        cand = (of_c & correct).nonzero().squeeze(1)
        count = min(int(fraction * cand.numel() + 1e-9), int(of_c.sum()) - min_keep)
        if count <= 0:
            continue
        order = torch.sort(loss[cand], stable=True).indices[:count]
        drop[cand[order]] = True
    return drop


def count_forgetting(correct_before: Tensor, correct_after: Tensor) -> int:
    """Forgetting: images classified correctly before a segment was added and wrongly after.

    Args: two (N,) bool tensors over the same real images. Returns an int in [0, N]."""
    if correct_before.shape != correct_after.shape:
        raise ConfigError("forgetting needs predictions on the same images before and after")
    return int((correct_before & ~correct_after).sum())


@torch.no_grad()
def probe_predictions(net: torch.nn.Module, real: RealDataset, *, precision: str = "auto",
                      batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Per-image cross-entropy (N,) float32 and correctness (N,) bool of ``net`` on ``real``
    (eval mode, no augmentation), on the CPU."""
    net.eval()
    device = next(net.parameters()).device
    losses, correct = [], []
    for i in range(0, len(real), batch_size):
        x = real.images[i : i + batch_size].to(device)
        y = real.labels[i : i + batch_size].to(device)
        with autocast(device, precision):
            out = net(x)
        out = out.float()
        losses.append(F.cross_entropy(out, y, reduction="none").cpu())
        correct.append((out.argmax(1) == y).cpu())
    return torch.cat(losses), torch.cat(correct)


def _pool_hash(mask: Tensor) -> str:
    return hashlib.sha1(mask.nonzero().squeeze(1).numpy().tobytes()).hexdigest()[:12]


# ---------------------------------------------------------------------------- strategy
def _opt(options: dict[str, Any], key: str, kind: type, lo: float | None = None,
         hi: float | None = None, optional: bool = False) -> Any:
    v = options[key]
    if v is None and optional:
        return None
    ok = isinstance(v, kind) and not (kind is not bool and isinstance(v, bool))
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if ok and kind in (int, float) and ((lo is not None and v < lo) or (hi is not None and v > hi)
                                        or (kind is float and not math.isfinite(v))):
        ok = False
    if not ok:
        rng = f" in [{lo}, {hi if hi is not None else 'inf'}]" if lo is not None else ""
        raise ConfigError(f"strategy sequential: {key}={options[key]!r} is invalid; expected a "
                          f"{kind.__name__}{rng}")
    return v


@STRATEGIES.register("sequential", help="sequential difficulty-aligned segments (ADS/EDD/DASM)")
class Sequential(Strategy):
    """Sequential difficulty-aligned segments; see the module docstring for the rules."""

    name = "sequential"
    defaults = {
        "segments": None,            # K; default 5 (or IPC when smaller)
        "segment_ipc": None,         # IPC per segment, instead of segments
        "drop_fraction": 0.5,        # of the correctly classified pool images, per class
        # anti-forgetting regulariser; 0 switches it off. Validated at K = 5; 0.1 for K = 2
        # (module docstring).
        "reg_weight": 1.0,
        "init_from_trained": False,  # matching networks start from the probe network
        "trained_net_fraction": 0.5,  # ... in this fraction of the steps
        "probe_epochs": 300,         # the probe: evaluation protocol with this many epochs
        "probe_protocol": "dsa",
        "probe_precision": "auto",
        "min_pool": None,            # images kept per class; default max(10, 2 * segment IPC)
        "segment_steps": None,       # fixed steps per segment instead of steps / K
    }

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        o = self.options
        _opt(o, "segments", int, 1, optional=True)
        _opt(o, "segment_ipc", int, 1, optional=True)
        o["drop_fraction"] = _opt(o, "drop_fraction", float, 0.0, 1.0)
        o["reg_weight"] = _opt(o, "reg_weight", float, 0.0)
        _opt(o, "init_from_trained", bool)
        o["trained_net_fraction"] = _opt(o, "trained_net_fraction", float, 0.0, 1.0)
        _opt(o, "probe_epochs", int, 1)
        get_protocol(_opt(o, "probe_protocol", str))
        if o["probe_precision"] not in ("auto", "bf16", "fp32"):
            raise ConfigError("strategy sequential: probe_precision must be auto, bf16 or fp32")
        _opt(o, "min_pool", int, 0, optional=True)
        _opt(o, "segment_steps", int, 1, optional=True)

    def check(self, distiller: Any) -> None:
        """ConfigError unless ``distiller`` supports segments (``supports_segments``)."""
        check_segment_support(distiller)

    def run(
        self,
        distiller: Any,
        real: RealDataset,
        ipc: int,
        *,
        seed: int = 0,
        device: torch.device | None = None,
        checkpoint: Path | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> SyntheticSet:
        """Distil ``real`` into ``ipc`` images per class in segments with ``distiller``.

        Raises:
            ConfigError: a method without segment support, bad IPC or segment options, too
                few steps for the segments.
        """
        o = self.options
        check_segment_support(distiller)
        check_ipc(real, ipc)
        plan = segment_plan(ipc, o["segments"], o["segment_ipc"])
        k_total = len(plan)
        steps = ([o["segment_steps"]] * k_total if o["segment_steps"] is not None
                 else split_steps(int(distiller.cfg("steps")), k_total))
        min_keep = o["min_pool"] if o["min_pool"] is not None else max(10, 2 * max(plan))
        if min_keep < max(plan):
            raise ConfigError(f"min_pool {min_keep} is below the segment IPC {max(plan)}; every "
                              "class of the pool must hold a segment's images")
        device = resolve_device(device)
        net_name = str(distiller.config.get("net", "convnet"))
        protocol = get_protocol(o["probe_protocol"]).with_(epochs=int(o["probe_epochs"]))
        n, k_cls = len(real), real.num_classes

        ckpt = Checkpointer(checkpoint, 1)
        fingerprint = {"strategy": self.name, "options": repr(sorted(o.items())),
                       "method": distiller.name, "config": repr(sorted(distiller.config.items())),
                       "dataset": real.checksum(), "ipc": ipc, "seed": seed}
        st: dict[str, Any] = {"done": 0, "images": [], "labels": [], "initial": [], "decoded_x": [],
                              "decoded_y": [], "pool": torch.ones(n, dtype=torch.bool),
                              "correct": None, "net_state": None, "records": "[]", "wall": 0.0,
                              "param": None}
        saved = ckpt.load(fingerprint) if resume else None
        if saved is not None:
            st.update({k: v for k, v in saved.items() if k != "fingerprint"})
            log.info("sequential: resuming after %d finished segment(s)", st["done"])
        records: list[dict[str, Any]] = json.loads(st["records"])
        t_start = time.perf_counter() - float(st["wall"])

        for k in range(int(st["done"]), k_total):
            t0 = time.perf_counter()
            pool_mask: Tensor = st["pool"]
            pool = real.subset(pool_mask.nonzero().squeeze(1))
            reg_pool = real.subset((~pool_mask).nonzero().squeeze(1)) if not pool_mask.all() else None
            frozen_x = (torch.cat(st["decoded_x"]) if st["decoded_x"]
                        else real.images.new_zeros((0, *real.image_shape)).cpu())
            frozen_y = torch.cat(st["decoded_y"]) if st["decoded_y"] else torch.zeros(0, dtype=torch.long)
            ctx = SegmentContext(
                index=k, frozen_images=frozen_x, frozen_labels=frozen_y, reg_pool=reg_pool,
                reg_weight=float(o["reg_weight"]),
                net_state=st["net_state"] if o["init_from_trained"] else None,
                trained_net_fraction=float(o["trained_net_fraction"]))
            seg_distiller = type(distiller)({**distiller.config, "steps": steps[k]})
            seg_ckpt = (None if checkpoint is None else
                        checkpoint.with_name(f"{checkpoint.stem}.segment{k}{checkpoint.suffix}"))
            log.info("sequential: segment %d/%d, IPC %d, %d steps, pool %d real images", k + 1,
                     k_total, plan[k], steps[k], len(pool))
            syn = seg_distiller.distill(pool, plan[k], seed=seed + 7919 * k, device=device,
                                        checkpoint=seg_ckpt, resume=resume, progress=progress,
                                        segment=ctx)
            param = (syn.parameterization, syn.factor)
            if st["param"] is not None and tuple(st["param"]) != param:
                raise ConfigError("segments came back in different parameterisations")
            dx, dy = syn.decode()
            st["images"].append(syn.images)
            st["labels"].append(syn.labels)
            st["initial"].append(syn.initial)  # None for a method that keeps no initial images
            st["decoded_x"].append(dx)
            st["decoded_y"].append(dy)
            st["param"] = list(param)

            # The probe: a network trained on all segments so far classifies the real set.
            all_x, all_y = torch.cat(st["decoded_x"]), torch.cat(st["decoded_y"])
            batches = -(-all_x.shape[0] // protocol.batch_size)
            probe = train_network(net_name, all_x, all_y, k_cls, protocol, seed=seed + 104729 + k,
                                  dsa_strategy=default_strategy(real.name), device=device,
                                  precision=o["probe_precision"],
                                  compile=protocol.epochs * batches >= 2000)
            loss, correct = probe_predictions(probe, real, precision=o["probe_precision"])
            prev = st["correct"]
            forgotten = None if prev is None else count_forgetting(prev, correct)
            learned = None if prev is None else int((~prev & correct).sum())
            drop = (select_dropped(loss, correct, real.labels.cpu(), pool_mask, o["drop_fraction"],
                                   k_cls, min_keep)
                    if k + 1 < k_total else torch.zeros(n, dtype=torch.bool))
            records.append({
                "index": k, "ipc": plan[k], "steps": steps[k], "pool_size": int(pool_mask.sum()),
                "pool_per_class": torch.bincount(real.labels.cpu()[pool_mask],
                                                 minlength=k_cls).tolist(),
                "pool_hash": _pool_hash(pool_mask),
                "reg_pool_size": 0 if reg_pool is None else len(reg_pool),
                "probe_train_accuracy": round(100.0 * float(correct.float().mean()), 3),
                "forgotten": forgotten, "learned": learned, "dropped": int(drop.sum()),
                "seconds": round(time.perf_counter() - t0, 2),
            })
            log.info("sequential: segment %d done: probe %.2f%% on the real training set, "
                     "forgotten %s, dropped %d", k + 1, records[-1]["probe_train_accuracy"],
                     forgotten, int(drop.sum()))
            st.update(done=k + 1, pool=pool_mask & ~drop, correct=correct,
                      net_state={n_: v.detach().cpu() for n_, v in probe.state_dict().items()},
                      records=json.dumps(records), wall=time.perf_counter() - t_start)
            ckpt.save({"fingerprint": fingerprint, **st})
            if seg_ckpt is not None:
                seg_ckpt.unlink(missing_ok=True)

        return self._assemble(distiller, real, ipc, seed, st, records,
                              time.perf_counter() - t_start)

    def _assemble(self, distiller: Any, real: RealDataset, ipc: int, seed: int, st: dict[str, Any],
                  records: list[dict[str, Any]], wall: float) -> SyntheticSet:
        """Concatenate the segments class-major (within a class, segment order). Compact
        parameterisations (idc's multi-formation) concatenate the STORED images; the result
        decodes on use like a single run's set (decoding is per stored image)."""
        images, labels = torch.cat(st["images"]), torch.cat(st["labels"])
        # the initial images only when every segment has them (else a copy of the result would
        # pretend a zero update signal)
        initial = (None if any(x is None for x in st["initial"]) else torch.cat(st["initial"]))
        seg = torch.cat([torch.full((len(x),), i, dtype=torch.long)
                         for i, x in enumerate(st["images"])])
        hard = labels.argmax(1) if labels.dim() == 2 else labels
        order = torch.argsort(hard, stable=True)
        parameterization, factor = st["param"]
        extra = {
            "strategy": {"name": self.name, "options": self.options},
            "segment": seg[order].tolist(),
            "sequential": {"segments": records, "num_segments": len(records),
                           "step_budget": "base steps split over the segments"
                           if self.options["segment_steps"] is None else "segment_steps each"},
        }
        return distiller.make_synset(images[order], labels[order], real, ipc, seed, wall,
                                     extra=extra, parameterization=parameterization,
                                     factor=int(factor),
                                     initial=None if initial is None else initial[order])


__all__ = ["Sequential", "count_forgetting", "probe_predictions", "segment_plan", "select_dropped",
           "split_steps"]
