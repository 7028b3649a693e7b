"""MLP, as in the DC code.

Source: ``MLP`` in ``networks.py`` of VICO-UoE/DatasetCondensation, re-written in plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from datadistill.models.norms import DistillNet, check_common


class MLP(DistillNet):
    """Flatten -> Linear(C*H*W, 128) -> ReLU -> Linear(128, 128) -> ReLU -> Linear(128, classes).

    Input: float32 ``(N, channels, H, W)``, ``(H, W) == im_size``.
    Output: ``forward`` -> logits ``(N, num_classes)``; ``embed`` -> ``(N, 128)`` (the second
    hidden layer after ReLU; ``embed_dim = 128``).

    DC sizes the first layer for 28*28*1 or 32*32*3 inputs; here it follows ``channels`` and
    ``im_size``.
    """

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int]) -> None:
        super().__init__()
        size = check_common(channels, num_classes, im_size)
        self.channels, self.num_classes, self.im_size = channels, num_classes, size
        self.fc_1 = nn.Linear(channels * size[0] * size[1], 128)
        self.fc_2 = nn.Linear(128, 128)
        self.embed_dim: int = 128
        self.classifier = nn.Linear(128, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 -> ``(N, 128)`` features."""
        out = torch.relu(self.fc_1(x.flatten(1)))
        return torch.relu(self.fc_2(out))
