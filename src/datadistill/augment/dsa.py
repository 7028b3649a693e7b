"""Differentiable Siamese Augmentation (DSA).

Source: Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021,
and the behaviour of its original code (``DiffAugment`` with ``ParamDiffAug`` in mode ``'S'``):
each call picks ONE op group uniformly from the strategy (``color`` applies brightness, saturation
and contrast in turn) and applies it with random parameters. Every op is differentiable w.r.t. the
images, so gradients reach synthetic images through the augmentation.

Three ways of drawing parameters:

* per-sample (training networks): one op group for the whole batch, parameters per sample;
* siamese (matching): one draw shared by every sample of the real and the synthetic batch;
* grouped (batched matching over classes): an op group and a draw per group (class), shared by the
  real and synthetic samples of that group. This is the siamese mode of the original per-class loop
  done for all classes in one call.

All randomness comes from an explicit CPU ``torch.Generator`` (so results do not depend on the
device); parameters are then moved to the images' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from datadistill.errors import ConfigError

#: Op groups of the original code; ``color`` is brightness -> saturation -> contrast.
OP_GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
#: Digit datasets, on which horizontal flips are not used (the DSA code's README: the full strategy
#: "for FashionMNIST, CIFAR10/100", no flip "for the digit datasets (MNIST and SVHN)").
NO_FLIP_DATASETS = ("mnist", "digits", "svhn")


def default_strategy(dataset: str | None) -> str:
    """The field's DSA strategy for ``dataset``: the default, without ``flip`` for digit data."""
    if dataset is not None and dataset.lower() in NO_FLIP_DATASETS:
        return DEFAULT_STRATEGY.replace("_flip", "")
    return DEFAULT_STRATEGY


@dataclass
class DSAParams:
    """One parameter draw per sample (all tensors have leading dimension N).

    ``op`` (N,) int64 indexes :attr:`DSA.ops`; scale (N, 2) float32 in [1/1.2, 1.2];
    rotate (N,) radians, |angle| <= 15 degrees; flip (N,) bool; brightness, saturation, contrast (N,)
    float32 uniform in [0, 1) (mapped by the op); crop (N, 2) int64 shifts in [-s, s];
    cutout (N, 2) int64 centres.
    """

    op: Tensor
    scale: Tensor
    rotate: Tensor
    flip: Tensor
    brightness: Tensor
    saturation: Tensor
    contrast: Tensor
    crop: Tensor
    cutout: Tensor

    def __len__(self) -> int:
        return self.op.shape[0]

    def expand(self, index: Tensor) -> DSAParams:
        """Parameters for samples whose draw is ``index`` (N',) int64: ``out[i] = self[index[i]]``."""
        index = index.to(self.op.device)
        return DSAParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> DSAParams:
        """The same draw with every tensor on ``device``."""
        return DSAParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


class DSA:
    """Differentiable siamese augmentation with the original code's ranges.

    Args:
        strategy: op groups joined by ``_`` (subset of :data:`OP_GROUPS`), or ``"none"``.
        scale: scale factors in [1/scale, scale] (both axes independently).
        rotate: rotation angle in [-rotate, rotate] degrees.
        crop: translation of up to ``round(crop * H)`` pixels; uncovered pixels become 0.
        cutout: a square of side ``round(cutout * H)`` set to 0.
        brightness: adds ``(u - 0.5) * brightness``.
        saturation: ``(x - channel mean) * u * saturation + channel mean``.
        contrast: ``(x - image mean) * (u + contrast) + image mean``.

    Raises:
        ConfigError: an unknown op group in ``strategy``.
    """

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        *,
        scale: float = 1.2,
        rotate: float = 15.0,
        crop: float = 0.125,
        cutout: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
    ) -> None:
        ops = () if strategy.lower() in ("", "none") else tuple(strategy.split("_"))
        bad = [o for o in ops if o not in OP_GROUPS]
        if bad:
            raise ConfigError(
                f"unknown DSA op(s) {bad} in strategy {strategy!r}; valid ops: {', '.join(OP_GROUPS)}"
            )
        self.strategy = strategy
        self.ops = ops
        self.scale, self.rotate, self.crop, self.cutout = scale, rotate, crop, cutout
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast

    def __repr__(self) -> str:
        return f"DSA({self.strategy!r})"

    # ------------------------------------------------------------------ drawing parameters
    def draw(
        self,
        n: int,
        im_size: tuple[int, int],
        generator: torch.Generator,
        *,
        one_op: bool = True,
    ) -> DSAParams:
        """Draw ``n`` parameter sets on the CPU generator.

        Args:
            n: number of draws.
            im_size: (H, W) of the images the draws will be applied to.
            generator: CPU generator (the only source of randomness).
            one_op: one op group for all ``n`` draws (the original per-call behaviour) rather than
                one per draw.
        """
        h, w = im_size
        g = generator
        k = max(len(self.ops), 1)
        if one_op:
            op = torch.randint(0, k, (1,), generator=g).expand(n).clone()
        else:
            op = torch.randint(0, k, (n,), generator=g)
        lo = 1.0 / self.scale
        scale = torch.rand(n, 2, generator=g) * (self.scale - lo) + lo
        rotate = (torch.rand(n, generator=g) - 0.5) * 2 * self.rotate / 180 * math.pi
        flip = torch.rand(n, generator=g) < 0.5
        brightness = torch.rand(n, generator=g)
        saturation = torch.rand(n, generator=g)
        contrast = torch.rand(n, generator=g)
        sh, sw = int(h * self.crop + 0.5), int(w * self.crop + 0.5)
        crop = torch.stack(
            [
                torch.randint(-sh, sh + 1, (n,), generator=g),
                torch.randint(-sw, sw + 1, (n,), generator=g),
            ],
            1,
        )
        ch, cw = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        cutout = torch.stack(
            [
                torch.randint(0, h + (1 - ch % 2), (n,), generator=g),
                torch.randint(0, w + (1 - cw % 2), (n,), generator=g),
            ],
            1,
        )
        return DSAParams(op, scale, rotate, flip, brightness, saturation, contrast, crop, cutout)

    # ------------------------------------------------------------------ the three modes
    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Per-sample mode (network training): one op group, its own parameters per sample.

        Args:
            x: (N, C, H, W) float images (any value range; 0 is the fill value).
        Returns:
            (N, C, H, W) augmented images, differentiable w.r.t. ``x``.
        """
        if not self.ops:
            return x
        return self.apply(x, self.draw(x.shape[0], x.shape[-2:], generator))

    def siamese(self, *batches: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        """Siamese mode: ONE draw applied to every sample of every batch (e.g. real and synthetic
        images of one class), so both see the same transformation."""
        if not self.ops:
            return batches
        p = self.draw(1, batches[0].shape[-2:], generator)
        return tuple(self.apply(b, p.expand(torch.zeros(len(b), dtype=torch.long))) for b in batches)

    def grouped(
        self, batches: tuple[Tensor, ...], groups: tuple[Tensor, ...], num_groups: int,
        generator: torch.Generator,
    ) -> tuple[Tensor, ...]:
        """Grouped siamese mode: one op group and draw per group id, shared across ``batches``.

        ``groups[i]`` (N_i,) int64 in [0, num_groups) gives each sample of ``batches[i]`` its group
        (its class), so the real and synthetic images of class c share class c's draw while
        different classes get independent draws: the per-class siamese loop of DSA/DM in one call.
        """
        if not self.ops:
            return batches
        p = self.draw(num_groups, batches[0].shape[-2:], generator, one_op=False)
        return tuple(self.apply(b, p.expand(gr)) for b, gr in zip(batches, groups, strict=True))

    # ------------------------------------------------------------------ applying
    def apply(self, x: Tensor, params: DSAParams) -> Tensor:
        """Apply per-sample ``params`` (length N) to ``x`` (N, C, H, W)."""
        if not self.ops:
            return x
        if len(params) != x.shape[0]:
            raise ConfigError(f"DSA params for {len(params)} samples but the batch has {x.shape[0]}")
        params = params.to(x.device)
        ops_used = params.op.unique().tolist()
        if len(ops_used) == 1:
            return self._apply_op(self.ops[ops_used[0]], x, params)
        out = x
        for k in ops_used:
            idx = (params.op == k).nonzero().squeeze(1)
            sub = self._apply_op(self.ops[k], x[idx], params.expand(idx))
            out = out.index_put((idx,), sub)
        return out

    def _apply_op(self, op: str, x: Tensor, p: DSAParams) -> Tensor:
        if op == "color":
            x = x + (p.brightness - 0.5).view(-1, 1, 1, 1).to(x.dtype) * self.brightness
            m = x.mean(dim=1, keepdim=True)
            x = (x - m) * (p.saturation * self.saturation).view(-1, 1, 1, 1).to(x.dtype) + m
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - m) * (p.contrast + self.contrast).view(-1, 1, 1, 1).to(x.dtype) + m
        if op == "flip":
            return torch.where(p.flip.view(-1, 1, 1, 1), x.flip(3), x)
        if op == "scale":
            theta = torch.zeros(x.shape[0], 2, 3, device=x.device)
            theta[:, 0, 0], theta[:, 1, 1] = p.scale[:, 0], p.scale[:, 1]
            return _affine(x, theta)
        if op == "rotate":
            c, s = torch.cos(p.rotate), torch.sin(p.rotate)
            theta = torch.zeros(x.shape[0], 2, 3, device=x.device)
            # original rand_rotate: [[cos t, sin(-t)], [sin t, cos t]]
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
            return _affine(x, theta)
        if op == "crop":
            return _translate(x, p.crop)
        if op == "cutout":
            return _cutout(x, p.cutout, self.cutout)
        raise AssertionError(op)  # unreachable: validated in __init__


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _translate(x: Tensor, shift: Tensor) -> Tensor:
    """Integer translation per sample; pixels shifted in from outside are 0 (original ``rand_crop``)."""
    n, c, h, w = x.shape
    pad = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(h, device=x.device).view(1, h) + shift[:, :1] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + shift[:, 1:] + 1).clamp(0, w + 1)
    b = torch.arange(n, device=x.device).view(n, 1, 1)
    # (N, H+2, W+2, C) gathered at (b, rows, cols) -> (N, H, W, C)
    out = pad.permute(0, 2, 3, 1)[b, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2)


def _cutout(x: Tensor, centre: Tensor, ratio: float) -> Tensor:
    """Zero a square of side ``round(ratio * H)`` per sample (original ``rand_cutout``)."""
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sh == 0 or sw == 0:
        return x
    r = torch.arange(h, device=x.device).view(1, h)
    q = torch.arange(w, device=x.device).view(1, w)
    r0 = (centre[:, :1] - sh // 2).clamp(0, h - 1)
    r1 = (centre[:, :1] - sh // 2 + sh - 1).clamp(0, h - 1)
    c0 = (centre[:, 1:] - sw // 2).clamp(0, w - 1)
    c1 = (centre[:, 1:] - sw // 2 + sw - 1).clamp(0, w - 1)
    in_r = (r >= r0) & (r <= r1)
    in_c = (q >= c0) & (q <= c1)
    mask = ~(in_r.view(n, h, 1) & in_c.view(n, 1, w))
    return x * mask.view(n, 1, h, w).to(x.dtype)
