"""Networks of the dataset-distillation literature, in plain PyTorch.

``get_network(name, channels, num_classes, im_size)`` builds a registered network; every
network maps float32 ``(N, C, H, W)`` images to logits ``(N, num_classes)`` and has
``embed(x) -> (N, embed_dim)`` (the penultimate features) and ``embed_dim``.
"""

from __future__ import annotations

from datadistill.models.alexnet import AlexNet
from datadistill.models.convnet import ConvNet
from datadistill.models.frepo import FRePoConvNet
from datadistill.models.lenet import LeNet
from datadistill.models.mlp import MLP
from datadistill.models.norms import DistillNet, make_act, make_norm
from datadistill.models.registry import NETWORKS, NetworkFactory, get_network, network_names
from datadistill.models.resnet import BasicBlock, ResNet18
from datadistill.models.vgg import VGG11

__all__ = [
    "NETWORKS",
    "MLP",
    "VGG11",
    "AlexNet",
    "BasicBlock",
    "ConvNet",
    "DistillNet",
    "FRePoConvNet",
    "LeNet",
    "NetworkFactory",
    "ResNet18",
    "get_network",
    "make_act",
    "make_norm",
    "network_names",
]
