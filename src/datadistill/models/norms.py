"""Building blocks shared by the networks: the base class, norm / activation / pooling factories
and small shape helpers.

Every layer made here is out-of-place (no ``inplace=True``), so the networks work under
``torch.func.functional_call`` and ``torch.func.vmap`` over stacked parameters (BatchNorm aside,
whose running statistics are buffers that are updated in train mode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from datadistill.errors import ConfigError

NORMS = ("none", "batch", "layer", "instance", "group")
ACTS = ("relu", "sigmoid", "leakyrelu")
POOLS = ("avg", "max", "none")


class DistillNet(nn.Module):
    """Base class of every network of :mod:`datadistill.models`.

    Subclasses define ``embed(x)`` (the penultimate features, what feeds the final Linear),
    ``classifier`` (that final ``nn.Linear``) and ``embed_dim`` (the width of ``embed(x)``).

    ``forward(x)`` maps float32 images ``(N, C, H, W)`` to logits ``(N, num_classes)``;
    ``forward(x, embed_only=True)`` returns ``embed(x)`` instead, so that
    ``torch.func.functional_call(net, params, (x,), {"embed_only": True})`` gives the features
    with functional (e.g. vmapped) parameters.
    """

    embed_dim: int
    num_classes: int
    classifier: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *, embed_only: bool = False) -> torch.Tensor:
        """Logits ``(N, num_classes)`` float32, or the features ``(N, embed_dim)``."""
        feat = self.embed(x)
        if embed_only:
            return feat
        return self.classifier(feat)


def check_common(channels: int, num_classes: int, im_size: Sequence[int]) -> tuple[int, int]:
    """Validate the three arguments every network takes; return ``im_size`` as a tuple."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ConfigError(f"channels must be a positive integer, got {channels!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        h, w = (int(s) for s in im_size)
    except (TypeError, ValueError):
        raise ConfigError(f"im_size must be a pair (H, W) of integers, got {im_size!r}") from None
    if h < 1 or w < 1 or any(int(s) != s for s in im_size):
        raise ConfigError(f"im_size must be a pair of positive integers, got {im_size!r}")
    return h, w


def check_choice(what: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``; ConfigError listing them otherwise."""
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(choices)}")
    return value


def check_positive(what: str, value: int) -> int:
    """``value`` if it is an int >= 1 (not a bool); ConfigError naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation over ``channels`` feature maps, as in the DC code's ConvNet.

    - ``"instance"``: ``GroupNorm(channels, channels, affine=True)`` (one group per channel;
      DC's "instancenorm", which unlike ``nn.InstanceNorm2d`` has per-channel affine weights);
    - ``"layer"``: ``GroupNorm(1, channels, affine=True)`` (statistics over C, H, W; note DC uses
      ``nn.LayerNorm([C, H, W])`` whose affine weights are per element, not per channel);
    - ``"group"``: ``GroupNorm(4, channels, affine=True)`` (needs ``channels`` divisible by 4);
    - ``"batch"``: ``BatchNorm2d(channels)``; ``"none"``: ``Identity``.
    """
    check_choice("norm", kind, NORMS)
    if kind == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels, affine=True)
    if kind == "group":
        if channels % 4:
            raise ConfigError(
                f"group norm uses 4 groups; {channels} channels are not divisible by 4"
            )
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def make_act(kind: str) -> nn.Module:
    """``"relu"`` (not in place), ``"sigmoid"`` or ``"leakyrelu"`` (negative slope 0.01)."""
    check_choice("activation", kind, ACTS)
    if kind == "relu":
        return nn.ReLU()
    if kind == "sigmoid":
        return nn.Sigmoid()
    return nn.LeakyReLU(negative_slope=0.01)


def make_pool(kind: str, size: tuple[int, int]) -> tuple[nn.Module, tuple[int, int]]:
    """A 2x2 stride-2 pooling and the map size after it.

    Returns ``Identity`` (and the unchanged size) for ``kind == "none"`` and whenever the map is
    smaller than 2x2 in either direction, so that small inputs (8x8 digits) never shrink below
    1x1 in deep networks: that pooling is skipped.
    """
    check_choice("pool", kind, POOLS)
    if kind == "none" or min(size) < 2:
        return nn.Identity(), size
    out = (size[0] // 2, size[1] // 2)
    if kind == "avg":
        return nn.AvgPool2d(kernel_size=2, stride=2), out
    return nn.MaxPool2d(kernel_size=2, stride=2), out


def conv_out(size: tuple[int, int], kernel: int, padding: int, stride: int = 1) -> tuple[int, int]:
    """Output map size of a square convolution."""
    return tuple((s + 2 * padding - kernel) // stride + 1 for s in size)  # type: ignore[return-value]


def min_padding(size: tuple[int, int], kernel: int, padding: int) -> int:
    """``padding``, raised just enough that a ``kernel`` convolution leaves at least 1x1."""
    # out = s + 2p - k + 1 >= 1  <=>  p >= (k - s) / 2
    return max(padding, math.ceil((kernel - min(size)) / 2))


def first_conv_padding(channels: int, im_size: tuple[int, int]) -> int:
    """DC convention: a 3x3 first conv on 1-channel 28x28 images uses padding 3 (28 -> 32)."""
    return 3 if channels == 1 and tuple(im_size) == (28, 28) else 1
