"""FRePo: neural Feature Regression with Pooling (Zhou, Nezhadarya, Ba, "Dataset Distillation using
Neural Feature Regression", NeurIPS 2022; JAX code yongchaoz/FRePo, ``lib/datadistillation/
frepo.py`` and ``script/distill.py``), in PyTorch.

What is learned: the synthetic images AND their labels. Labels start as ``onehot - 1/K`` divided
by ``sqrt(K / 10)`` (``init_proto(..., scale_y=True)``); the targets of real images are centred
one-hot, ``onehot - 1/K``.

Each step (``proto_train_step`` + the pool update of ``proto_train_and_evaluate``):

1. pick one network of the model pool uniformly at random;
2. features (the flattened last conv map, eval mode) ``F_t`` of a random real batch (no gradient;
   may run in bf16) and ``F_s`` of the synthetic set (float32, differentiable); for colour data
   FRePo appends the horizontally flipped synthetic images (``use_flip``, preset key ``flip``);
3. kernel ridge regression: ``pred = F_t F_s^T (F_s F_s^T + lambda I)^-1 Y_s`` with
   ``lambda = 1e-6 * trace(F_s F_s^T) / N_s`` (:mod:`datadistill.evaluate.krr`); loss = mean over
   the real batch of ``0.5 * ||pred - y||^2`` plus the label-margin term ``lb_margin_th``:
   ``-mean_i min(top1(y_i) - top2(y_i), 1/K)`` over the synthetic labels (weight 1), which only
   acts when a learned label's margin falls below ``1/K``;
4. one optimiser step on images and labels: FRePo uses LAMB (optax), lr 3e-4, cosine decay to
   0.1x over the run (:class:`Lamb` here, see below);
5. the network used takes one Adam step (lr 3e-4, MSE, train mode) on (up to 1000 of) the current
   synthetic images and labels, or is re-initialised once it has taken ``online_steps`` (K = 100)
   steps. The pool (10 networks of FRePo's ConvNet with batch norm, ``frepo-convnet-bn``) starts
   with staggered ages ``(K // pool_size) * i`` so that the networks are re-initialised at
   different times.

LAMB is not in PyTorch; :class:`Lamb` implements optax's ``lamb`` (Adam moments with bias
correction, eps 1e-6 outside the square root, optional weight decay, then each parameter tensor's
update scaled by the trust ratio ``||p|| / ||u||``), so the images (one tensor) and the labels
(another) each get one trust ratio, as in FRePo where they are the two leaves of the parameter
tree. ``optimizer: adam`` switches to plain Adam.

Crucial-sample selection + ISA (``--strategy isa``) plugs in through ``sample_policy``: the KRR
residuals of the real batch and their features go to ``sample_policy.regression_loss`` instead of
the plain mean squared error (:mod:`datadistill.strategies.isa`).

Deviations from the JAX code, none in what is optimised: the random choices (network, batches)
come from one seeded ``torch.Generator`` (FRePo draws the pool index from NumPy's unseeded global
RNG); a network is re-initialised after exactly ``online_steps`` steps (FRePo: when its step
counter exceeds it, i.e. after K + 1); the real batch is drawn without replacement per step rather
than by cycling through a shuffled epoch; the ridge system is solved in float64 (FRePo: float32
Cholesky), see :func:`datadistill.evaluate.krr.krr_solve`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datadistill.data import RealDataset
from datadistill.errors import ConfigError
from datadistill.evaluate.frepo_train import step_loss_function
from datadistill.evaluate.krr import krr_solve
from datadistill.evaluate.train import build_network
from datadistill.methods.base import (
    METHODS,
    Checkpointer,
    Distiller,
    StepCallback,
    check_ipc,
    cosine_lr,
    step_loop,
)
from datadistill.methods.dm import embed_function, init_synthetic, real_embedder
from datadistill.synthetic import SyntheticSet
from datadistill.utils import make_generator, resolve_device


# ---------------------------------------------------------------------------------- the objective
def centred_onehot(labels: Tensor, num_classes: int) -> Tensor:
    """Real targets: ``onehot - 1/K`` (N, K) float32."""
    return F.one_hot(labels, num_classes).float() - 1.0 / num_classes


def init_labels(labels: Tensor, num_classes: int) -> Tensor:
    """FRePo's initial learned labels: ``(onehot - 1/K) / sqrt(K / 10)``."""
    return centred_onehot(labels, num_classes) / math.sqrt(num_classes / 10)


def label_margin_loss(y: Tensor) -> Tensor:
    """FRePo's ``lb_margin_th``: ``-mean_i min(top1(y_i) - top2(y_i), 1/K)`` for labels (N, K)."""
    top = y.topk(2, dim=1).values
    return -torch.clamp(top[:, 0] - top[:, 1], max=1.0 / y.shape[1]).mean()


def krr_residual(feat_t: Tensor, y_t: Tensor, feat_s: Tensor, y_s: Tensor,
                 reg: float = 1e-6) -> Tensor:
    """``K_ts (K_ss + lambda I)^-1 Y_s - y_t``: (N_t, K) residuals of the real batch."""
    w = krr_solve(feat_s @ feat_s.T, y_s, reg)
    return (feat_t @ feat_s.T) @ w - y_t


def mse_loss(residual: Tensor) -> Tensor:
    """FRePo's ``mean_squared_loss``: ``0.5 * sum over classes``, mean over samples."""
    return 0.5 * residual.pow(2).sum(1).mean()


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """No gradients for ``net``'s parameters inside the block (backward skips the weight
    gradients, a third of the synthetic pass); restored afterwards."""
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# ---------------------------------------------------------------------------------- LAMB
class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., ICLR 2020) with optax's arithmetic (``optax.lamb``).

    Per parameter tensor ``p`` with gradient ``g`` at step ``t``::

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * p
        p = p - lr * (||p|| / ||u||) * u          (ratio 1 when ||p|| or ||u|| is 0)
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"invalid LAMB hyperparameters lr={lr} betas={betas} eps={eps} "
                              f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    u = u + group["weight_decay"] * p
                pn, un = p.norm(), u.norm()
                ratio = torch.where((pn > 0) & (un > 0), pn / un, torch.ones_like(pn))
                p.sub_(group["lr"] * ratio * u)
        return loss


# ---------------------------------------------------------------------------------- the pool
class ModelPool:
    """FRePo's pool of online networks.

    ``size`` networks made by ``make_net(seed)`` with staggered ages ``(max_age // size) * i``;
    :meth:`advance` gives network ``i`` one Adam step (lr ``lr``, MSE, train mode) on up to
    ``batch`` synthetic images, or re-initialises it (fresh weights, fresh Adam, age 0) once it has
    taken ``max_age`` steps.
    """

    def __init__(self, make_net: Callable[[int], nn.Module], size: int, max_age: int, lr: float,
                 batch: int, loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor],
                 generator: torch.Generator) -> None:
        if size < 1 or max_age < 1 or batch < 1:
            raise ConfigError(f"pool_size, online_steps and online_batch must be >= 1, got "
                              f"{size}, {max_age}, {batch}")
        self.make_net, self.max_age, self.lr, self.batch = make_net, max_age, lr, batch
        self.loss_fn = loss_fn
        self.nets: list[nn.Module] = []
        self.opts: list[torch.optim.Optimizer] = []
        self.ages: list[int] = []
        for i in range(size):
            net = make_net(self._seed(generator))
            self.nets.append(net)
            self.opts.append(torch.optim.Adam(net.parameters(), lr=lr))
            self.ages.append((max_age // size) * i)
        self.resets = 0

    @staticmethod
    def _seed(generator: torch.Generator) -> int:
        return int(torch.randint(2**31, (1,), generator=generator))

    def __len__(self) -> int:
        return len(self.nets)

    def pick(self, generator: torch.Generator) -> int:
        """A uniformly random index."""
        return int(torch.randint(len(self.nets), (1,), generator=generator))

    def advance(self, i: int, x: Tensor, y: Tensor, generator: torch.Generator) -> bool:
        """One online step of network ``i`` on images ``x`` and targets ``y`` (no gradient to
        them), or its re-initialisation when it is ``max_age`` steps old. True if re-initialised."""
        if self.ages[i] >= self.max_age:
            net = self.make_net(self._seed(generator))
            self.nets[i] = net
            self.opts[i] = torch.optim.Adam(net.parameters(), lr=self.lr)
            self.ages[i] = 0
            self.resets += 1
            return True
        if x.shape[0] > self.batch:
            idx = torch.randperm(x.shape[0], generator=generator)[: self.batch].to(x.device)
            x, y = x[idx], y[idx]
        net, opt = self.nets[i], self.opts[i]
        net.train()
        loss = self.loss_fn(net, x.detach(), y.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.ages[i] += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser states, ages and reset count of every network (for checkpoints)."""
        return {"nets": [n.state_dict() for n in self.nets],
                "opts": [o.state_dict() for o in self.opts],
                "ages": list(self.ages), "resets": self.resets}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; ConfigError for a pool of another size."""
        if len(state["nets"]) != len(self.nets):
            raise ConfigError("the checkpoint's model pool has another size")
        for net, opt, sn, so in zip(self.nets, self.opts, state["nets"], state["opts"], strict=True):
            net.load_state_dict(sn)
            opt.load_state_dict(so)
        self.ages = [int(a) for a in state["ages"]]
        self.resets = int(state["resets"])


# ---------------------------------------------------------------------------------- the method
@METHODS.register("frepo", help="FRePo: neural feature regression with a model pool (NeurIPS 2022)")
class FRePo(Distiller):
    """Neural Feature Regression with Pooling; hyperparameters in ``presets/frepo.yaml``."""

    name = "frepo"
    description = "FRePo: kernel ridge regression on the features of a pool of online networks"
    supports_sample_policy = True  # sample_policy.regression_loss (strategies/isa.py)
    default_protocol = "frepo"

    def distill(
        self,
        real: RealDataset,
        ipc: int,
        *,
        seed: int = 0,
        device: torch.device | None = None,
        checkpoint: Path | None = None,
        resume: bool = False,
        progress: bool = True,
        callbacks: tuple[StepCallback, ...] = (),
    ) -> SyntheticSet:
        check_ipc(real, ipc)
        if self.cfg("zca") and real.preprocessing.zca is None:
            raise ConfigError(
                f"frepo's preset whitens {real.name} with ZCA (as FRePo does for colour data): "
                f"load it with load_dataset({real.name!r}, zca=True) (CLI: --zca), or set zca=false"
            )
        t0 = time.perf_counter()
        device = resolve_device(device)
        real_dev = real.to(device) if real.device != device else real
        k = real.num_classes
        n_real = len(real)
        batch_real = min(int(self.cfg("batch_real")), n_real)
        steps = int(self.cfg("steps"))
        lr, lr_final = float(self.cfg("lr")), self.lr_final()
        reg, margin_w = float(self.cfg("reg")), float(self.cfg("label_margin"))
        flip, learn_labels = bool(self.cfg("flip")), bool(self.cfg("learn_labels"))
        precision, compile = str(self.cfg("precision")), bool(self.cfg("compile"))
        gen = make_generator(seed)

        x0, y0 = init_synthetic(real, ipc, self.cfg("init"), gen)
        syn_x = x0.to(device).requires_grad_(True)
        syn_y = init_labels(y0, k).to(device).requires_grad_(learn_labels)
        params = [syn_x, syn_y] if learn_labels else [syn_x]
        opt_name = self.cfg("optimizer")
        if opt_name == "lamb":
            opt: torch.optim.Optimizer = Lamb(params, lr=lr)
        elif opt_name == "adam":
            opt = torch.optim.Adam(params, lr=lr)
        else:
            raise ConfigError(f"frepo: optimizer must be 'lamb' or 'adam', got {opt_name!r}")
        targets = centred_onehot(real_dev.labels, k)

        net_name = self.cfg("net")

        def make_net(net_seed: int) -> nn.Module:
            return build_network(net_name, real.channels, k, real.im_size, net_seed, device)

        pool = ModelPool(make_net, int(self.cfg("pool_size")), int(self.cfg("online_steps")),
                         float(self.cfg("online_lr")), int(self.cfg("online_batch")),
                         step_loss_function(device, precision, "mse", compile), gen)
        embed_real = real_embedder(device, precision, compile)
        embed_syn = embed_function(compile)  # float32: gradients reach the images

        ckpt = Checkpointer(checkpoint, self.cfg("checkpoint_every"))
        fingerprint = self.run_fingerprint(real, ipc, seed)
        start = 0
        saved = (ckpt.restore(fingerprint, {"images": syn_x, "labels": syn_y}, opt, gen)
                 if resume else None)
        if saved is not None:
            pool.load_state_dict(saved["pool"])
            start = int(saved["step"])
            t0 -= float(saved["wall"])

        def step(it: int) -> float:
            i = pool.pick(gen)
            net = pool.nets[i]
            idx = torch.randperm(n_real, generator=gen)[:batch_real].to(device)
            net.eval()  # FRePo's features: train=False (batch norm with running statistics)
            f_t = embed_real(net, real_dev.images[idx])
            xs, ys = syn_x, syn_y
            if flip:
                xs, ys = torch.cat([xs, xs.flip(-1)]), torch.cat([ys, ys])
            with frozen(net):  # the meta-gradient reaches the images and labels, not the weights
                f_s = embed_syn(net, xs)
                residual = krr_residual(f_t, targets[idx], f_s, ys, reg)
                policy = self.sample_policy
                loss = (mse_loss(residual) if policy is None
                        else policy.regression_loss(residual, f_t))
                if margin_w:
                    loss = loss + margin_w * label_margin_loss(syn_y)
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(lr, it - 1, steps, lr_final)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            pool.advance(i, syn_x.detach(), syn_y.detach(), gen)
            return float(loss.detach())

        def synset() -> SyntheticSet:
            return self.make_synset(syn_x.detach(), syn_y.detach(), real, ipc, seed,
                                    time.perf_counter() - t0,
                                    extra={"pool_resets": pool.resets})

        def state(it: int) -> dict:
            return ckpt.snapshot(fingerprint, it, {"images": syn_x, "labels": syn_y}, opt, gen,
                                 time.perf_counter() - t0, pool=pool.state_dict())

        step_loop(steps, start, step, desc=f"frepo ipc={ipc}", progress=progress,
                  checkpointer=ckpt, state_fn=state, callbacks=callbacks, synset_fn=synset)
        return synset()
