"""DC and DSA: dataset condensation by gradient matching.

Sources: Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021 (DC,
Algorithm 1 and Eq. 10 for the layer-wise distance); Zhao & Bilen, "Dataset Condensation with
Differentiable Siamese Augmentation", ICML 2021 (DSA); original code ``main.py`` and ``utils.py``
(``match_loss``, ``distance_wb``, ``get_loops``) of VICO-UoE/DatasetCondensation.

Each iteration draws a fresh randomly initialised network. For each of ``outer_loop`` steps: per
class c, the gradient of the cross-entropy w.r.t. the network weights on ``batch_real`` real
images of c and on the synthetic images of c; the loss is the sum over classes of the layer-wise
distance (:func:`match_distance`); one SGD step on the images. Between outer steps the network is
trained ``inner_loop`` epochs on the synthetic set. DSA applies one siamese augmentation draw per
class to the real and synthetic batch when matching and per-sample DSA when training the network.
The options ``precision`` and ``compile`` (bf16 autocast, ``torch.compile``) apply to the passes
that carry no gradient to the images: the real side's per-class gradients and this training;
``syn_precision`` to the synthetic side (its forward and the double backward to the images).

The module is split so that strategies can reuse the objective without the loop:

* :func:`per_class_gradients` - gradients of each class's mean CE, all classes in one
  ``torch.func.vmap`` call (exact for per-sample networks: instance / group / layer / no norm);
  a per-class loop for BatchNorm networks or ``vectorize=False``;
* :func:`match_distance` - the distances of DC (rows, 1 - cosine), and IDC (L1, MSE);
* :func:`gradient_match_loss` - the per-step matching OBJECTIVE of a network, a real batch per
  class and a synthetic batch per class;
* :func:`segment_match_loss` - the sequential strategy's regulariser (classes with different
  image counts);
* :class:`GradientMatching` - the LOOP (networks, batches, augmentation, optimisers).

Sequential segments (``segment=SegmentContext``, strategy ``sequential``): the new segment's
images match the current real pool (the ``real`` argument) as above; the network trained between
outer steps trains on the frozen earlier segments plus the new images; the regulariser adds
``reg_weight * gradient_match_loss(net, dropped real images of c, frozen + new images of c)``
summed over the classes with dropped images, with the same network and the same per-class DSA
draw as the main loss; with a trained network state, a fraction ``trained_net_fraction`` of the
iterations' networks start from it instead of a fresh random initialisation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datadistill.augment import DSA, default_strategy
from datadistill.data import RealDataset
from datadistill.errors import ConfigError
from datadistill.evaluate.train import autocast, build_network, loss_function
from datadistill.methods.base import (
    METHODS,
    Checkpointer,
    Distiller,
    SegmentContext,
    StepCallback,
    check_ipc,
    step_loop,
)
from datadistill.methods.dm import SegmentTerms, init_synthetic, sample_upto
from datadistill.synthetic import SyntheticSet
from datadistill.utils import compiled, make_generator, resolve_device

#: (outer_loop, inner_loop) by IPC, ``get_loops`` of the original code.
LOOPS: dict[int, tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20),
                                     40: (40, 15), 50: (50, 10)}
METRICS = ("cos", "l1", "mse")


def get_loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for ``ipc``: the original table (:data:`LOOPS`); an IPC that the
    table lacks (the original exits) takes the entry of the nearest tabulated IPC (ties: larger)."""
    if ipc in LOOPS:
        return LOOPS[ipc]
    nearest = min(LOOPS, key=lambda k: (abs(k - ipc), -k))
    return LOOPS[nearest]


# ------------------------------------------------------------------------------ distances


def layer_distance(g_real: Tensor, g_syn: Tensor, metric: str = "cos", *,
                   batched: bool = False) -> Tensor:
    """Distance between the gradients of ONE parameter tensor.

    Args:
        g_real, g_syn: gradients of the same shape ``(*P)``, or ``(K, *P)`` with ``batched=True``
            (one gradient per class; the result is then summed over classes).
        metric: ``"cos"``: DC's ``distance_wb``: the gradient is reshaped to rows (conv
            ``(o, i*h*w)``, linear ``(o, i)``) and the result is ``sum over rows of 1 - cos``
            (with the original's 1e-6 in the denominator); 1-D parameters (biases, norm
            affine) give 0. ``"l1"``: ``sum |g_real - g_syn|``; ``"mse"``: ``sum (g_real -
            g_syn)^2`` (IDC's ``dist``).

    Returns:
        0-d tensor (float32), differentiable w.r.t. ``g_syn``.

    Raises:
        ConfigError: an unknown metric or mismatched shapes.
    """
    if g_real.shape != g_syn.shape:
        raise ConfigError(f"gradient shapes differ: {tuple(g_real.shape)} vs {tuple(g_syn.shape)}")
    ndim = g_real.dim() - (1 if batched else 0)
    if metric == "cos":
        if ndim <= 1:
            return g_syn.new_zeros(())
        lead = g_real.shape[0] * g_real.shape[1] if batched else g_real.shape[0]
        r, s = g_real.reshape(lead, -1), g_syn.reshape(lead, -1)
        cos = (r * s).sum(-1) / (r.norm(dim=-1) * s.norm(dim=-1) + 1e-6)
        return (1 - cos).sum()
    if metric == "l1":
        return (g_real - g_syn).abs().sum()
    if metric == "mse":
        return (g_real - g_syn).pow(2).sum()
    raise ConfigError(f"unknown gradient distance {metric!r}; valid: {', '.join(METRICS)}")


def _is_matched(ndim: int, conv_only: bool) -> bool:
    """The one rule for which parameters the distance compares, by their number of dimensions:
    weights of 2+ dimensions, only 4-D (convolution) ones with ``conv_only``."""
    return ndim > 1 and (ndim == 4 or not conv_only)


def match_distance(grads_real: Sequence[Tensor], grads_syn: Sequence[Tensor], metric: str = "cos",
                   *, conv_only: bool = False, batched: bool = False) -> Tensor:
    """Sum of :func:`layer_distance` over the parameters of a network.

    1-D parameters (biases, normalisation affine) never contribute (DC returns 0 for them; IDC
    runs with ``bias=False``). ``conv_only`` keeps only 4-D (convolution) weights (IDC's
    ``fc=False``). Lists are aligned with ``net.parameters()``; with ``batched`` every tensor has
    a leading class dimension K and the result is summed over classes.
    """
    if len(grads_real) != len(grads_syn):
        raise ConfigError(f"{len(grads_real)} real but {len(grads_syn)} synthetic gradients")
    off = 1 if batched else 0
    total = grads_syn[0].new_zeros(())
    for gr, gs in zip(grads_real, grads_syn, strict=True):
        if not _is_matched(gr.dim() - off, conv_only):
            continue
        total = total + layer_distance(gr, gs, metric, batched=batched)
    return total


# ------------------------------------------------------------------------------ per-class gradients


def has_batchnorm(net: nn.Module) -> bool:
    """True when ``net`` holds a BatchNorm layer (not per-sample in train mode)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@torch.no_grad()
def freeze_bn_statistics(net: nn.Module, x_real: Tensor) -> None:
    """DC's BatchNorm handling: one train-mode forward of a real batch (``x_real``: 16 images
    per class in the original) sets the running statistics (momentum 0.1 update, as the original
    forward does), then every BatchNorm layer goes to eval mode, so the matching forward passes
    use these frozen statistics. The next ``net.train()`` (network training) undoes the freeze."""
    net.train()
    net(x_real)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _at_least_fp32(t: Tensor) -> Tensor:
    """bf16 autocast outputs -> float32; float32 / float64 unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def resolve_vectorize(value: bool | str, device: torch.device) -> bool:
    """The ``vectorize`` option: ``True`` / ``False``, or ``"auto"`` = vmap the per-class
    gradients on CUDA, loop on a CPU. On the quiet 2-core CPUs the plain loop was never slower
    (``benchmarks/bench_gm_speed.py``, BENCHMARKS.md): the whole outer step with the synthetic
    side vmapped ran 0.89x (DC) / 0.78x (IDC) as fast as the loop on an AVX2 EPYC, 0.98x /
    0.56x on an AVX-512 EPYC with native bf16; only an AMX Xeon under heavy shared load read
    faster (0.95x / 1.62x), and the same Xeon quiet gave 0.33x / 0.36x with both sides
    vmapped (2026-12-06).

    Raises ConfigError for any other value."""
    if isinstance(value, bool):
        return value
    if value != "auto":
        raise ConfigError(f"vectorize must be true, false or auto, got {value!r}")
    return device.type == "cuda"


def _forward(net: nn.Module, x: Tensor) -> Tensor:
    return net(x)


def matched_parameter_names(net: nn.Module, conv_only: bool = False) -> list[str]:
    """Names of the parameters :func:`match_distance` compares, in ``net.named_parameters()``
    order: every weight of 2 or more dimensions, only the 4-D (convolution) ones with
    ``conv_only``. Differentiating just these gives the same loss with a smaller graph (IDC
    step 1.04x, ``benchmarks/profile_gm_step.py``)."""
    return [name for name, p in net.named_parameters() if _is_matched(p.dim(), conv_only)]


def per_class_gradients(net: nn.Module, x: Tensor, classes: Tensor, *, create_graph: bool,
                        vectorize: bool = True, precision: str = "fp32",
                        compile: bool = False, names: Sequence[str] | None = None) -> list[Tensor]:
    """Gradient of each class's mean cross-entropy w.r.t. the parameters of ``net``.

    Args:
        net: the network (its current train/eval mode is used as is).
        x: ``(K, n, C, H, W)`` float32: n images of each of K classes (model-input space).
        classes: ``(K,)`` int64, the label of each group.
        create_graph: keep the graph so the gradients are differentiable w.r.t. ``x`` (the
            synthetic side); False for the real side (returned tensors are detached).
        vectorize: all classes in one ``vmap(grad(...))`` call; BatchNorm networks always use
            the per-class loop (their train-mode statistics couple the samples of a batch).
        precision: ``"bf16"`` runs the forward under autocast (with ``create_graph``, the
            double backward to ``x`` then runs in bf16 too); ``"auto"`` / ``"fp32"`` as in
            :func:`datadistill.evaluate.train.autocast`.
        compile: run the per-class loop's forward (and so its backward) through
            ``torch.compile`` (one graph per architecture, shared by every fresh network; eager
            if compilation fails). Only without ``create_graph``: compiled graphs cannot be
            differentiated twice. Ignored by the vmapped path.
        names: the parameters to differentiate (e.g. :func:`matched_parameter_names`); all of
            them when None. Raises ConfigError for a name ``net`` does not have.

    Returns:
        one tensor ``(K, *p.shape)`` float32 per parameter in ``names``, in their order
        (``net.parameters()`` order when ``names`` is None).
    """
    k, n = x.shape[:2]
    targets = classes.view(k, 1).expand(k, n)
    all_params = dict(net.named_parameters())
    names = list(all_params) if names is None else list(names)
    if unknown := sorted(set(names) - set(all_params)):
        raise ConfigError(f"the network has no parameter(s) {unknown}")
    if vectorize and not has_batchnorm(net):
        from torch.func import functional_call, grad, vmap

        wrt = {name: all_params[name].detach() for name in names}
        fixed = {name: p.detach() for name, p in all_params.items() if name not in wrt}
        buffers = dict(net.named_buffers())

        def class_loss(p: dict[str, Tensor], xc: Tensor, yc: Tensor) -> Tensor:
            with autocast(xc.device, precision):
                out = functional_call(net, ({**fixed, **p}, buffers), (xc,))
            return F.cross_entropy(_at_least_fp32(out), yc)

        grads = vmap(grad(class_loss), in_dims=(None, 0, 0))(wrt, x, targets)
        out = [grads[name] for name in names]
        return out if create_graph else [g.detach() for g in out]
    if compile and create_graph:
        raise ConfigError("compiled per-class gradients cannot keep the graph (double backward)")
    forward = compiled("gm_forward", _forward) if compile else _forward
    params_list = [all_params[name] for name in names]
    per_class: list[tuple[Tensor, ...]] = []
    for c in range(k):
        with autocast(x.device, precision):
            logits = forward(net, x[c])
        loss = F.cross_entropy(_at_least_fp32(logits), targets[c])
        g = torch.autograd.grad(loss, params_list, create_graph=create_graph)
        per_class.append(g if create_graph else tuple(t.detach() for t in g))
    return [torch.stack([pc[i] for pc in per_class]) for i in range(len(names))]


def gradient_match_loss(net: nn.Module, x_real: Tensor, x_syn: Tensor, classes: Tensor, *,
                        metric: str = "cos", conv_only: bool = False, vectorize: bool = True,
                        real_precision: str = "fp32", vectorize_real: bool | None = None,
                        compile_real: bool = False, syn_precision: str = "fp32") -> Tensor:
    """The gradient-matching objective of one step (DC Eq. 10 summed over classes; IDC's
    ``matchloss`` summed over classes).

    Args:
        net: the matching network (its parameters are not updated here).
        x_real: ``(K, n_real, C, H, W)`` real images per class (constant).
        x_syn: ``(K, n_syn, C, H, W)`` synthetic images per class (usually requires grad).
        classes: ``(K,)`` int64 labels of the K groups.
        metric, conv_only: see :func:`match_distance`.
        real_precision: precision of the real-gradient pass (no gradient reaches the images).
        vectorize: vmap the synthetic side (the double backward; 3x faster than the loop even
            on a 2-core CPU, ``benchmarks/bench_gm_speed.py``).
        vectorize_real: vmap the real side too; ``None`` = ``vectorize`` except on the CPU,
            where vmap's batched weight-gradient rule measured no faster than the per-class
            loop in fp32 and slower under bf16 autocast (the loop gains 1.9x from bf16/AMX).
        compile_real: compile the real side's per-class loop (see :func:`per_class_gradients`).
        syn_precision: precision of the synthetic side's forward, and so of its double
            backward to the images (``"fp32"`` unless measured harmless).

    Returns:
        0-d float32 loss, differentiable w.r.t. ``x_syn``.
    """
    if vectorize_real is None:
        vectorize_real = vectorize and x_real.device.type != "cpu"
    names = matched_parameter_names(net, conv_only)  # the others never enter the distance
    g_real = per_class_gradients(net, x_real, classes, create_graph=False,
                                 vectorize=vectorize_real, precision=real_precision,
                                 compile=compile_real, names=names)
    g_syn = per_class_gradients(net, x_syn, classes, create_graph=True, vectorize=vectorize,
                                precision=syn_precision, names=names)
    return match_distance(g_real, g_syn, metric, conv_only=conv_only, batched=True)


def segment_match_loss(net: nn.Module, x_drop: Tensor, y_drop: Tensor, x_syn: Tensor, y_syn: Tensor,
                       num_classes: int, *, metric: str = "cos", conv_only: bool = False,
                       vectorize: bool = True, real_precision: str = "fp32",
                       compile_real: bool = False, syn_precision: str = "fp32") -> Tensor:
    """The sequential regulariser for gradient matching: the sum, over the classes that have
    both dropped real and synthetic images, of :func:`gradient_match_loss` between the dropped
    images of the class and ALL its synthetic images so far (frozen + new).

    Classes may hold different numbers of images (the dropped pool is uneven); classes with the
    same (dropped, synthetic) counts share one vmapped call, so the usual balanced case is a
    single call.

    Args:
        net: the matching network.
        x_drop: (N_d, C, H, W) dropped real images (constant), labels ``y_drop`` (N_d,) int64.
        x_syn: (N_s, C, H, W) synthetic images (frozen + new; the new ones usually require
            grad), labels ``y_syn`` (N_s,) int64.
        num_classes: K; labels lie in [0, K).
        metric, conv_only, vectorize, real_precision, compile_real, syn_precision: as in
            :func:`gradient_match_loss`.

    Returns:
        0-d float32 loss (0 when no class has both kinds of images), differentiable w.r.t.
        ``x_syn``.
    """
    nd = torch.bincount(y_drop, minlength=num_classes).tolist()
    ns = torch.bincount(y_syn, minlength=num_classes).tolist()
    groups: dict[tuple[int, int], list[int]] = {}
    for c in range(num_classes):
        if nd[c] > 0 and ns[c] > 0:
            groups.setdefault((nd[c], ns[c]), []).append(c)
    total = x_syn.new_zeros((), dtype=torch.float32)
    for cs in groups.values():
        xd = torch.stack([x_drop[y_drop == c] for c in cs])
        xs = torch.stack([x_syn[y_syn == c] for c in cs])
        total = total + gradient_match_loss(
            net, xd, xs, torch.tensor(cs, device=x_syn.device), metric=metric,
            conv_only=conv_only, vectorize=vectorize, real_precision=real_precision,
            compile_real=compile_real, syn_precision=syn_precision)
    return total


def upto_per_class(labels: Tensor, n: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """Indices (class-major, int64 on ``labels``' device) of at most ``n`` random samples of every
    class in ``labels`` (N,) int64; a class with at most ``n`` keeps all of its samples in order."""
    out = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel() > n:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:n].to(idx.device)]
        out.append(idx)
    return torch.cat(out)


def train_on_batches(net: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
                     epochs: int, batch_size: int, gen: torch.Generator,
                     dsa: DSA | None, precision: str = "fp32", compile: bool = False) -> None:
    """``epochs`` shuffled passes of CE training of ``net`` on ``x`` (N, C, H, W), ``y`` (N,)
    (DC's ``epoch('train', ...)``; per-sample DSA when ``dsa`` is given), with the evaluation
    trainer's loss (``precision`` / ``compile`` as in ``evaluate.train.loss_function``)."""
    net.train()
    n = x.shape[0]
    loss_fn = loss_function(x.device, precision, compile)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(x.device)
        for i in range(0, n, batch_size):
            idx = perm[i: i + batch_size]
            xb = x[idx] if dsa is None else dsa(x[idx], gen)
            loss = loss_fn(net, xb, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


# ------------------------------------------------------------------------------ the loop


class GradientMatching(Distiller):
    """DC / DSA gradient matching; hyperparameters in ``presets/dc.yaml`` / ``presets/dsa.yaml``.

    Supports sequential segments (``segment=SegmentContext``; see the module docstring): the
    frozen earlier segments are not optimised but belong to the synthetic set the network trains
    on between outer steps and to the regulariser's synthetic side.
    """

    name = "dc"
    description = "Dataset Condensation with gradient matching (Zhao et al., ICLR 2021)"
    use_dsa = False
    supports_segments = True

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
        segment: SegmentContext | None = None,
    ) -> SyntheticSet:
        """See :meth:`Distiller.distill`. Returns only the new images (``ipc`` per class).

        Raises:
            ConfigError: bad IPC or hyperparameters; a segment whose frozen images or network
                state do not fit ``real`` / ``net``.
        """
        check_ipc(real, ipc)
        t0 = time.perf_counter()
        device = resolve_device(device)
        real_dev = real.to(device) if real.device != device else real
        k = real.num_classes
        seg = SegmentTerms(segment, real, device) if segment is not None else None
        if seg is not None:
            fx, fy = seg.frozen_x, seg.frozen_y
        else:
            fx = torch.zeros(0, *real.image_shape, device=device)
            fy = torch.zeros(0, dtype=torch.long, device=device)
        batch_real = min(int(self.cfg("batch_real")), int(real.class_counts().min()))
        outer, inner = get_loops(ipc)
        outer = int(self.config.get("outer_loop") or outer)
        inner = int(self.config.get("inner_loop") or inner)
        steps = int(self.cfg("steps"))
        metric = self.cfg("metric")
        vectorize = resolve_vectorize(self.cfg("vectorize"), device)
        precision = self.cfg("precision")
        syn_precision = self.cfg("syn_precision")
        use_compile = bool(self.cfg("compile"))  # real-gradient pass and inner-loop training
        gen = make_generator(seed)
        syn_x, syn_y = init_synthetic(real, ipc, self.cfg("init"), gen)
        initial = syn_x.detach().clone().cpu()  # for the update-signal diagnostic (images - initial)
        syn_x = syn_x.to(device).requires_grad_(True)
        syn_y = syn_y.to(device)
        opt = torch.optim.SGD([syn_x], lr=float(self.cfg("lr_img")),
                              momentum=float(self.cfg("momentum")))
        strategy = default_strategy(real.name)
        dsa = DSA(strategy) if self.use_dsa else None
        net_name = self.cfg("net")
        classes = torch.arange(k, device=device)
        real_labels = classes.repeat_interleave(batch_real)
        bn_batch = min(int(self.cfg("bn_batch")), int(real.class_counts().min()))

        ckpt = Checkpointer(checkpoint, self.cfg("checkpoint_every"))
        fingerprint = self.run_fingerprint(real, ipc, seed, segment)
        start = 0
        saved = ckpt.restore(fingerprint, {"images": syn_x}, opt, gen) if resume else None
        if saved is not None:
            start = int(saved["step"])
            initial = saved.get("initial", initial)
            t0 -= float(saved["wall"])

        def step(it: int) -> float:
            net = build_network(net_name, real.channels, k, real.im_size,
                                int(torch.randint(2**31, (1,), generator=gen)), device)
            if seg is not None:
                seg.maybe_load_trained(net, gen)
            net.train()
            opt_net = torch.optim.SGD(net.parameters(), lr=float(self.cfg("lr_net")),
                                      momentum=float(self.cfg("net_momentum")))
            bn = has_batchnorm(net)
            # inactive (weight 0 / nothing dropped / nothing frozen): no extra random draws, so
            # the run equals the one without the regulariser exactly
            reg = seg if seg is not None and seg.active else None
            total = 0.0
            for ol in range(outer):
                if bn:
                    freeze_bn_statistics(net, real_dev.sample_balanced(bn_batch, gen)[0])
                xr, _ = real_dev.sample_balanced(batch_real, gen)
                xs = syn_x
                if reg is not None:  # active implies a non-empty reg_pool
                    xd, yd = sample_upto(reg.reg_pool, batch_real, gen)
                    xf = fx
                    if dsa is not None:  # the regulariser's batches share class c's draw
                        xr, xs, xd, xf = dsa.grouped((xr, xs, xd, xf), (real_labels, syn_y, yd, fy),
                                                     k, gen)
                elif dsa is not None:  # one siamese draw per class
                    xr, xs = dsa.grouped((xr, xs), (real_labels, syn_y), k, gen)
                loss = gradient_match_loss(
                    net, xr.view(k, batch_real, *xr.shape[1:]), xs.view(k, ipc, *xs.shape[1:]),
                    classes, metric=metric, vectorize=vectorize, real_precision=precision,
                    compile_real=use_compile, syn_precision=syn_precision)
                if reg is not None:
                    loss = loss + reg.weight * segment_match_loss(
                        net, xd, yd, torch.cat((xf, xs)), torch.cat((fy, syn_y)), k, metric=metric,
                        vectorize=vectorize, real_precision=precision, compile_real=use_compile,
                        syn_precision=syn_precision)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                if ol == outer - 1:
                    break
                # train the network on the (whole) synthetic set
                x_train = torch.cat([syn_x.detach(), fx])
                y_train = torch.cat([syn_y, fy])
                train_on_batches(net, opt_net, x_train, y_train, inner,
                                 int(self.cfg("batch_train")), gen, dsa, precision, use_compile)
            return total / (outer * k)

        def synset() -> SyntheticSet:
            return self.make_synset(syn_x.detach(), syn_y, real, ipc, seed,
                                    time.perf_counter() - t0,
                                    extra={"outer_loop": outer, "inner_loop": inner},
                                    initial=initial)

        def state(it: int) -> dict:
            return ckpt.snapshot(fingerprint, it, {"images": syn_x}, opt, gen,
                                 time.perf_counter() - t0, initial=initial)

        step_loop(steps, start, step, desc=f"{self.name} ipc={ipc}", progress=progress,
                  checkpointer=ckpt, state_fn=state, callbacks=callbacks, synset_fn=synset)
        return synset()


@METHODS.register("dc", help="Dataset Condensation, gradient matching (Zhao et al., ICLR 2021)")
class DC(GradientMatching):
    """DC: gradient matching without augmentation."""

    name = "dc"
    use_dsa = False


@METHODS.register("dsa", help="DC + differentiable siamese augmentation (Zhao & Bilen, ICML 2021)")
class DSAMatching(GradientMatching):
    """DSA: gradient matching with one siamese DSA draw per class, per-sample DSA for the
    network training between outer steps."""

    name = "dsa"
    description = "Gradient matching with differentiable siamese augmentation (ICML 2021)"
    use_dsa = True
