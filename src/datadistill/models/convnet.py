"""ConvNet: the field's default network (ConvNet-3 of DC / DSA / DM / MTT / IDC).

Source: ``ConvNet`` in ``networks.py`` of VICO-UoE/DatasetCondensation (Zhao et al., "Dataset
Condensation with Gradient Matching", ICLR 2021), re-written in plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from datadistill.models.norms import (
    ACTS,
    NORMS,
    POOLS,
    DistillNet,
    check_choice,
    check_common,
    check_positive,
    first_conv_padding,
    make_act,
    make_norm,
    make_pool,
)


class ConvNet(DistillNet):
    """``depth`` blocks of [Conv3x3(width) -> norm -> act -> 2x2 pool], flatten, Linear.

    Input: float32 ``(N, channels, H, W)`` with ``(H, W) == im_size``.
    Output: ``forward`` -> logits ``(N, num_classes)``; ``embed`` -> ``(N, embed_dim)``, the
    flattened last feature map, ``embed_dim = width * h * w``.

    Conventions of the DC code kept here:

    - 1-channel 28x28 inputs: the first conv has padding 3 (28 -> 32), so ConvNet-3 ends on a
      4x4 map and ``embed_dim = 128 * 4 * 4 = 2048``, as for 32x32 inputs. (DC pads by 3 for
      every 1-channel input; here only for 28x28, so 8x8 digits give 8 -> 4 -> 2 -> 1 and
      ``embed_dim = 128``.) Every other conv has padding 1 (size kept).
    - Each pooling halves the map (floor). A pooling that would act on a map smaller than 2x2
      is skipped (deep nets on 8x8 inputs), a choice of this package.
    - norm ``"instance"`` = ``GroupNorm(width, width, affine=True)``; ``"layer"`` =
      ``GroupNorm(1, width)`` (DC: ``LayerNorm([C, H, W])``, per-element affine);
      ``"group"`` = ``GroupNorm(4, width)``; ``"batch"`` = ``BatchNorm2d``; ``"none"``.
    - act ``"relu"`` / ``"sigmoid"`` / ``"leakyrelu"`` (slope 0.01), never in place.
    - PyTorch's default initialisation (as the DC code).

    With norm in {"instance", "layer", "group", "none"} the network is a pure function of its
    parameters and works with ``torch.func.functional_call`` + ``torch.func.vmap``.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        im_size: tuple[int, int],
        *,
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
        act: str = "relu",
        pool: str = "avg",
    ) -> None:
        super().__init__()
        size = check_common(channels, num_classes, im_size)
        check_positive("width", width)
        check_positive("depth", depth)
        check_choice("norm", norm, NORMS)
        check_choice("activation", act, ACTS)
        check_choice("pool", pool, POOLS)
        self.channels, self.num_classes, self.im_size = channels, num_classes, size
        self.width, self.depth, self.norm, self.act, self.pool = width, depth, norm, act, pool

        layers: list[nn.Module] = []
        in_ch = channels
        for d in range(depth):
            pad = first_conv_padding(channels, size) if d == 0 else 1
            layers.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=pad))
            size = (size[0] + 2 * pad - 2, size[1] + 2 * pad - 2)
            if norm != "none":
                layers.append(make_norm(norm, width))
            layers.append(make_act(act))
            if pool != "none":
                pool_layer, size = make_pool(pool, size)
                layers.append(pool_layer)
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.feature_shape: tuple[int, int, int] = (width, size[0], size[1])
        self.embed_dim: int = width * size[0] * size[1]
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 -> ``(N, embed_dim)`` float32 flattened features."""
        return self.features(x).flatten(1)
