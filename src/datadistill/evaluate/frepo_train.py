"""The step-based trainer: FRePo's evaluator (Zhou et al., NeurIPS 2022; ``script/eval.py`` and
``proto_evaluate`` of yongchaoz/FRePo), for protocols that set ``steps`` / ``steps_by_images``.

A fresh network takes ``protocol.train_steps(N)`` optimizer steps on batches of ``min(N,
batch_size)`` synthetic images (a new random order every pass), with linear warm-up and cosine
decay (:meth:`Protocol.lr_at_step`), Adam (or SGD), and MSE on the labels (``loss="mse"``: soft
labels as stored, hard labels as centred one-hot targets) or cross-entropy. Each batch is
augmented by one random op group with its own parameters per image (FRePo's ``get_aug_by_name``
with ``use_siamese=False``); the FRePo ranges are DSA's op groups with scale 1.25 (FRePo's
``RandomSizedCrop`` zoom 0.8-1.25), translation 1/8, cutout 1/4 of the side, rotation 15 degrees,
brightness +-0.25. DSA's saturation and contrast ranges are kept (FRePo's are log-uniform in
[e^-0.25, e^0.25], which DSA's parameterisation cannot express). No flip for the MNISTs.

Deviations from FRePo's loop, none of which changes what is optimised: batches are reshuffled
every pass (FRePo cycles through the set in a fixed order; with <= 500 images each batch is the
whole set anyway), and the warm-up is capped at half the steps so that a shortened run still
reaches the peak lr (never the case for the published step counts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from datadistill.augment import DSA, ComposedDSA
from datadistill.augment.dsa import DEFAULT_STRATEGY
from datadistill.evaluate.protocols import Protocol
from datadistill.evaluate.train import autocast, build_network
from datadistill.utils import compiled, make_generator

#: Datasets FRePo trains without horizontal flips (``dataset_name in ['mnist', 'fashion_mnist']``),
#: plus the other digit sets of this package.
FREPO_NO_FLIP = ("mnist", "fashion-mnist", "digits", "svhn")


def frepo_strategy(dataset: str | None) -> str:
    """FRePo's augmentation groups for ``dataset`` (DSA names): all six, no flip for the MNISTs."""
    if dataset is not None and dataset.lower() in FREPO_NO_FLIP:
        return DEFAULT_STRATEGY.replace("_flip", "")
    return DEFAULT_STRATEGY


def make_augment(protocol: Protocol, strategy: str) -> DSA | ComposedDSA | None:
    """The per-batch augmentation of ``protocol`` with op groups ``strategy`` (None: no augment)."""
    if protocol.augment == "dsa":
        return DSA(strategy)
    if protocol.augment == "composed":
        return ComposedDSA(strategy)
    if protocol.augment == "frepo":
        return DSA(strategy, scale=1.25, cutout=0.25, brightness=0.5)
    return None


def regression_targets(labels: Tensor, num_classes: int) -> Tensor:
    """MSE targets: soft labels (N, K) unchanged; hard labels (N,) -> centred one-hot
    ``onehot - 1/K`` (FRePo's ``y_transform``)."""
    if labels.dim() == 2:
        return labels.float()
    return F.one_hot(labels, num_classes).float() - 1.0 / num_classes


def _step_loss(model: nn.Module, x: Tensor, target: Tensor, precision: str, loss: str) -> Tensor:
    with autocast(x.device, precision):
        out = model(x)
    out = out.float()
    if loss == "mse":
        return 0.5 * (out - target).pow(2).sum(1).mean()
    return F.cross_entropy(out, target)


def step_loss_function(device: torch.device, precision: str, loss: str, compile: bool) -> Callable:
    """``f(model, x, target) -> scalar``, compiled once per (device type, precision, loss)."""

    def eager(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
        return _step_loss(model, x, target, precision, loss)

    if not compile:
        return eager
    return compiled(f"step-loss/{device.type}/{precision}/{loss}", eager)


def train_network_steps(
    model_name: str,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    protocol: Protocol,
    *,
    seed: int,
    dsa_strategy: str,
    device: torch.device,
    precision: str = "auto",
    compile: bool = True,
    lr: float | None = None,
) -> nn.Module:
    """Train a fresh ``model_name`` under the step-based ``protocol``; returns the network.

    Same arguments as :func:`datadistill.evaluate.train.train_network`; ``seed`` fixes the
    initialisation, the batch order and the augmentation draws, ``lr`` replaces the protocol's
    peak learning rate.
    """
    images, labels = images.to(device), labels.to(device)
    n, c, h, w = images.shape
    targets = regression_targets(labels, num_classes) if protocol.loss == "mse" else labels
    net = build_network(model_name, c, num_classes, (h, w), seed, device)
    net.train()
    peak = protocol.lr if lr is None else lr
    if protocol.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=peak,
                                                      weight_decay=protocol.weight_decay)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=peak, momentum=protocol.momentum,
                              weight_decay=protocol.weight_decay)
    gen = make_generator(seed + 7919)
    augment = make_augment(protocol, dsa_strategy)
    loss_fn = step_loss_function(device, precision, protocol.loss, compile)
    total = protocol.train_steps(n)
    bs = min(n, protocol.batch_size)
    perm, pos = torch.randperm(n, generator=gen).to(device), 0
    for step in range(total):
        if pos + bs > n:  # a new pass in a new order; the tail of the old one is dropped
            perm, pos = torch.randperm(n, generator=gen).to(device), 0
        idx = perm[pos : pos + bs]
        pos += bs
        x, t = images[idx], targets[idx]
        if augment is not None:
            x = augment(x, gen)
        for group in opt.param_groups:
            group["lr"] = protocol.lr_at_step(step, total) * peak / protocol.lr
        loss = loss_fn(net, x, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net
