"""AlexNet for small images, as in the DC code.

Source: ``AlexNet`` / ``AlexNetBN`` in ``networks.py`` of VICO-UoE/DatasetCondensation,
re-written in plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from datadistill.models.norms import DistillNet, check_common, conv_out, make_pool

# (out channels, kernel, padding, pool after)
_ALEX_CFG = (
    (128, 5, None, True),
    (192, 5, 2, True),
    (256, 3, 1, False),
    (192, 3, 1, False),
    (192, 3, 1, True),
)


class AlexNet(DistillNet):
    """Conv128 k5 (padding 4 for 1-channel inputs, else 2) -> ReLU -> MaxPool2,
    Conv192 k5 p2 -> ReLU -> MaxPool2, Conv256 k3 p1 -> ReLU, Conv192 k3 p1 -> ReLU,
    Conv192 k3 p1 -> ReLU -> MaxPool2, flatten, Linear.

    ``batch_norm=True`` (DC's ``AlexNetBN``) puts ``BatchNorm2d`` after each conv, before ReLU.

    Input: float32 ``(N, channels, H, W)``, ``(H, W) == im_size``.
    Output: ``forward`` -> logits ``(N, num_classes)``; ``embed`` -> ``(N, embed_dim)``, the
    flattened last map: ``192 * 4 * 4 = 3072`` for 28x28x1 and 32x32x3 inputs.

    A max-pool on a map smaller than 2x2 is skipped, a choice of this package (it never
    triggers for 8x8 or larger inputs). ReLU is not in place.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        im_size: tuple[int, int],
        *,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        size = check_common(channels, num_classes, im_size)
        self.channels, self.num_classes, self.im_size = channels, num_classes, size
        self.batch_norm = batch_norm
        layers: list[nn.Module] = []
        in_ch = channels
        for out_ch, k, pad, pool in _ALEX_CFG:
            p = (4 if channels == 1 else 2) if pad is None else pad
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=k, stride=1, padding=p))
            size = conv_out(size, k, p)
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU())
            if pool:
                pool_layer, size = make_pool("max", size)
                layers.append(pool_layer)
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.feature_shape: tuple[int, int, int] = (in_ch, size[0], size[1])
        self.embed_dim: int = in_ch * size[0] * size[1]
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 -> ``(N, embed_dim)`` flattened features."""
        return self.features(x).flatten(1)
