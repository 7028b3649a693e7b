"""DM: Distribution Matching (Zhao & Bilen, "Dataset Condensation with Distribution Matching",
WACV 2023; original code ``main_DM.py`` of VICO-UoE/DatasetCondensation).

Each iteration samples a fresh randomly initialised ConvNet with frozen weights; for every class
the mean embedding of ``batch_real`` augmented real images is matched to the mean embedding of the
class's synthetic images (the same DSA draw for both); the loss is the sum over classes of the
squared L2 distance; one SGD step (lr 1.0, momentum 0.5) updates the images.

Difference from the original loop, not from the algorithm: all classes go through the network in
ONE forward pass (the original loops over classes), with one DSA draw per class (the grouped
siamese mode), and the real-image pass, which carries no gradient, may run in bf16 and compiled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from datadistill.augment import DSA, default_strategy
from datadistill.data import RealDataset
from datadistill.evaluate.train import autocast, build_network
from datadistill.methods.base import (
    METHODS,
    Checkpointer,
    Distiller,
    StepCallback,
    check_ipc,
    step_loop,
)
from datadistill.synthetic import SyntheticSet
from datadistill.utils import compiled, make_generator, resolve_device


def _embed_eager(net: torch.nn.Module, x: Tensor) -> Tensor:
    return net.embed(x)


def embed_function(compile: bool) -> Callable[[torch.nn.Module, Tensor], Tensor]:
    """``f(net, x) -> (N, D)`` embeddings, optionally compiled with ``torch.compile`` (one graph
    per architecture and grad mode, shared by every fresh network; compilation fuses the
    norm/ReLU/pooling passes, which dominate on memory-bound CPUs)."""
    return compiled("embed", _embed_eager) if compile else _embed_eager


def real_embedder(device: torch.device, precision: str, compile: bool):
    """``f(net, x) -> (N, D) float32`` embeddings without gradient, in ``precision``."""
    fn = embed_function(compile)

    @torch.no_grad()
    def embed(net: torch.nn.Module, x: Tensor) -> Tensor:
        with autocast(device, precision):
            return fn(net, x).float()

    return embed


def init_synthetic(
    real: RealDataset, ipc: int, init: str, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Initial synthetic images, class-major: (K*ipc, C, H, W) float32 and labels (K*ipc,).

    ``init="real"``: random distinct real images of each class; ``"noise"``: N(0, 1) in the
    model-input space (the original code's ``randn`` init).
    """
    if init == "real":
        return real.sample_balanced(ipc, generator)
    if init == "noise":
        k = real.num_classes
        x = torch.randn(k * ipc, *real.image_shape, generator=generator)
        return x, torch.arange(k).repeat_interleave(ipc)
    from datadistill.errors import ConfigError

    raise ConfigError(f"init must be 'real' or 'noise', got {init!r}")


def dm_loss(emb_real: Tensor, emb_syn: Tensor, num_classes: int) -> Tensor:
    """Sum over classes of ||mean real embedding - mean synthetic embedding||^2.

    Args:
        emb_real: (K*n_real, D) class-major; emb_syn: (K*ipc, D) class-major.
    """
    mr = emb_real.view(num_classes, -1, emb_real.shape[1]).mean(1)
    ms = emb_syn.view(num_classes, -1, emb_syn.shape[1]).mean(1)
    return ((mr - ms) ** 2).sum()


@METHODS.register("dm", help="Distribution Matching (Zhao & Bilen, WACV 2023)")
class DM(Distiller):
    """Distribution Matching; hyperparameters in ``presets/dm.yaml``."""

    name = "dm"
    description = "Distribution Matching: match mean embeddings of random frozen ConvNets"
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
    ) -> SyntheticSet:
        check_ipc(real, ipc)
        t0 = time.perf_counter()
        device = resolve_device(device)
        real_dev = real.to(device) if real.device != device else real
        k = real.num_classes
        batch_real = min(int(self.cfg("batch_real")), int(real.class_counts().min()))
        steps = int(self.cfg("steps"))
        gen = make_generator(seed)
        syn_x, syn_y = init_synthetic(real, ipc, self.cfg("init"), gen)
        syn_x = syn_x.to(device).requires_grad_(True)
        syn_y = syn_y.to(device)
        opt = torch.optim.SGD([syn_x], lr=float(self.cfg("lr_img")),
                              momentum=float(self.cfg("momentum")))
        dsa = DSA(default_strategy(real.name) if self.cfg("dsa") else "none")
        embed_real = real_embedder(device, self.cfg("precision"), bool(self.cfg("compile")))
        embed_syn = embed_function(bool(self.cfg("compile")))  # fp32: gradients reach the images
        net_name = self.cfg("net")
        real_labels = torch.arange(k, device=device).repeat_interleave(batch_real)

        ckpt = Checkpointer(checkpoint, self.cfg("checkpoint_every"))
        # What changes the result; steps may grow on resume, compile/checkpointing do not matter.
        same = {k: v for k, v in self.config.items()
                if k not in ("steps", "compile", "checkpoint_every")}
        fingerprint = {"method": self.name, "dataset": real.checksum(), "ipc": ipc, "seed": seed,
                       "config": repr(sorted(same.items()))}
        start = 0
        saved = ckpt.load(fingerprint) if resume else None
        if saved is not None:
            with torch.no_grad():
                syn_x.copy_(saved["images"].to(device))
            opt.load_state_dict(saved["optimizer"])
            gen.set_state(saved["generator"])
            start = int(saved["step"])
            t0 -= float(saved["wall"])  # wall time counts the interrupted part too

        def step(it: int) -> float:
            net = build_network(net_name, real.channels, k, real.im_size,
                                int(torch.randint(2**31, (1,), generator=gen)), device)
            net.train()
            for p in net.parameters():
                p.requires_grad_(False)
            xr, _ = real_dev.sample_balanced(batch_real, gen)
            xr, xs = dsa.grouped((xr, syn_x), (real_labels, syn_y), k, gen)
            emb_r = embed_real(net, xr)
            emb_s = embed_syn(net, xs)
            policy = self.sample_policy  # set by a strategy, e.g. isa; None: the plain loss
            loss = dm_loss(emb_r, emb_s, k) if policy is None else policy.matching_loss(emb_r, emb_s, k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        def synset() -> SyntheticSet:
            return self.make_synset(syn_x.detach(), syn_y, real, ipc, seed,
                                    time.perf_counter() - t0)

        def state(it: int) -> dict:
            return {"fingerprint": fingerprint, "step": it, "images": syn_x.detach().cpu(),
                    "optimizer": opt.state_dict(), "generator": gen.get_state(),
                    "wall": time.perf_counter() - t0}

        step_loop(steps, start, step, desc=f"dm ipc={ipc}", progress=progress, checkpointer=ckpt,
                  state_fn=state, callbacks=callbacks, synset_fn=synset)
        return synset()
