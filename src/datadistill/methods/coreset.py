"""Coreset baselines: select real images instead of synthesising them.

* ``random``: ``ipc`` random real images per class (the baseline every result is compared with).
* ``herding``: per class, greedily pick the image that keeps the running mean of the selected
  embeddings closest to the class mean (Welling, ICML 2009; the herding baseline of the DC paper,
  Zhao et al. ICLR 2021, which herds in the embedding space of a trained ConvNet).
* ``k-center``: per class, greedy k-center (Sener & Savarese, ICLR 2018): start from the image
  nearest the class mean, then repeatedly add the image farthest from all selected ones.

Herding and k-center embed the real set with a ConvNet-3 trained briefly on it (``embed_steps``
SGD steps of batch 256, the DC evaluation optimiser), in eval mode.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from datadistill.data import RealDataset
from datadistill.evaluate.train import autocast, build_network
from datadistill.methods.base import METHODS, Distiller, StepCallback, check_ipc
from datadistill.synthetic import SyntheticSet
from datadistill.utils import make_generator, resolve_device


def random_subset(real: RealDataset, ipc: int, seed: int) -> tuple[Tensor, Tensor]:
    """``ipc`` random distinct real images per class, class-major: (K*ipc, C, H, W), (K*ipc,)."""
    check_ipc(real, ipc)
    return real.sample_balanced(ipc, make_generator(seed))


def herding(features: Tensor, k: int) -> Tensor:
    """Indices (k,) int64 of the herding selection from ``features`` (n, d), in selection order.

    Step t picks argmin_i || mu - (s + f_i) / t || over unselected i, where s is the sum of the
    t - 1 features selected so far and mu the mean of all features.
    """
    mu = features.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    available = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    for t in range(1, k + 1):
        dist = ((mu - (total + features) / t) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        total = total + features[i]
    return torch.tensor(chosen, dtype=torch.long)


def k_center(features: Tensor, k: int) -> Tensor:
    """Indices (k,) int64 of greedy k-center on ``features`` (n, d) (Euclidean), first = the
    point nearest the mean."""
    first = int(((features - features.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    mind = ((features - features[first]) ** 2).sum(1)
    mind[first] = -1.0  # never re-select, even among duplicate points
    for _ in range(k - 1):
        i = int(mind.argmax())
        chosen.append(i)
        mind = torch.minimum(mind, ((features - features[i]) ** 2).sum(1))
        mind[chosen] = -1.0
    return torch.tensor(chosen, dtype=torch.long)


# herding and k-center at the same IPC and seed train the same embedding network: keep the last
# embedding (one entry; 60,000 x 2048 floats is ~0.5 GB) so a sweep over methods trains it once.
# The training time is kept with it so that a cached run still reports what the selection cost.
_EMBED_CACHE: dict[tuple, tuple[Tensor, float]] = {}


def embed_real_set(real: RealDataset, config: dict, seed: int, device: torch.device,
                   progress: bool = False) -> tuple[Tensor, float, bool]:
    """(N, D) float32 embeddings (CPU) of every real image by a ConvNet trained briefly on
    ``real`` (``config``: net, embed_steps, batch, precision), the seconds it took to train and
    embed, and whether the result came from the cache of the last (real set, config, seed,
    device)."""
    key = (real.checksum(), config["net"], int(config["embed_steps"]), int(config["batch"]),
           config.get("precision", "fp32"), seed, str(device))
    cached = key in _EMBED_CACHE
    if not cached:
        _EMBED_CACHE.clear()
        t0 = time.perf_counter()
        feats = _train_and_embed(real, config, seed, device, progress)
        _EMBED_CACHE[key] = (feats, time.perf_counter() - t0)
    feats, seconds = _EMBED_CACHE[key]
    return feats, seconds, cached


def _train_and_embed(real: RealDataset, config: dict, seed: int, device: torch.device,
                     progress: bool) -> Tensor:
    from tqdm.auto import tqdm

    gen = make_generator(seed)
    net = build_network(config["net"], real.channels, real.num_classes, real.im_size,
                        int(torch.randint(2**31, (1,), generator=gen)), device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    precision = config.get("precision", "fp32")
    net.train()
    for _ in tqdm(range(int(config["embed_steps"])), desc="training the embedding network",
                  disable=not progress):
        idx = torch.randint(len(real), (int(config["batch"]),), generator=gen).to(real.device)
        x, y = real.images[idx].to(device), real.labels[idx].to(device)
        with autocast(device, precision):
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    feats = []
    with torch.no_grad():
        for i in range(0, len(real), 1000):
            with autocast(device, precision):
                feats.append(net.embed(real.images[i : i + 1000].to(device)).float().cpu())
    return torch.cat(feats)


class _Coreset(Distiller):
    select = staticmethod(herding)

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
        feats, embed_s, cached = embed_real_set(real, self.config, seed, resolve_device(device),
                                                progress)
        idx = torch.cat([
            pool[self.select(feats[pool.cpu()], ipc)]
            for pool in (p.cpu() for p in real.indices_by_class)
        ])
        return self.make_synset(real.images[idx.to(real.device)], real.labels[idx.to(real.device)],
                                real, ipc, seed, time.perf_counter() - t0,
                                extra={"embedding_seconds": round(embed_s, 2),
                                       "embedding_cached": cached})


@METHODS.register("random", help="random real subset (the baseline)")
class RandomSubset(Distiller):
    """``ipc`` random real images per class."""

    name = "random"
    description = "random real images per class"

    def distill(self, real: RealDataset, ipc: int, *, seed: int = 0, device=None, checkpoint=None,
                resume: bool = False, progress: bool = True, callbacks=()) -> SyntheticSet:
        t0 = time.perf_counter()
        x, y = random_subset(real, ipc, seed)
        return self.make_synset(x, y, real, ipc, seed, time.perf_counter() - t0)


@METHODS.register("herding", help="herding in a trained ConvNet's embedding space")
class Herding(_Coreset):
    """Herding selection per class (Welling 2009; DC paper's baseline)."""

    name = "herding"
    description = "herding selection in the embedding space of a briefly trained ConvNet"
    select = staticmethod(herding)


@METHODS.register("k-center", help="greedy k-center in a trained ConvNet's embedding space")
class KCenter(_Coreset):
    """Greedy k-center selection per class (Sener & Savarese 2018)."""

    name = "k-center"
    description = "greedy k-center selection in the embedding space of a briefly trained ConvNet"
    select = staticmethod(k_center)
