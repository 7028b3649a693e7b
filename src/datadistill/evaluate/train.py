"""Train one fresh network on a (synthetic) training set under a protocol, then test it.

The loop follows the original DC/DSA/DM evaluator (``evaluate_synset`` / ``epoch``): a fresh
network, SGD with momentum and weight decay, step decay, per-sample DSA on every batch, and the
test accuracy after the LAST epoch (never the best one).

Speed (measured in ``benchmarks/bench_eval.py``): the forward pass and loss run under bf16
autocast where the hardware computes bf16 natively (``precision="auto"``: AMX / AVX-512 CPUs,
CUDA; float32 on AVX2-only CPUs, where emulated bf16 is ~10x slower) and are compiled once per
architecture with ``torch.compile``; weights, optimiser state and gradients stay float32. Both
are switchable.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from datadistill.augment import cutmix
from datadistill.data import RealDataset
from datadistill.evaluate.protocols import Protocol
from datadistill.models import get_network
from datadistill.utils import Timer, compiled, make_generator, resolve_precision

log = logging.getLogger(__name__)

def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``precision`` is ``"bf16"`` (or ``"auto"`` on hardware
    with native bf16, see :func:`datadistill.utils.resolve_precision`), else a no-op.

    Raises ConfigError for a precision other than auto / bf16 / fp32."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _loss(model: nn.Module, x: Tensor, target: Tensor, precision: str) -> Tensor:
    with autocast(x.device, precision):
        out = model(x)
    return F.cross_entropy(out.float(), target)


def loss_function(device: torch.device, precision: str, compile: bool) -> Callable:
    """``f(model, x, target) -> scalar loss``, compiled once per (device type, precision) and
    shared by every model (dynamo re-uses the graph for new instances of one architecture)."""
    def eager(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
        return _loss(model, x, target, precision)

    if not compile:
        return eager
    # one compiled graph per (device type, precision); eager and compiled give the same loss
    return compiled(f"loss/{device.type}/{precision}", eager)


def build_network(name: str, channels: int, num_classes: int, im_size: tuple[int, int],
                  seed: int, device: torch.device) -> nn.Module:
    """A fresh registered network initialised deterministically from ``seed`` (the global RNG is
    forked, so the caller's RNG state is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA RNG state stays the user's
        net = get_network(name, channels, num_classes, im_size)
    return net.to(device)


@torch.no_grad()
def test_accuracy(model: nn.Module, test: RealDataset, *, precision: str = "auto",
                  batch_size: int | None = None) -> float:
    """Top-1 accuracy in percent of ``model`` on ``test`` (eval mode, no augmentation).

    ``batch_size`` defaults to 128 on a CPU, where small batches stay in cache (measured on a
    2-core AVX2 CPU, ConvNet-3 on the 10,000 Fashion-MNIST test images: 40 s with batches of
    1000, 22 s with 128), and 1000 on a GPU."""
    model.eval()
    device = next(model.parameters()).device
    if batch_size is None:
        batch_size = 128 if device.type == "cpu" else 1000
    correct = 0
    for i in range(0, len(test), batch_size):
        x = test.images[i : i + batch_size].to(device)
        y = test.labels[i : i + batch_size].to(device)
        with autocast(device, precision):
            correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / len(test)


def train_network(
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
    """Train a fresh ``model_name`` on ``images`` (N, C, H, W) float32 model-input space and
    ``labels`` (N,) int64 or (N, K) soft, under ``protocol``; returns the trained network.

    ``seed`` fixes the initialisation, the batch order and the augmentation draws. ``lr``
    overrides the protocol's learning rate (a learned lr stored in the synthetic set).
    Step-based protocols (FRePo's) are trained by
    :func:`datadistill.evaluate.frepo_train.train_network_steps`.
    """
    from datadistill.evaluate.frepo_train import make_augment, train_network_steps

    if protocol.step_based:
        return train_network_steps(model_name, images, labels, num_classes, protocol, seed=seed,
                                   dsa_strategy=dsa_strategy, device=device, precision=precision,
                                   compile=compile, lr=lr)
    images, labels = images.to(device), labels.to(device)
    n, c, h, w = images.shape
    net = build_network(model_name, c, num_classes, (h, w), seed, device)
    net.train()
    base_lr = protocol.lr if lr is None else lr
    opt = torch.optim.SGD(net.parameters(), lr=base_lr, momentum=protocol.momentum,
                          weight_decay=protocol.weight_decay)
    gen = make_generator(seed + 7919)
    dsa = make_augment(protocol, dsa_strategy)
    loss_fn = loss_function(device, precision, compile)
    current = protocol.lr
    for epoch in range(protocol.epochs):
        lr_now = protocol.lr_at(epoch)
        if lr_now != current:
            current = lr_now
            if protocol.reset_momentum:
                opt.state.clear()
        for group in opt.param_groups:
            group["lr"] = base_lr * lr_now / protocol.lr
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, protocol.batch_size):
            idx = perm[i : i + protocol.batch_size]
            x, t = images[idx], labels[idx]
            if dsa is not None:
                x = dsa(x, gen)
            if protocol.cutmix_p > 0 and float(torch.rand(1, generator=gen)) < protocol.cutmix_p:
                x, t = cutmix(x, t, num_classes, gen)
            loss = loss_fn(net, x, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net


class NetworkResult(NamedTuple):
    """One trained network's test accuracies (%) and its wall seconds (training + testing)."""

    accuracy: float
    seconds: float
    krr_accuracy: float | None = None


def train_and_test(
    model_name: str,
    images: Tensor,
    labels: Tensor,
    test: RealDataset,
    protocol: Protocol,
    *,
    seed: int,
    dsa_strategy: str,
    device: torch.device,
    precision: str = "auto",
    compile: bool = True,
    lr: float | None = None,
    krr: bool = False,
) -> NetworkResult:
    """Train (see :func:`train_network`) then test: last-epoch accuracy (%) and wall seconds.

    With ``protocol.predictor == "krr"`` the test set is predicted by kernel ridge regression on
    the trained network's features (:func:`datadistill.evaluate.krr.krr_accuracy`; the support
    set includes the flipped images when the augmentation flips). ``krr=True`` adds that KRR
    accuracy of the SAME network to a ``"network"`` predictor's (``krr_accuracy``), as FRePo's
    evaluator does with ``eval_krr`` (one more feature pass over the test set, no retraining).
    """
    with Timer() as t:
        net = train_network(model_name, images, labels, test.num_classes, protocol, seed=seed,
                            dsa_strategy=dsa_strategy, device=device, precision=precision,
                            compile=compile, lr=lr)
        test = test.to(device) if test.device != device else test
        krr_acc = None
        if protocol.predictor == "krr" or krr:
            from datadistill.evaluate.krr import krr_accuracy

            flip = protocol.augment != "none" and "flip" in dsa_strategy.split("_")
            krr_acc = krr_accuracy(net, images, labels, test, flip=flip)
        if protocol.predictor == "krr":
            acc = krr_acc
        else:
            acc = test_accuracy(net, test, precision=precision)
    return NetworkResult(acc, t.seconds, krr_acc if krr else None)
