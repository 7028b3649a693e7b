"""Crucial-sample selection + Infinite Semantic Augmentation (ISA): "Dataset Distillation via the
Importance of Crucial Samples and Infinite Semantic Augmentation" (the paper in
``shared/papers/ISA-crucial-samples-infinite-semantic-augmentation.txt``), built on FRePo.

Per meta-step (the paper's Algorithm 1):

1. the per-sample loss of every real sample of the batch (FRePo: its KRR loss, Eq. 4/5);
2. discard the easiest ``p`` of the batch (``discard_easy``, p = 0.2 in the paper), i.e. keep the
   hardest ``n - floor(p n)``; ``drop: hardest`` (or a negative ``discard_easy``) drops the hardest
   instead, the ablation of the paper's Figure 1;
3. for each kept sample ``x`` its partner ``x'`` is its nearest neighbour by cosine similarity of
   the features among the kept batch (not itself);
4. the loss of ``x`` is the average over ``alpha in [0, eps]`` of the squared residual of the
   virtual sample ``z + alpha (z' - z)`` with label ``y + alpha (y' - y)`` (Eq. 6, the paper's
   ``delta_1 = z' - z``, ``delta_2 = y' - y``: interpolation towards the partner), in closed form
   (Eq. 7)::

       A = z W - y,   B = (z' - z) W - (y' - y),   loss = A^2 + eps A.B + eps^2 / 3 B^2

   summed over classes with FRePo's factor 0.5 and averaged over the kept samples, so that
   ``eps = 0`` and ``p = 0`` give FRePo's loss exactly. Because the prediction is linear in the
   features, ``B = A[partner] - A``: ISA costs a gather and a cosine-similarity matrix of the kept
   batch (``eps = 0`` disables it).

The label-margin term of FRePo stays as it is (it is added by the method, outside the hook).

The strategy is a hook (:class:`CrucialSamplePolicy`) that it sets as the distiller's
``sample_policy`` for the duration of the run; methods call it in their per-step objective:

* ``regression_loss(residual, features)`` (FRePo): per-sample KRR residuals ``A`` (n, K), with
  gradient, and the real batch's features (n, D), constant;
* ``matching_loss(emb_real, emb_syn, num_classes)`` (DM, the feature-space version): each real
  embedding's hardness is its squared distance to its class's mean synthetic embedding; per class
  the easiest ``p`` are discarded, partners are chosen within the class, and the class mean of the
  kept real embeddings is matched with ISA averaged over alpha in closed form:
  ``A_c = mean(z) - mean(s)``, ``B_c = mean(z' - z)``, loss = ``sum_c ||A_c||^2 + eps A_c.B_c +
  eps^2/3 ||B_c||^2`` (``eps = 0``, ``p = 0``: DM's loss exactly).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from datadistill.data import RealDataset
from datadistill.errors import ConfigError
from datadistill.strategies import STRATEGIES, Strategy
from datadistill.synthetic import SyntheticSet

DROPS = ("easiest", "hardest")


def isa_closed_form(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """``(1/eps) int_0^eps (a + alpha b)^2 d alpha = a^2 + eps a b + eps^2/3 b^2`` elementwise
    (``a^2`` at ``eps = 0``)."""
    return a * a + eps * a * b + (eps * eps / 3.0) * b * b


def keep_indices(losses: Tensor, discard: float, drop: str = "easiest") -> Tensor:
    """Indices (sorted ascending) of the samples kept after dropping ``floor(discard * n)`` of
    the ``n`` samples: the smallest losses (``drop="easiest"``) or the largest (``"hardest"``).

    ``losses`` (n,) or (G, n) (then per row: (G, n_keep)).
    """
    n = losses.shape[-1]
    n_drop = int(math.floor(discard * n + 1e-9))
    n_keep = max(n - n_drop, 1)
    if n_keep == n:
        idx = torch.arange(n, device=losses.device)
        return idx if losses.dim() == 1 else idx.expand(losses.shape[0], n)
    idx = losses.topk(n_keep, dim=-1, largest=(drop == "easiest")).indices
    return idx.sort(dim=-1).values


def cosine_partners(feats: Tensor) -> Tensor:
    """For each row of ``feats`` (n, D) or (G, n, D), the index of its nearest neighbour by cosine
    similarity among the other rows (of its group). Needs n >= 2."""
    f = F.normalize(feats.float(), dim=-1)
    sim = f @ f.transpose(-1, -2)
    eye = torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device)
    return sim.masked_fill(eye, float("-inf")).argmax(-1)


class CrucialSamplePolicy:
    """The per-step hook of the ``isa`` strategy (see the module docstring).

    Args:
        discard: fraction of the batch dropped, in [0, 1).
        drop: ``"easiest"`` (the paper's method) or ``"hardest"`` (its Figure-1 ablation).
        eps: ISA range epsilon >= 0 (0 disables ISA; the paper uses 1.0).
    """

    def __init__(self, discard: float = 0.2, drop: str = "easiest", eps: float = 1.0) -> None:
        if not 0.0 <= discard < 1.0:
            raise ConfigError(f"isa: the discarded fraction must lie in [0, 1), got {discard}")
        if drop not in DROPS:
            raise ConfigError(f"isa: drop must be one of {', '.join(DROPS)}, got {drop!r}")
        if not (eps >= 0.0 and math.isfinite(eps)):
            raise ConfigError(f"isa: isa_eps must be a finite number >= 0, got {eps}")
        self.discard, self.drop, self.eps = float(discard), drop, float(eps)

    def __repr__(self) -> str:
        return f"CrucialSamplePolicy(discard={self.discard}, drop={self.drop!r}, eps={self.eps})"

    # ------------------------------------------------------------------ FRePo (regression)
    def regression_loss(self, residual: Tensor, features: Tensor) -> Tensor:
        """Loss of a kernel-regression step from the real batch's residuals ``A`` (n, K), which
        carry the gradient, and its features (n, D), constant (ranking and partners only)."""
        per_sample = 0.5 * residual.detach().pow(2).sum(1)
        keep = keep_indices(per_sample, self.discard, self.drop)
        a = residual[keep]
        if self.eps == 0.0 or keep.numel() < 2:
            return 0.5 * a.pow(2).sum(1).mean()
        b = a[cosine_partners(features[keep])] - a  # linear predictor: B = A[partner] - A
        return 0.5 * isa_closed_form(a, b, self.eps).sum(1).mean()

    # ------------------------------------------------------------------ DM (matching)
    def matching_loss(self, emb_real: Tensor, emb_syn: Tensor, num_classes: int) -> Tensor:
        """DM's loss with per-class selection and ISA on the real embeddings.

        ``emb_real`` (K*n, D) class-major, constant; ``emb_syn`` (K*ipc, D) class-major.
        """
        d = emb_real.shape[1]
        real = emb_real.view(num_classes, -1, d)
        mean_syn = emb_syn.view(num_classes, -1, d).mean(1)
        hardness = (real.detach() - mean_syn.detach()[:, None, :]).pow(2).sum(2)  # (K, n)
        keep = keep_indices(hardness, self.discard, self.drop)  # (K, n_keep)
        kept = real.gather(1, keep[:, :, None].expand(-1, -1, d))  # (K, n_keep, D)
        a = kept.mean(1) - mean_syn
        if self.eps == 0.0 or keep.shape[1] < 2:
            return a.pow(2).sum()
        partner = cosine_partners(kept)  # (K, n_keep), within each class
        b = (kept.gather(1, partner[:, :, None].expand(-1, -1, d)) - kept).mean(1)
        return isa_closed_form(a, b, self.eps).sum()


@STRATEGIES.register("isa", help="crucial-sample selection + infinite semantic augmentation "
                                 "(wraps frepo, dm)")
class ISA(Strategy):
    """Crucial-sample selection + ISA around a method that supports a ``sample_policy``.

    Options: ``discard_easy`` (default 0.2: fraction of the easiest real samples dropped per step;
    a negative value drops that fraction of the hardest instead), ``drop`` (``easiest`` or
    ``hardest``), ``isa_eps`` (default 1.0; 0 disables ISA).
    """

    name = "isa"
    defaults = {"discard_easy": 0.2, "drop": "easiest", "isa_eps": 1.0}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        try:
            discard = float(self.options["discard_easy"])
            eps = float(self.options["isa_eps"])
        except (TypeError, ValueError):
            raise ConfigError("isa: discard_easy and isa_eps must be numbers") from None
        drop = str(self.options["drop"])
        if discard < 0:
            discard, drop = -discard, "hardest"
        self.policy = CrucialSamplePolicy(discard, drop, eps)
        self.options = {"discard_easy": self.policy.discard, "drop": self.policy.drop,
                        "isa_eps": self.policy.eps}

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
        callbacks: tuple[Callable, ...] = (),
    ) -> SyntheticSet:
        """Run ``distiller`` with this strategy's :class:`CrucialSamplePolicy` as its
        ``sample_policy`` (``callbacks`` are passed to its ``distill``)."""
        if not getattr(distiller, "supports_sample_policy", False):
            from datadistill.methods import METHODS

            able = [n for n in METHODS.names()
                    if getattr(METHODS.get(n), "supports_sample_policy", False)]
            raise ConfigError(f"strategy isa needs a method with a per-sample objective; "
                              f"{distiller.name} has none. Valid: {', '.join(able)}")
        record = {"name": self.name, **self.options}
        old_policy, old_config = distiller.sample_policy, distiller.config
        distiller.sample_policy = self.policy
        # recorded in the config: in the artifact's metadata, and in the checkpoint fingerprint
        # (a run with the strategy never resumes from one without it, or vice versa)
        distiller.config = {**old_config, "strategy": record}
        try:
            synset = distiller.distill(real, ipc, seed=seed, device=device, checkpoint=checkpoint,
                                       resume=resume, progress=progress, callbacks=callbacks)
        finally:
            distiller.sample_policy, distiller.config = old_policy, old_config
        synset.meta["strategy"] = record
        return synset
