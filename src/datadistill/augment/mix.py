"""CutMix and MixUp on batches with hard or soft labels.

Sources: Yun et al., "CutMix", ICCV 2019 (as used by IDC's evaluation: Beta(1, 1) area, applied
to a batch with probability p); Zhang et al., "mixup", ICLR 2018.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _one_hot(y: Tensor, num_classes: int) -> Tensor:
    return y.float() if y.dim() == 2 else F.one_hot(y, num_classes).float()


def _beta(alpha: float, generator: torch.Generator) -> float:
    # Beta(a, a) from two Gamma draws on the explicit generator (torch.distributions has none).
    g1 = torch._standard_gamma(torch.tensor([alpha]), generator=generator)
    g2 = torch._standard_gamma(torch.tensor([alpha]), generator=generator)
    return float(g1 / (g1 + g2))


def cutmix(
    x: Tensor, y: Tensor, num_classes: int, generator: torch.Generator, alpha: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Paste a random box from a shuffled copy of the batch into each image.

    Args:
        x: (N, C, H, W) images. y: (N,) int64 labels or (N, K) soft labels.
        generator: CPU generator; alpha: Beta(alpha, alpha) for the kept area fraction.
    Returns:
        mixed images (N, C, H, W) and soft targets (N, K) float32 mixed by the exact box area.
    """
    n, _, h, w = x.shape
    lam = _beta(alpha, generator)
    perm = torch.randperm(n, generator=generator).to(x.device)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(0, h, (1,), generator=generator))
    cx = int(torch.randint(0, w, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mask = torch.ones(1, 1, h, w, device=x.device, dtype=x.dtype)
    mask[..., y0:y1, x0:x1] = 0
    mixed = x * mask + x[perm] * (1 - mask)
    lam_exact = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    t = _one_hot(y, num_classes).to(x.device)
    return mixed, lam_exact * t + (1 - lam_exact) * t[perm]


def mixup(
    x: Tensor, y: Tensor, num_classes: int, generator: torch.Generator, alpha: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Convex combination of the batch with a shuffled copy; returns images and soft targets."""
    lam = _beta(alpha, generator)
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    t = _one_hot(y, num_classes).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]
