"""FRePo's ConvNet (Zhou, Nezhadarya, Ba, "Dataset Distillation using Neural Feature
Regression", NeurIPS 2022; JAX/Flax code yongchao97/FRePo), re-written in plain PyTorch.

What was checked, and against what: the original repository is not in the searchable index
used while writing this module, so the architecture was read from a public Flax file that
states it re-uses FRePo's model code (its class ``Conv`` next to ``KIP_ConvNet``,
``DC_ConvNet``, ``AlexNet``, ``VGG``, ``ResNet``), and it agrees with the project's
REFERENCE.md ("widths 128/256/512, norm before conv, no norm at evaluation"). That ``Conv``:

- ``depth`` (default 3) blocks; block ``i`` is
  ``[norm (only if i > 0)] -> Conv3x3(width * 2**i, bias=True) -> ReLU -> AvgPool 2x2``,
  i.e. widths 128 / 256 / 512; the first layer has the same base width (no wider/narrower
  stem); the norm sits BEFORE the conv, acting on the previous block's pooled output, so there
  is no norm on the raw image and none after the last block;
- 1-channel inputs: the first conv has padding 3 (28 -> 32); others padding 1 ("SAME");
- then flatten (no global pooling: ``512 * 4 * 4 = 8192`` features for 32x32 images) and a
  Dense head; the flattened vector is the feature map used for kernel ridge regression;
- normalisation "identity" (none) for evaluation, "batch" for the distillation model pool;
  the Flax BatchNorm there has ``momentum=0.1, epsilon=1e-5``. Flax's momentum is the decay of
  the running average (``ra = m * ra + (1 - m) * batch``), so the PyTorch equivalent is
  ``BatchNorm2d(momentum=0.9)``, the default ``bn_momentum`` here;
- Flax's default initialisation: LeCun-normal (truncated) weights, zero biases.

Deviations: PyTorch's default initialisation is the default here (``init="torch"``, as asked
for all networks of this package); ``init="lecun"`` reproduces Flax's. The padding-3 rule is
applied only to 1-channel 28x28 inputs, as for :class:`ConvNet` (8x8 digits: padding 1), and
a pooling on a map smaller than 2x2 is skipped.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from datadistill.errors import ConfigError
from datadistill.models.norms import (
    NORMS,
    DistillNet,
    check_choice,
    check_common,
    check_positive,
    first_conv_padding,
    make_norm,
    make_pool,
)

_INITS = ("torch", "lecun")
# std of a standard normal truncated to [-2, 2]
_TRUNC_STD = 0.87962566103423978


def _lecun_normal_(weight: torch.Tensor) -> None:
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


class FRePoConvNet(DistillNet):
    """FRePo's ConvNet: block ``i`` (0-based) is
    ``[norm if i > 0] -> Conv3x3(width * 2**i) -> ReLU -> AvgPool2x2``; flatten; Linear.

    Input: float32 ``(N, channels, H, W)``, ``(H, W) == im_size``.
    Output: ``forward`` -> logits ``(N, num_classes)``; ``embed`` -> ``(N, embed_dim)``, the
    flattened last map: ``512 * 4 * 4 = 8192`` for 28x28x1 and 32x32x3 inputs, ``512`` for 8x8.

    ``norm``: ``"none"`` (FRePo's evaluation network, registered as ``frepo-convnet``) or
    ``"batch"`` (its distillation model pool, ``frepo-convnet-bn``); ``"instance"``,
    ``"layer"`` and ``"group"`` are accepted too (FRePo's code offers them). ``bn_momentum`` is
    PyTorch's BatchNorm momentum (0.9 = Flax's 0.1). ``init``: ``"torch"`` (PyTorch defaults)
    or ``"lecun"`` (Flax defaults: truncated LeCun-normal weights, zero biases).
    See the module docstring for what was verified against FRePo's code.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        im_size: tuple[int, int],
        *,
        width: int = 128,
        depth: int = 3,
        norm: str = "none",
        bn_momentum: float = 0.9,
        init: str = "torch",
    ) -> None:
        super().__init__()
        size = check_common(channels, num_classes, im_size)
        check_positive("width", width)
        check_positive("depth", depth)
        check_choice("norm", norm, NORMS)
        check_choice("init", init, _INITS)
        if not 0.0 <= bn_momentum <= 1.0:
            raise ConfigError(f"bn_momentum must be in [0, 1], got {bn_momentum!r}")
        self.channels, self.num_classes, self.im_size = channels, num_classes, size
        self.width, self.depth, self.norm = width, depth, norm

        layers: list[nn.Module] = []
        in_ch = channels
        for i in range(depth):
            if i > 0 and norm != "none":
                layer = make_norm(norm, in_ch)
                if isinstance(layer, nn.BatchNorm2d):
                    layer.momentum = bn_momentum
                layers.append(layer)
            out_ch = width * 2**i
            pad = first_conv_padding(channels, size) if i == 0 else 1
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=pad, bias=True))
            size = (size[0] + 2 * pad - 2, size[1] + 2 * pad - 2)
            layers.append(nn.ReLU())
            pool_layer, size = make_pool("avg", size)
            layers.append(pool_layer)
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.feature_shape: tuple[int, int, int] = (in_ch, size[0], size[1])
        self.embed_dim: int = in_ch * size[0] * size[1]
        self.classifier = nn.Linear(self.embed_dim, num_classes)
        if init == "lecun":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    _lecun_normal_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 -> ``(N, embed_dim)`` flattened features."""
        return self.features(x).flatten(1)
