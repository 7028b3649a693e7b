"""DM: Distribution Matching (Zhao & Bilen, "Dataset Condensation with Distribution Matching",
WACV 2023; original code ``main_DM.py`` of VICO-UoE/DatasetCondensation).

Each iteration samples a fresh randomly initialised ConvNet with frozen weights; for every class
the mean embedding of ``batch_real`` augmented real images is matched to the mean embedding of the
class's synthetic images (the same DSA draw for both); the loss is the sum over classes of the
squared L2 distance; one SGD step (lr 1.0, momentum 0.5) updates the images. ``lr_final`` < 1
decays the image lr along a cosine to ``lr_final * lr_img`` (not in the paper, whose rate is
constant; a knob for short runs at a high rate). ``init: herding`` starts from the real images
that herding picks in random ConvNets' features (:func:`herding_init`; the paper starts from
random real images): what DM matches, chosen greedily before the first step.

Difference from the original loop, not from the algorithm: all classes go through the network in
ONE forward pass (the original loops over classes), with one DSA draw per class (the grouped
siamese mode), and the real-image pass, which carries no gradient, may run in bf16 and compiled.

Sequential segments (``segment=SegmentContext``, strategy ``sequential``): the new segment's
images match the current real pool (the ``real`` argument) as above; the regulariser adds
``reg_weight * sum_c ||mean emb(dropped_c) - mean emb(frozen_c + new_c)||^2`` over the classes
with dropped images, computed in the same network with the same per-class DSA draw; with a
trained network state, a fraction ``trained_net_fraction`` of the steps embeds with the network
trained on the earlier segments instead of a fresh random one (DM's embedding of a random
network is its core, so we mix rather than replace; see ``strategies/sequential.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from datadistill.augment import DSA, default_strategy
from datadistill.data import RealDataset
from datadistill.errors import ConfigError
from datadistill.evaluate.train import autocast, build_network
from datadistill.methods.base import (
    METHODS,
    Checkpointer,
    Distiller,
    SegmentContext,
    StepCallback,
    check_ipc,
    cosine_lr,
    step_loop,
)
from datadistill.methods.coreset import herding
from datadistill.synthetic import SyntheticSet
from datadistill.utils import compiled, make_generator, resolve_device


def _embed_eager(net: torch.nn.Module, x: Tensor) -> Tensor:
    return net.embed(x)


def embed_function(compile: bool) -> Callable[[torch.nn.Module, Tensor], Tensor]:
    """``f(net, x) -> (N, D)`` embeddings, optionally compiled with ``torch.compile`` (one graph
    per architecture and grad mode, shared by every fresh network; compilation fuses the
    norm/ReLU/pooling passes, which dominate on memory-bound CPUs)."""
    return compiled("embed", _embed_eager) if compile else _embed_eager


def _batch_statistics(net: torch.nn.Module) -> bool:
    """Whether ``net``'s output for one image depends on the rest of its batch."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
               for m in net.modules())


def real_embedder(device: torch.device, precision: str, compile: bool, chunk: int | None = None):
    """``f(net, x) -> (N, D) float32`` embeddings without gradient, in ``precision``.

    ``chunk``: images per forward pass (``None``: 64 on a CPU, all at once elsewhere). Without
    a gradient nothing is kept between chunks (a network that normalises by batch statistics,
    BatchNorm in training mode, is never chunked), and on a CPU small chunks stay in cache: the DM
    real pass (2560 images, ConvNet-3, 2-core AVX2 CPU) took 8.3 s in one pass and 5.9 s in
    chunks of 256 eager, 5.4 s and 4.7 s compiled; on a 2-core AMX Xeon (bf16, compiled) 0.84 s
    in chunks of 512, 0.76 s of 256, 0.60 s of 128, 0.38 s of 64 and 0.38 s of 32.
    """
    fn = embed_function(compile)
    if chunk is None:
        chunk = 64 if device.type == "cpu" else 0

    @torch.no_grad()
    def embed(net: torch.nn.Module, x: Tensor) -> Tensor:
        with autocast(device, precision):
            if chunk <= 0 or x.shape[0] <= chunk or _batch_statistics(net):
                return fn(net, x).float()
            return torch.cat([fn(net, part).float() for part in x.split(chunk)])

    return embed


def init_synthetic(
    real: RealDataset, ipc: int, init: str, generator: torch.Generator, *,
    net: str = "convnet", device: torch.device | None = None, precision: str = "fp32",
    compile: bool = False, candidates: int = 1000, nets: int = 4,
) -> tuple[Tensor, Tensor]:
    """Initial synthetic images, class-major: (K*ipc, C, H, W) float32 and labels (K*ipc,).

    ``init="real"``: random distinct real images of each class (the DM paper's init);
    ``"noise"``: N(0, 1) in the model-input space (the original code's ``randn`` init);
    ``"herding"``: :func:`herding_init` (the keyword arguments are used by it alone).

    Raises:
        ConfigError: an unknown ``init``; a class with fewer than ``ipc`` images.
    """
    if init == "real":
        return real.sample_balanced(ipc, generator)
    if init == "noise":
        k = real.num_classes
        x = torch.randn(k * ipc, *real.image_shape, generator=generator)
        return x, torch.arange(k).repeat_interleave(ipc)
    if init == "herding":
        return herding_init(real, ipc, generator, net=net, device=resolve_device(device),
                            precision=precision, compile=compile, candidates=candidates,
                            nets=nets)
    raise ConfigError(f"init must be 'real', 'noise' or 'herding', got {init!r}")


def herding_init(
    real: RealDataset, ipc: int, generator: torch.Generator, *, net: str, device: torch.device,
    precision: str, compile: bool, candidates: int, nets: int,
) -> tuple[Tensor, Tensor]:
    """Real images chosen by herding in the embedding space of ``nets`` random frozen networks.

    Per class, ``candidates`` random real images (all of a smaller class) are embedded by
    ``nets`` freshly initialised ``net``s (the networks DM draws each iteration; their
    embeddings are concatenated, a Monte-Carlo estimate of DM's expected kernel), and herding
    (Welling 2009) picks the ``ipc`` images whose running mean stays closest to the class mean:
    the greedy minimiser of the DM loss over real subsets. Not in the DM paper (random real
    images); costs one no-grad pass of ``K * candidates`` images through each network.

    Returns (K*ipc, C, H, W) float32 on ``real``'s device and labels (K*ipc,) int64, class-major.

    Raises:
        ConfigError: ``candidates`` < ``ipc`` or ``nets`` < 1; a class with fewer than ``ipc``
            images.
    """
    check_ipc(real, ipc)
    if candidates < ipc or nets < 1:
        raise ConfigError(f"herding init needs init_candidates >= ipc ({ipc}) and init_nets >= 1, "
                          f"got {candidates} and {nets}")
    k = real.num_classes
    pools = []
    for pool in real.indices_by_class:
        perm = torch.randperm(pool.numel(), generator=generator, device=generator.device)
        pools.append(pool[perm[:candidates].to(pool.device)])
    embed = real_embedder(device, precision, compile)
    models = [build_network(net, real.channels, k, real.im_size,
                            int(torch.randint(2**31, (1,), generator=generator)), device).train()
              for _ in range(nets)]
    chosen = []
    for cand in pools:  # one class at a time: memory stays one class's
        x = real.images[cand].to(device)  # gathered once, embedded by every network
        feats = torch.cat([embed(m, x) for m in models], 1)
        chosen.append(cand[herding(feats, ipc).to(cand.device)])
    return real.images[torch.cat(chosen)], torch.arange(k).repeat_interleave(ipc)


def dm_loss(emb_real: Tensor, emb_syn: Tensor, num_classes: int) -> Tensor:
    """Sum over classes of ||mean real embedding - mean synthetic embedding||^2.

    Args:
        emb_real: (K*n_real, D) class-major; emb_syn: (K*ipc, D) class-major.
    """
    mr = emb_real.view(num_classes, -1, emb_real.shape[1]).mean(1)
    ms = emb_syn.view(num_classes, -1, emb_syn.shape[1]).mean(1)
    return ((mr - ms) ** 2).sum()


def class_means(emb: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums of ``emb`` (N, D) by ``labels`` (N,) int64 in [0, K): (K, D) float32 sums
    and (K,) float32 counts (classes may have any number of samples, including none)."""
    sums = emb.new_zeros(num_classes, emb.shape[1]).index_add(0, labels, emb)
    counts = torch.bincount(labels, minlength=num_classes).to(emb.dtype)
    return sums, counts


def sample_upto(real: RealDataset, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Up to ``n`` distinct random images of every class (all of a smaller class, none of an
    empty one), class-major: (N, C, H, W) float32 and labels (N,) int64."""
    idx = []
    for pool in real.indices_by_class:
        perm = torch.randperm(pool.numel(), generator=generator, device=generator.device)
        idx.append(pool[perm[:n].to(pool.device)])
    idx_t = torch.cat(idx)
    return real.images[idx_t], real.labels[idx_t]


def segment_reg_loss(emb_drop: Tensor, y_drop: Tensor, emb_frozen: Tensor, y_frozen: Tensor,
                     emb_new: Tensor, y_new: Tensor, num_classes: int) -> Tensor:
    """The sequential regulariser for DM: sum over classes with dropped images of
    ||mean dropped embedding - mean embedding of the whole synthetic set so far||^2.

    Args: embeddings (N_*, D) with labels (N_*,) int64; ``emb_frozen`` carries no gradient,
    ``emb_new`` does. Returns a scalar (0 when no class has both dropped and synthetic images).
    """
    sd, nd = class_means(emb_drop, y_drop, num_classes)
    sf, nf = class_means(emb_frozen, y_frozen, num_classes)
    sn, nn_ = class_means(emb_new, y_new, num_classes)
    ns = nf + nn_
    keep = (nd > 0) & (ns > 0)
    md = sd[keep] / nd[keep, None]
    ms = (sf[keep] + sn[keep]) / ns[keep, None]
    return ((md - ms) ** 2).sum()


@METHODS.register("dm", help="Distribution Matching (Zhao & Bilen, WACV 2023)")
class DM(Distiller):
    """Distribution Matching; hyperparameters in ``presets/dm.yaml``."""

    name = "dm"
    description = "Distribution Matching: match mean embeddings of random frozen ConvNets"
    supports_segments = True
    supports_sample_policy = True  # sample_policy.matching_loss (strategies/isa.py)

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
        check_ipc(real, ipc)
        t0 = time.perf_counter()
        device = resolve_device(device)
        real_dev = real.to(device) if real.device != device else real
        k = real.num_classes
        batch_real = min(int(self.cfg("batch_real")), int(real.class_counts().min()))
        steps = int(self.cfg("steps"))
        gen = make_generator(seed)
        syn_x, syn_y = init_synthetic(
            real, ipc, self.cfg("init"), gen, net=self.cfg("net"), device=device,
            precision=self.cfg("precision"), compile=bool(self.cfg("compile")),
            candidates=int(self.cfg("init_candidates")),
            nets=int(self.cfg("init_nets")))
        initial = syn_x.detach().clone().cpu()  # kept for the update-signal diagnostic (images - initial)
        syn_x = syn_x.to(device).requires_grad_(True)
        syn_y = syn_y.to(device)
        lr_img, lr_final = float(self.cfg("lr_img")), self.lr_final()
        opt = torch.optim.SGD([syn_x], lr=lr_img, momentum=float(self.cfg("momentum")))
        dsa = DSA(default_strategy(real.name) if self.cfg("dsa") else "none")
        embed_real = real_embedder(device, self.cfg("precision"), bool(self.cfg("compile")))
        embed_syn = embed_function(bool(self.cfg("compile")))  # fp32: gradients reach the images
        net_name = self.cfg("net")
        real_labels = torch.arange(k, device=device).repeat_interleave(batch_real)

        ckpt = Checkpointer(checkpoint, self.cfg("checkpoint_every"))
        fingerprint = self.run_fingerprint(real, ipc, seed, segment)
        seg = SegmentTerms(segment, real, device) if segment is not None else None
        start = 0
        saved = ckpt.restore(fingerprint, {"images": syn_x}, opt, gen) if resume else None
        if saved is not None:
            start = int(saved["step"])
            initial = saved.get("initial", initial)
            t0 -= float(saved["wall"])  # wall time counts the interrupted part too

        def step(it: int) -> float:
            net = build_network(net_name, real.channels, k, real.im_size,
                                int(torch.randint(2**31, (1,), generator=gen)), device)
            if seg is not None:
                seg.maybe_load_trained(net, gen)
            net.train()
            for p in net.parameters():
                p.requires_grad_(False)
            xr, _ = real_dev.sample_balanced(batch_real, gen)
            policy = self.sample_policy  # set by a strategy, e.g. isa; None: the plain loss
            match = dm_loss if policy is None else policy.matching_loss
            if seg is None or not seg.active:
                xr, xs = dsa.grouped((xr, syn_x), (real_labels, syn_y), k, gen)
                emb_r = embed_real(net, xr)
                emb_s = embed_syn(net, xs)
                loss = match(emb_r, emb_s, k)
            else:  # same network, same per-class DSA draw for the regulariser's batches
                xd, yd = sample_upto(seg.reg_pool, batch_real, gen)
                xr, xs, xd, xf = dsa.grouped((xr, syn_x, xd, seg.frozen_x),
                                             (real_labels, syn_y, yd, seg.frozen_y), k, gen)
                emb_s = embed_syn(net, xs)
                # one no-grad forward for the constant batches (real pool, dropped, frozen)
                emb_r, emb_d, emb_f = embed_real(net, torch.cat((xr, xd, xf))).split(
                    (len(xr), len(xd), len(xf)))
                loss = match(emb_r, emb_s, k) + seg.weight * segment_reg_loss(
                    emb_d, yd, emb_f, seg.frozen_y, emb_s, syn_y, k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # cosine decay of the image lr (not in the paper); lr_final 1 keeps lr_img exactly
            opt.param_groups[0]["lr"] = cosine_lr(lr_img, it - 1, steps, lr_final)
            opt.step()
            return float(loss.detach())

        def synset() -> SyntheticSet:
            return self.make_synset(syn_x.detach(), syn_y, real, ipc, seed,
                                    time.perf_counter() - t0, initial=initial)

        def state(it: int) -> dict:
            return ckpt.snapshot(fingerprint, it, {"images": syn_x}, opt, gen,
                                 time.perf_counter() - t0, initial=initial)

        step_loop(steps, start, step, desc=f"dm ipc={ipc}", progress=progress, checkpointer=ckpt,
                  state_fn=state, callbacks=callbacks, synset_fn=synset)
        return synset()


class SegmentTerms:
    """The per-run pieces of a :class:`SegmentContext` on ``device`` (kept out of the methods'
    loops; shared by dm, dc, dsa and idc).

    Raises:
        ConfigError: frozen images that do not fit the real images' shape, or frozen labels
            outside [0, K).
    """

    def __init__(self, ctx: SegmentContext, real: RealDataset, device: torch.device) -> None:
        if ctx.frozen_images.shape[1:] != real.images.shape[1:]:
            raise ConfigError(f"segment {ctx.index}: frozen images {tuple(ctx.frozen_images.shape)} "
                              f"do not fit the real images {tuple(real.images.shape[1:])}")
        y = ctx.frozen_labels
        if y.numel() and (y.dtype != torch.long or int(y.min()) < 0 or int(y.max()) >= real.num_classes):
            raise ConfigError(f"segment {ctx.index}: frozen labels must be int64 in "
                              f"[0, {real.num_classes})")
        self.active = ctx.uses_regulariser
        self.weight = float(ctx.reg_weight)
        self.frozen_x = ctx.frozen_images.detach().float().to(device)
        self.frozen_y = ctx.frozen_labels.to(device)
        self.reg_pool = None
        if ctx.reg_pool is not None:
            self.reg_pool = ctx.reg_pool.to(device) if ctx.reg_pool.device != device else ctx.reg_pool
        self.state = ctx.net_state
        self.fraction = float(ctx.trained_net_fraction)

    def maybe_load_trained(self, net: torch.nn.Module, gen: torch.Generator) -> None:
        """With probability ``fraction`` (one draw from ``gen``) load the trained weights."""
        if self.state is None or self.fraction == 0.0:
            return
        if float(torch.rand(1, generator=gen)) < self.fraction:
            try:
                net.load_state_dict(self.state)
            except RuntimeError as e:
                raise ConfigError(f"the trained network state does not fit the method's net: {e}") from None
