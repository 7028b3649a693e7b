"""LeNet, as in the DC code.

Source: ``LeNet`` in ``networks.py`` of VICO-UoE/DatasetCondensation (after LeCun et al. 1998),
re-written in plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from datadistill.models.norms import DistillNet, check_common, conv_out, make_pool, min_padding


class LeNet(DistillNet):
    """Conv6 k5 (padding 2 for 1-channel inputs, else 0) -> ReLU -> MaxPool2,
    Conv16 k5 -> ReLU -> MaxPool2, flatten, fc 120 -> ReLU -> fc 84 -> ReLU -> fc classes.

    Input: float32 ``(N, channels, H, W)``, ``(H, W) == im_size``.
    Output: ``forward`` -> logits ``(N, num_classes)``; ``embed`` -> ``(N, 84)``, the ReLU'd
    84-d features that feed the last fc (``embed_dim = 84``).

    DC hard-codes ``fc_1 = Linear(16 * 5 * 5, 120)`` (28x28x1 and 32x32x3 inputs); here its
    input width follows ``im_size``. For inputs so small that a 5x5 conv would leave nothing
    (8x8 digits: the second conv sees 4x4), that conv gets the least zero padding that leaves
    a map of at least 1x1, and a max-pool on a map smaller than 2x2 is skipped; choices of this
    package that do not affect 28x28 / 32x32 inputs. ReLU is not in place.
    """

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int]) -> None:
        super().__init__()
        size = check_common(channels, num_classes, im_size)
        self.channels, self.num_classes, self.im_size = channels, num_classes, size
        p1 = min_padding(size, 5, 2 if channels == 1 else 0)
        conv1 = nn.Conv2d(channels, 6, kernel_size=5, padding=p1)
        size = conv_out(size, 5, p1)
        pool1, size = make_pool("max", size)
        p2 = min_padding(size, 5, 0)
        conv2 = nn.Conv2d(6, 16, kernel_size=5, padding=p2)
        size = conv_out(size, 5, p2)
        pool2, size = make_pool("max", size)
        self.features = nn.Sequential(conv1, nn.ReLU(), pool1, conv2, nn.ReLU(), pool2)
        self.feature_shape: tuple[int, int, int] = (16, size[0], size[1])
        self.fc_1 = nn.Linear(16 * size[0] * size[1], 120)
        self.fc_2 = nn.Linear(120, 84)
        self.embed_dim: int = 84
        self.classifier = nn.Linear(84, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 -> ``(N, 84)`` features."""
        out = self.features(x).flatten(1)
        out = torch.relu(self.fc_1(out))
        return torch.relu(self.fc_2(out))
