"""Kernel ridge regression (KRR) on neural features: the regression FRePo distils with, and its
second evaluation (the "KRR predictor", ``eval_on_proto_krr`` of yongchaoz/FRePo).

With features ``F_s`` (N_s, D) of the support (synthetic) set, targets ``Y_s`` (N_s, K) and
features ``F_t`` of the points to predict::

    K_ss = F_s F_s^T,  K_ts = F_t F_s^T,  lambda = reg * trace(K_ss) / N_s
    prediction = K_ts (K_ss + lambda I)^-1 Y_s

with ``reg = 1e-6`` (FRePo's ``nfr``; the ISA paper, "lambda = 1e-6 Tr(K)").

Numerics: ``lambda`` is tiny (1e-6 of the mean diagonal), and ``K_ss`` computed from float32
features carries rounding errors of order ``sqrt(D) * 6e-8`` of its diagonal, which can exceed
``lambda`` and make a float32 Cholesky fail or return garbage. :func:`krr_solve` therefore
symmetrises ``K_ss`` and solves in float64 (an N_s x N_s system, a few milliseconds even for
N_s = 1000; float32 on devices without float64, e.g. Apple MPS), with ``torch.linalg.solve``
(LU with pivoting: it needs no positive definiteness, so it never fails on a non-singular
system), and returns the result in the input dtype. Gradients flow through it (autograd of the
solve), which is what the distillation differentiates.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from datadistill.data import RealDataset

#: FRePo's ridge: lambda = REG * trace(K_ss) / N_s.
REG = 1e-6


def _solve_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def krr_solve(k_ss: Tensor, y: Tensor, reg: float = REG) -> Tensor:
    """``(K_ss + reg * trace(K_ss) / n * I)^-1 y`` for a kernel ``k_ss`` (n, n) and ``y`` (n, K).

    Differentiable in ``k_ss`` and ``y``; solved in float64 (see the module docstring); returns
    ``y``'s dtype.
    """
    n = k_ss.shape[0]
    dt = _solve_dtype(k_ss.device)
    k = k_ss.to(dt)
    k = 0.5 * (k + k.transpose(0, 1))
    lam = abs(reg) * torch.diagonal(k).sum() / n
    eye = torch.eye(n, dtype=dt, device=k.device)
    return torch.linalg.solve(k + lam * eye, y.to(dt)).to(y.dtype)


def krr_predict(feat_t: Tensor, feat_s: Tensor, y_s: Tensor, reg: float = REG) -> Tensor:
    """``K_ts (K_ss + lambda I)^-1 y_s``: (N_t, K) predictions for features ``feat_t`` (N_t, D)
    from the support features ``feat_s`` (N_s, D) and targets ``y_s`` (N_s, K)."""
    w = krr_solve(feat_s @ feat_s.T, y_s, reg)
    return (feat_t @ feat_s.T) @ w


@torch.no_grad()
def features(net: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """``net.embed`` of ``x`` in eval mode, float32, in chunks of ``batch_size``."""
    net.eval()
    device = next(net.parameters()).device
    out = [net.embed(x[i : i + batch_size].to(device)).float()
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


@torch.no_grad()
def krr_accuracy(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    test: RealDataset,
    *,
    flip: bool = False,
    reg: float = REG,
    batch_size: int = 500,
) -> float:
    """Test accuracy (%) of the KRR predictor with ``net``'s features (float32, eval mode).

    The support set is ``images`` with ``labels`` (soft labels as stored, hard labels as centred
    one-hot targets), plus their horizontal flips when ``flip`` (as FRePo does for the datasets it
    distils with flips).
    """
    from datadistill.evaluate.frepo_train import regression_targets

    device = next(net.parameters()).device
    y = regression_targets(labels.to(device), test.num_classes)
    x = images.to(device)
    if flip:
        x, y = torch.cat([x, x.flip(-1)]), torch.cat([y, y])
    f_s = features(net, x, batch_size)
    w = krr_solve(f_s @ f_s.T, y, reg)
    correct = 0
    for i in range(0, len(test), batch_size):
        f_t = features(net, test.images[i : i + batch_size], batch_size)
        pred = (f_t @ f_s.T) @ w
        correct += int((pred.argmax(1) == test.labels[i : i + batch_size].to(device)).sum())
    return 100.0 * correct / len(test)
