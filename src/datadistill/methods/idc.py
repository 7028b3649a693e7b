"""IDC: Dataset Condensation via Efficient Synthetic-Data Parameterization (Kim et al., ICML 2022;
original code ``condense.py`` / ``argument.py`` / ``train.py`` of
snu-mllab/Efficient-Dataset-Condensation).

Parameterisation (multi-formation, paper Section 3.1): ``ipc`` stored images per class; each is
cut into an f x f grid and every patch is upsampled back to full size, so the network trains on
``ipc * f^2`` images per class (:func:`datadistill.synthetic.multi_formation_decode`).

Pixel convention. As in the original, the learnable tensor ``p`` holds PIXELS in [0, 1] (clamped
at the start of every outer iteration, as ``condense.py`` does, and once more at the end), and
the gradient step and the lr (``lr_img``) act on pixels. The network sees
``decode(normalise(p))``: per-channel normalisation (the dataset's mean / std) first, then the
multi-formation decode. Both are linear and the bilinear weights sum to one, so this equals the
original's ``normalise(decode(p))``; normalising first makes the saved
:class:`~datadistill.synthetic.SyntheticSet` (``images = normalise(p)``, ``parameterization =
"multi-formation"``) decode to EXACTLY the tensors the network saw. ZCA is refused (IDC does not
whiten, and whitening does not commute with the patch decode).

Each outer iteration (``steps`` in total; 2000 in the paper): a fresh ConvNet; ``inner_loop``
(100) times: per class, 64 real images and the decoded synthetic images of the class (at most
``batch_syn_max`` = 128, sub-sampled) get ONE shared augmentation draw (IDC's ``DiffAug``:
color -> crop -> cutout, :class:`~datadistill.augment.ComposedDSA`); the loss is the distance
between the gradients of the CONVOLUTION weights only (L1 on (Fashion-)MNIST, MSE on CIFAR);
one SGD step on the pixels (momentum 0.5); then the network takes one pass over ``n_data`` real
images (batch 64, per-sample color + crop augmentation, CutMix with probability 0.5; SGD lr 0.01,
momentum 0.9, weight decay 5e-4).

Difference from the original loop, not from the objective: the original takes one optimiser step
per class on the single image tensor; here the per-class losses are summed and one step is taken
(each class's images only receive their class's gradient either way; the original's extra
momentum moves of the other classes are not replicated). The classes' gradients come from
:func:`datadistill.methods.gm.gradient_match_loss`: a per-class loop, or one ``vmap`` call where
option ``vectorize`` resolves to it (``auto``: on CUDA; measured slower on these CPUs).

Our option, not the original's (as in ``dm``): ``lr_final`` < 1 anneals the image lr along a
cosine over the outer iterations to ``lr_final * lr`` (:func:`~datadistill.methods.base.cosine_lr`;
default 1, the original's constant rate).

Sequential segments (``segment=SegmentContext``, strategy ``sequential``): the new segment's
stored pixels match the current real pool (the ``real`` argument), and the networks train on
that pool; the regulariser adds ``reg_weight * matchloss(net, dropped real images of c, decoded
frozen + decoded new images of c)`` summed over the classes with dropped images (IDC's distance
on the convolution weights, the synthetic side capped at ``batch_syn_max`` per class, the same
network and per-class augmentation draw as the main loss). With a trained network state, a
fraction ``trained_net_fraction`` of the outer iterations' networks start from it (then train
on real data as usual) instead of a fresh random initialisation. The frozen images arrive
DECODED (model-input space); the returned set holds only the new segment's stored images.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from datadistill.augment import ComposedDSA, cutmix
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
from datadistill.methods.dm import SegmentTerms, sample_upto
from datadistill.methods.gm import (
    gradient_match_loss,
    resolve_vectorize,
    segment_match_loss,
    upto_per_class,
)
from datadistill.synthetic import SyntheticSet, multi_formation_decode
from datadistill.utils import make_generator, resolve_device


def scaled_lr_img(base: float, ipc: int, size: int, size_base: int) -> float:
    """IDC's ``tune_lr_img``: ``base * (ipc / 10) * (size / size_base)^2`` (``size_base`` is 28
    for MNIST and 32 otherwise in the original, so Fashion-MNIST's 28x28 scales by 0.766)."""
    return base * (ipc / 10) * (size / size_base) ** 2


def mixed_tile_init(pixels: Tensor, factor: int) -> Tensor:
    """IDC's ``init_type='mix'``: tile ``factor^2`` downsized real images into each stored image.

    Args:
        pixels: ``(K, ipc * f^2, C, H, W)`` float real images in [0, 1], per class; tile t (row
            major) of stored image i takes image ``t * ipc + i`` of its class, downsized to
            ``(H/f, W/f)`` by nearest-neighbour interpolation (``F.interpolate``'s default, as
            the original).
        factor: f >= 1; H and W must be divisible by f.

    Returns:
        ``(K * ipc, C, H, W)`` float32 pixels, class-major.

    Raises:
        ConfigError: H or W not divisible by f, or a count that is not ``ipc * f^2``.
    """
    k, n, c, h, w = pixels.shape
    f = int(factor)
    if f < 1 or h % f or w % f or n % (f * f):
        raise ConfigError(f"mixed init: {n} images of {h}x{w} per class do not fit factor {f} "
                          "(H and W must be divisible by the factor)")
    ipc = n // (f * f)
    ph, pw = h // f, w // f
    small = F.interpolate(pixels.reshape(k * n, c, h, w).float(), size=(ph, pw))
    # (K, f, f, ipc, C, ph, pw) -> (K, ipc, C, f, ph, f, pw) -> stored images
    small = small.view(k, f, f, ipc, c, ph, pw).permute(0, 3, 4, 1, 5, 2, 6)
    return small.reshape(k * ipc, c, h, w).contiguous()


def init_pixels(real: RealDataset, ipc: int, factor: int, init: str,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Initial stored pixels ``(K*ipc, C, H, W)`` in [0, 1] and labels ``(K*ipc,)``.

    ``init``: ``"mix"`` (:func:`mixed_tile_init`; the original's default when f > 1),
    ``"random"`` (random real images), ``"noise"`` (``clamp(randn / 4 + 0.5, 0, 1)``).
    """
    k = real.num_classes
    labels = torch.arange(k).repeat_interleave(ipc)
    if init == "noise":
        x = torch.randn(k * ipc, *real.image_shape, generator=generator)
        return (x / 4 + 0.5).clamp(0, 1), labels
    if init == "random":
        x, _ = real.sample_balanced(ipc, generator)
        return real.preprocessing.invert(x.cpu()).clamp(0, 1), labels
    if init == "mix":
        x, _ = real.sample_balanced(ipc * factor**2, generator)
        pix = real.preprocessing.invert(x.cpu()).clamp(0, 1)
        return mixed_tile_init(pix.view(k, ipc * factor**2, *real.image_shape), factor), labels
    raise ConfigError(f"init must be 'mix', 'random' or 'noise', got {init!r}")


def model_input(pixels: Tensor, mean: Tensor, std: Tensor, factor: int) -> Tensor:
    """Stored pixels ``(M, C, H, W)`` in [0, 1] -> the decoded model-input images
    ``(M * f^2, C, H, W)``: ``multi_formation_decode((pixels - mean) / std, f)`` with ``mean`` /
    ``std`` of shape ``(1, C, 1, 1)``. ``SyntheticSet(images=(pixels - mean) / std,
    parameterization="multi-formation").decode()`` computes exactly the same tensor."""
    return multi_formation_decode((pixels - mean) / std, factor)


def subsample_per_class(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``(K, m, ...)`` -> ``(K, min(m, n), ...)``: a random subset per class (IDC's
    ``batch_syn_max`` sub-sampling); unchanged when m <= n."""
    k, m = x.shape[:2]
    if m <= n:
        return x
    idx = torch.rand(k, m, generator=generator).argsort(1)[:, :n].to(x.device)
    return x[torch.arange(k, device=x.device).view(k, 1), idx]


@METHODS.register("idc", help="IDC: multi-formation gradient matching (Kim et al., ICML 2022)")
class IDC(Distiller):
    """IDC; hyperparameters in ``presets/idc.yaml``.

    Supports sequential segments (see the module docstring): IDC's matching networks train on
    REAL data, so the frozen (decoded) earlier segments enter only the regulariser.
    """

    default_protocol = "idc"

    name = "idc"
    description = "Multi-formation parameterisation + gradient matching on networks trained on real data"
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
        """See :meth:`Distiller.distill`. Returns the new stored images (``ipc`` per class,
        multi-formation when ``factor`` > 1).

        Raises:
            ConfigError: bad IPC or hyperparameters, ZCA, a factor that does not divide the image
                size, too few real images for the mixed init, a segment whose frozen images or
                network state do not fit ``real`` / ``net``.
        """
        check_ipc(real, ipc)
        prep = real.preprocessing
        if prep.zca is not None:
            raise ConfigError("idc stores pixels and does not support ZCA whitening: run without --zca")
        t0 = time.perf_counter()
        device = resolve_device(device)
        real_dev = real.to(device) if real.device != device else real
        k, (c, h, w) = real.num_classes, real.image_shape
        f = int(self.cfg("factor"))
        if h % f or w % f:
            raise ConfigError(f"factor {f} does not divide the image size {h}x{w}; use --set factor=1")
        if self.cfg("init") == "mix" and ipc * f * f > int(real.class_counts().min()):
            raise ConfigError(f"mixed init needs ipc * factor^2 = {ipc * f * f} real images per class; "
                              f"the smallest class has {int(real.class_counts().min())}: lower --ipc")
        steps, inner = int(self.cfg("steps")), int(self.cfg("inner_loop"))
        batch_real = min(int(self.cfg("batch_real")), int(real.class_counts().min()))
        syn_max = int(self.cfg("batch_syn_max"))
        metric = self.cfg("metric")
        precision = self.cfg("precision")
        syn_precision = self.cfg("syn_precision")
        compile_real = bool(self.cfg("compile"))
        vectorize = resolve_vectorize(self.cfg("vectorize"), device)
        net_name = self.cfg("net")
        n_data, net_batch = int(self.cfg("n_data")), int(self.cfg("net_batch"))
        cutmix_p = float(self.cfg("net_cutmix_p"))
        lr = scaled_lr_img(float(self.cfg("lr_img")), ipc, h, int(self.cfg("lr_img_size_base")))
        lr_final = self.lr_final()
        gen = make_generator(seed)
        pix, syn_y = init_pixels(real, ipc, f, self.cfg("init"), gen)
        pix = pix.to(device).requires_grad_(True)
        syn_y = syn_y.to(device)
        mean = torch.tensor(prep.mean, device=device).view(1, c, 1, 1)
        std = torch.tensor(prep.std, device=device).view(1, c, 1, 1)
        # stored form (normalised pixels) of the init, for the update-signal diagnostic
        initial = ((pix.detach() - mean) / std).cpu()
        opt = torch.optim.SGD([pix], lr=lr, momentum=float(self.cfg("momentum")))
        match_aug = ComposedDSA(self.cfg("match_aug"))
        net_aug = ComposedDSA(self.cfg("net_aug"))
        classes = torch.arange(k, device=device)
        dec_per_class = ipc * f * f
        m = min(dec_per_class, syn_max)
        real_groups = classes.repeat_interleave(batch_real)
        syn_groups = classes.repeat_interleave(m)
        dec_y = syn_y.repeat_interleave(f * f)  # labels of the decoded images, as decode() repeats
        seg = SegmentTerms(segment, real, device) if segment is not None else None
        # inactive (weight 0 / nothing dropped / nothing frozen): no extra random draws, so the
        # run equals the one without the regulariser exactly
        reg = seg if seg is not None and seg.active else None

        ckpt = Checkpointer(checkpoint, self.cfg("checkpoint_every"))
        fingerprint = self.run_fingerprint(real, ipc, seed, segment)
        start = 0
        saved = ckpt.restore(fingerprint, {"pixels": pix}, opt, gen) if resume else None
        if saved is not None:
            start = int(saved["step"])
            initial = saved.get("initial", initial)
            t0 -= float(saved["wall"])

        def train_net_on_real(net: torch.nn.Module, opt_net: torch.optim.Optimizer) -> None:
            """One pass over ``n_data`` random real images (IDC's ``train_epoch(n_data=...)``)."""
            n_batches = math.ceil(n_data / net_batch)
            idx = torch.randperm(len(real_dev), generator=gen)[: n_batches * net_batch]
            net.train()
            for i in range(0, idx.numel(), net_batch):
                bi = idx[i: i + net_batch].to(device)
                x, y = real_dev.images[bi], real_dev.labels[bi]
                with torch.no_grad():
                    x = net_aug(x, gen)
                t: Tensor = y
                if cutmix_p > 0 and float(torch.rand(1, generator=gen)) < cutmix_p:
                    x, t = cutmix(x, y, k, gen)
                with autocast(device, precision):
                    out = net(x)
                loss = F.cross_entropy(out.float(), t)
                opt_net.zero_grad(set_to_none=True)
                loss.backward()
                opt_net.step()

        def step(it: int) -> float:
            net = build_network(net_name, c, k, (h, w),
                                int(torch.randint(2**31, (1,), generator=gen)), device)
            if seg is not None:
                seg.maybe_load_trained(net, gen)
            net.train()
            opt_net = torch.optim.SGD(net.parameters(), lr=float(self.cfg("lr_net")),
                                      momentum=float(self.cfg("net_momentum")),
                                      weight_decay=float(self.cfg("net_weight_decay")))
            with torch.no_grad():
                pix.clamp_(0, 1)
            # set from the step index (not a scheduler's state), so a resumed run is identical
            opt.param_groups[0]["lr"] = cosine_lr(lr, it - 1, steps, lr_final)
            total = 0.0
            for _ in range(inner):
                xr, _ = real_dev.sample_balanced(batch_real, gen)
                dec = model_input(pix, mean, std, f)
                xs = subsample_per_class(dec.view(k, dec_per_class, c, h, w), m, gen)
                xs = xs.reshape(k * m, c, h, w)
                if reg is None:
                    xr, xs = match_aug.grouped((xr, xs), (real_groups, syn_groups), k, gen)
                else:  # active implies a non-empty reg_pool
                    xd, yd = sample_upto(reg.reg_pool, batch_real, gen)
                    # the whole decoded set so far (frozen + new), at most batch_syn_max per class
                    xa, ya = torch.cat((reg.frozen_x, dec)), torch.cat((reg.frozen_y, dec_y))
                    keep = upto_per_class(ya, syn_max, k, gen)
                    xa, ya = xa[keep], ya[keep]
                    xr, xs, xd, xa = match_aug.grouped((xr, xs, xd, xa),
                                                       (real_groups, syn_groups, yd, ya), k, gen)
                loss = gradient_match_loss(
                    net, xr.view(k, batch_real, c, h, w), xs.view(k, m, c, h, w), classes,
                    metric=metric, conv_only=True, vectorize=vectorize, real_precision=precision,
                    compile_real=compile_real, syn_precision=syn_precision)
                if reg is not None:
                    loss = loss + reg.weight * segment_match_loss(
                        net, xd, yd, xa, ya, k, metric=metric, conv_only=True, vectorize=vectorize,
                        real_precision=precision, compile_real=compile_real,
                        syn_precision=syn_precision)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                if n_data > 0:
                    train_net_on_real(net, opt_net)
            return total / (inner * k)

        def synset() -> SyntheticSet:
            with torch.no_grad():
                stored = (pix.detach().clamp(0, 1) - mean) / std
            return self.make_synset(stored, syn_y, real, ipc, seed, time.perf_counter() - t0,
                                    extra={"lr_img_scaled": lr, "stored_ipc": ipc,
                                           "decoded_ipc": dec_per_class},
                                    parameterization="multi-formation" if f > 1 else "plain",
                                    factor=f, initial=initial)

        def state(it: int) -> dict:
            return ckpt.snapshot(fingerprint, it, {"pixels": pix}, opt, gen,
                                 time.perf_counter() - t0, initial=initial)

        step_loop(steps, start, step, desc=f"idc ipc={ipc}", progress=progress, checkpointer=ckpt,
                  state_fn=state, callbacks=callbacks, synset_fn=synset)
        return synset()
