"""VGG-11 for small images, as in the DC code.

Source: ``VGG`` (``VGG11`` / ``VGG11BN``) in ``networks.py`` of VICO-UoE/DatasetCondensation,
re-written in plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from datadistill.errors import ConfigError
from datadistill.models.norms import (
    DistillNet,
    check_common,
    first_conv_padding,
    make_norm,
    make_pool,
)

VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
_VGG_NORMS = ("instance", "batch", "none")


class VGG11(DistillNet):
    """VGG-11: cfg ``[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]``.

    Each number is Conv3x3 (padding 1; padding 3 for the first conv on 1-channel 28x28 inputs,
    28 -> 32, as DC) -> norm -> ReLU; each ``M`` is MaxPool 2x2 stride 2. Then flatten and
    ``Linear(512 * s * s, num_classes)`` where ``s x s`` is the final map (1x1 for 28x28x1 and
    32x32 inputs, 2x2 for 64x64).

    Input: float32 ``(N, channels, H, W)``, ``(H, W) == im_size``.
    Output: ``forward`` -> logits ``(N, num_classes)``; ``embed`` -> ``(N, embed_dim)``,
    ``embed_dim = 512 * s_h * s_w``.

    ``norm="instance"`` (DC's ``VGG11``: ``GroupNorm(c, c, affine=True)``), ``"batch"``
    (``VGG11BN``) or ``"none"``. A max-pool on a map smaller than 2x2 is skipped (8x8 inputs
    reach 1x1 after three pools), a choice of this package. ReLU is not in place.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        im_size: tuple[int, int],
        *,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        size = check_common(channels, num_classes, im_size)
        if norm not in _VGG_NORMS:
            raise ConfigError(f"unknown VGG norm {norm!r}; valid: {', '.join(_VGG_NORMS)}")
        self.channels, self.num_classes, self.im_size, self.norm = channels, num_classes, size, norm
        layers: list[nn.Module] = []
        in_ch = channels
        first = True
        for item in VGG11_CFG:
            if item == "M":
                pool_layer, size = make_pool("max", size)
                layers.append(pool_layer)
                continue
            assert isinstance(item, int)
            pad = first_conv_padding(channels, size) if first else 1
            first = False
            layers.append(nn.Conv2d(in_ch, item, kernel_size=3, padding=pad))
            size = (size[0] + 2 * pad - 2, size[1] + 2 * pad - 2)
            if norm != "none":
                layers.append(make_norm(norm, item))
            layers.append(nn.ReLU())
            in_ch = item
        self.features = nn.Sequential(*layers)
        self.feature_shape: tuple[int, int, int] = (in_ch, size[0], size[1])
        self.embed_dim: int = in_ch * size[0] * size[1]
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 -> ``(N, embed_dim)`` flattened features."""
        return self.features(x).flatten(1)
