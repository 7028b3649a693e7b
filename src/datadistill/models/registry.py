"""The network registry: standard names -> ``factory(channels, num_classes, im_size)``.

``get_network("convnet", channels=3, num_classes=10, im_size=(32, 32))`` builds ConvNet-3.
Unknown names raise :class:`~datadistill.errors.UnknownNameError` listing the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from datadistill.models.alexnet import AlexNet
from datadistill.models.convnet import ConvNet
from datadistill.models.frepo import FRePoConvNet
from datadistill.models.lenet import LeNet
from datadistill.models.mlp import MLP
from datadistill.models.norms import check_common
from datadistill.models.resnet import ResNet18
from datadistill.models.vgg import VGG11
from datadistill.registry import Registry

NetworkFactory = Callable[[int, int, tuple[int, int]], nn.Module]

NETWORKS: Registry[NetworkFactory] = Registry("network")


def _factory(cls: type[nn.Module], **kwargs: Any) -> NetworkFactory:
    def make(channels: int, num_classes: int, im_size: tuple[int, int]) -> nn.Module:
        return cls(channels, num_classes, im_size, **kwargs)

    make.__name__ = make.__qualname__ = f"make_{cls.__name__}"
    return make


def _register(name: str, help: str, cls: type[nn.Module], **kwargs: Any) -> None:
    NETWORKS.add(name, _factory(cls, **kwargs), help)


_register("convnet", "ConvNet-3 (width 128, instance norm, ReLU, avg pool): the default", ConvNet)
for _d in range(1, 6):
    _register(f"convnet-d{_d}", f"ConvNet, depth {_d}", ConvNet, depth=_d)
for _w in (32, 64, 256):
    _register(f"convnet-w{_w}", f"ConvNet-3, width {_w}", ConvNet, width=_w)
_register("convnet-bn", "ConvNet-3 with batch norm", ConvNet, norm="batch")
_register("convnet-ln", "ConvNet-3 with layer norm (GroupNorm, 1 group)", ConvNet, norm="layer")
_register("convnet-gn", "ConvNet-3 with group norm (4 groups)", ConvNet, norm="group")
_register("convnet-nn", "ConvNet-3 without normalisation", ConvNet, norm="none")
_register("convnet-mp", "ConvNet-3 with max pooling", ConvNet, pool="max")
_register("convnet-np", "ConvNet-3 without pooling", ConvNet, pool="none")
_register("convnet-sigmoid", "ConvNet-3 with sigmoid activations", ConvNet, act="sigmoid")
_register("convnet-leakyrelu", "ConvNet-3 with leaky ReLU (0.01)", ConvNet, act="leakyrelu")
_register("resnet18", "ResNet-18 (small-image stem, instance norm; DC's ResNet18)", ResNet18)
_register("resnet18-bn", "ResNet-18 with batch norm (DC's ResNet18BN)", ResNet18, norm="batch")
_register(
    "resnet18-bn-ap",
    "ResNet-18, batch norm, avg-pool downsampling (DC's ResNet18BN_AP)",
    ResNet18,
    norm="batch",
    avgpool_downsample=True,
)
_register("vgg11", "VGG-11 with instance norm (DC's VGG11)", VGG11)
_register("vgg11-bn", "VGG-11 with batch norm (DC's VGG11BN)", VGG11, norm="batch")
_register("alexnet", "AlexNet (DC's small-image AlexNet)", AlexNet)
_register("alexnet-bn", "AlexNet with batch norm (DC's AlexNetBN)", AlexNet, batch_norm=True)
_register("lenet", "LeNet (DC's)", LeNet)
_register("mlp", "MLP 128-128 (DC's)", MLP)
_register(
    "frepo-convnet",
    "FRePo's ConvNet 128/256/512, no norm (FRePo's evaluation network)",
    FRePoConvNet,
)
_register(
    "frepo-convnet-bn",
    "FRePo's ConvNet 128/256/512 with batch norm (FRePo's distillation model pool)",
    FRePoConvNet,
    norm="batch",
)


def get_network(
    name: str, channels: int, num_classes: int, im_size: tuple[int, int] | Sequence[int]
) -> nn.Module:
    """Build the registered network ``name`` for ``channels`` x ``im_size`` images.

    Returns a fresh ``nn.Module`` (PyTorch default initialisation, from the global RNG) with
    ``forward(x) -> (N, num_classes)`` logits, ``embed(x) -> (N, embed_dim)`` and ``embed_dim``.
    Raises UnknownNameError (valid names in the message) or ConfigError (bad arguments).
    """
    factory = NETWORKS.get(name)
    size = check_common(channels, num_classes, im_size)
    return factory(channels, num_classes, size)


def network_names() -> list[str]:
    """The registered network names, sorted."""
    return NETWORKS.names()
