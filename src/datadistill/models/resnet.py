"""ResNet-18 for small images, as in the DC code.

Source: ``ResNet`` / ``BasicBlock`` / ``ResNet_AP`` / ``BasicBlock_AP`` in ``networks.py`` of
VICO-UoE/DatasetCondensation (itself after kuangliu/pytorch-cifar), re-written in plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from datadistill.errors import ConfigError
from datadistill.models.norms import DistillNet, check_common, make_norm

_RESNET_NORMS = ("instance", "batch")


class BasicBlock(nn.Module):
    """Two 3x3 convs (no bias) with norms and a residual shortcut; ReLU after the sum.

    ``avgpool_downsample=False``: the first conv has stride ``stride`` (DC ``BasicBlock``); the
    shortcut is a strided 1x1 conv + norm when the shape changes.
    ``avgpool_downsample=True`` (DC ``BasicBlock_AP``): all convs have stride 1 and downsampling
    is ``AvgPool2d(2)`` after the first conv's ReLU, and after the shortcut's 1x1 conv. A
    2x2 pooling on a map smaller than 2x2 is skipped (small inputs), a choice of this package.
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        *,
        stride: int,
        norm: str,
        avgpool_downsample: bool,
        size: tuple[int, int],
    ) -> None:
        super().__init__()
        down = stride != 1
        if avgpool_downsample:
            pool_ok = down and min(size) >= 2
            conv_stride = 1
            self.out_size = (size[0] // 2, size[1] // 2) if pool_ok else size
        else:
            pool_ok = False
            conv_stride = stride
            self.out_size = tuple((s - 1) // stride + 1 for s in size)  # k3 p1
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.act1 = nn.ReLU()
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2) if pool_ok else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.act2 = nn.ReLU()
        self.shortcut: nn.Module
        if down or in_planes != planes:
            short: list[nn.Module] = [
                nn.Conv2d(in_planes, planes, 1, stride=conv_stride, bias=False)
            ]
            if pool_ok:
                short.append(nn.AvgPool2d(kernel_size=2, stride=2))
            short.append(make_norm(norm, planes))
            self.shortcut = nn.Sequential(*short)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.act1(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet18(DistillNet):
    """ResNet-18 for small images: 3x3 stride-1 stem (no max-pool), BasicBlocks [2, 2, 2, 2]
    with 64 / 128 / 256 / 512 channels (stride 1, 2, 2, 2), global average pooling, Linear.

    Input: float32 ``(N, channels, H, W)``, any ``H, W >= 1`` (``im_size`` is only checked).
    Output: ``forward`` -> logits ``(N, num_classes)``; ``embed`` -> ``(N, 512)`` (the globally
    averaged last map; ``embed_dim = 512``).

    ``norm="instance"`` (DC's default ``ResNet18``: ``GroupNorm(c, c, affine=True)``) or
    ``"batch"`` (``ResNet18BN``). ``avgpool_downsample=True`` is DC's ``ResNet18BN_AP``: stride-1
    convs + ``AvgPool2d(2)`` for downsampling.

    Differences from the DC code: DC ends with ``F.avg_pool2d(out, 4)`` (= global pooling for
    28x28 and 32x32 inputs) and its ``_AP`` variant flattens the last map (512 * 4 * 4 for
    32x32) instead of pooling it; here both use global average pooling so any input size gives
    ``embed_dim = 512``. The stem keeps DC's padding 1 for every input (1-channel 28x28 maps go
    28 -> 14 -> 7 -> 4, or 28 -> 14 -> 7 -> 3 with average-pool downsampling). Residual sums are
    out of place (functional_call / vmap friendly with instance norm).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        im_size: tuple[int, int],
        *,
        norm: str = "instance",
        avgpool_downsample: bool = False,
    ) -> None:
        super().__init__()
        size = check_common(channels, num_classes, im_size)
        if norm not in _RESNET_NORMS:
            raise ConfigError(f"unknown ResNet norm {norm!r}; valid: {', '.join(_RESNET_NORMS)}")
        self.channels, self.num_classes, self.im_size = channels, num_classes, size
        self.norm = norm
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = make_norm(norm, 64)
        self.act1 = nn.ReLU()
        in_planes = 64
        stages: list[nn.Module] = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks: list[nn.Module] = []
            for s in (stride, 1):
                block = BasicBlock(
                    in_planes,
                    planes,
                    stride=s,
                    norm=norm,
                    avgpool_downsample=avgpool_downsample,
                    size=size,
                )
                size = block.out_size
                blocks.append(block)
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.final_map_size: tuple[int, int] = size
        self.embed_dim: int = 512
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 -> ``(N, 512)`` globally averaged features."""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return out.mean(dim=(2, 3))
