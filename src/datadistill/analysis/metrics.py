"""Diversity diagnostics of a synthetic set: update-signal similarity (EDD Figure 1) and
k-NN manifold precision / recall / coverage of the real set in a fixed feature space (ISA
appendix, Eq. 8-9, after Kynkaanniemi et al. 2019; coverage after Naeem et al. 2020)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from datadistill.data import RealDataset
from datadistill.errors import ConfigError
from datadistill.evaluate.protocols import get_protocol
from datadistill.evaluate.train import build_network, train_network
from datadistill.utils import make_generator


# ---------------------------------------------------------------------------- update signals
def update_signal_similarity(images: Tensor, initial: Tensor, labels: Tensor,
                             segments: Tensor | None = None) -> dict[str, Any]:
    """Mean pairwise cosine similarity of the update signals within each class (EDD Figure 1).

    The update ("back-propagation") signal of a synthetic image is its final minus its initial
    image, flattened. Per class, the mean cosine similarity over all unordered pairs of distinct
    images; ``mean`` averages those over the classes with at least 2 images. An image that did
    not move has a zero signal and contributes cosine 0 to its pairs.

    Args:
        images, initial: (M, C, H, W) float, the same images after and before optimisation.
        labels: (M,) int64 hard labels (class of each image).
        segments: optional (M,) int64 segment index of each image; adds the mean over pairs in
            the same segment (``within_segment``) and in different segments (``across_segment``)
            of the same class (None when there are no such pairs).

    Returns:
        ``{"mean": float in [-1, 1], "per_class": {class: float}, "within_segment": float|None,
        "across_segment": float|None}``.

    Raises:
        ConfigError: mismatched shapes, or no class with 2 or more images.
    """
    if images.shape != initial.shape or labels.shape != (images.shape[0],):
        raise ConfigError(f"images {tuple(images.shape)}, initial {tuple(initial.shape)} and labels "
                          f"{tuple(labels.shape)} do not fit together")
    if segments is not None and segments.shape != labels.shape:
        raise ConfigError("segments must give one index per image")
    delta = F.normalize((images - initial).flatten(1).double(), dim=1)
    per_class: dict[int, float] = {}
    same_sum = diff_sum = 0.0
    same_n = diff_n = 0
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)
        m = idx.numel()
        if m < 2:
            continue
        d = delta[idx]
        sim = d @ d.T
        off = ~torch.eye(m, dtype=torch.bool)
        per_class[int(c)] = float(sim[off].mean())
        if segments is not None:
            s = segments[idx]
            same = (s[:, None] == s[None, :]) & off
            diff = s[:, None] != s[None, :]
            same_sum, same_n = same_sum + float(sim[same].sum()), same_n + int(same.sum())
            diff_sum, diff_n = diff_sum + float(sim[diff].sum()), diff_n + int(diff.sum())
    if not per_class:
        raise ConfigError("update-signal similarity needs a class with at least 2 synthetic images")
    return {
        "mean": sum(per_class.values()) / len(per_class),
        "per_class": per_class,
        "within_segment": same_sum / same_n if same_n else None,
        "across_segment": diff_sum / diff_n if diff_n else None,
    }


# ---------------------------------------------------------------------------- k-NN manifolds
def _cdist(a: Tensor, b: Tensor, chunk: int = 2048) -> Tensor:
    """(len(a), len(b)) Euclidean distances in float32, computed in row chunks."""
    return torch.cat([torch.cdist(a[i : i + chunk].float(), b.float()) for i in range(0, len(a), chunk)])


def knn_radii(x: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """NND_k: distance of every row of ``x`` (N, D) to its k-th nearest neighbour among the other
    rows (itself excluded). Returns (N,) float32. Raises ConfigError unless 1 <= k < N."""
    n = x.shape[0]
    if not 1 <= k < n:
        raise ConfigError(f"k-NN radii need 1 <= k < number of points ({n}), got k={k}")
    out = []
    for i in range(0, n, chunk):
        d = torch.cdist(x[i : i + chunk].float(), x.float())
        # the point itself is at distance 0 and is the 0-th of the k+1 smallest
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def manifold_metrics(real: Tensor, synthetic: Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall and coverage of k-NN manifolds (k = 5 as in the ISA appendix).

    manifold(X) is the union of balls B(x_i, NND_k(x_i)) (ISA Eq. 9).
    * recall (ISA Eq. 8): fraction of real points inside manifold(synthetic);
    * precision: fraction of synthetic points inside manifold(real);
    * coverage (Naeem et al. 2020): fraction of real points whose own k-NN ball contains at least
      one synthetic point (robust to a few outlying synthetic points).

    Args:
        real: (N, D) features of real images; synthetic: (M, D) features of synthetic images,
            both in the same fixed feature space; need N > k and M > k.

    Returns:
        ``{"precision", "recall", "coverage"}``, each in [0, 1].
    """
    if real.dim() != 2 or synthetic.dim() != 2 or real.shape[1] != synthetic.shape[1]:
        raise ConfigError(f"features must be (N, D) and (M, D), got {tuple(real.shape)} and "
                          f"{tuple(synthetic.shape)}")
    r_real, r_syn = knn_radii(real, k), knn_radii(synthetic, k)
    d = _cdist(real, synthetic)  # (N, M)
    recall = (d <= r_syn[None, :]).any(1).float().mean()
    precision = (d <= r_real[:, None]).any(0).float().mean()
    coverage = (d.min(1).values <= r_real).float().mean()
    return {"precision": float(precision), "recall": float(recall), "coverage": float(coverage)}


# ---------------------------------------------------------------------------- feature space
def feature_network(real: RealDataset, *, kind: str = "random", net: str = "convnet", seed: int = 0,
                    epochs: int = 5, device: torch.device | None = None) -> torch.nn.Module:
    """A FIXED feature extractor (its ``embed``) for the diagnostics.

    ``kind="random"``: ``net`` randomly initialised from ``seed`` (the view of DM: random
    networks' embeddings already separate the data). ``kind="trained"``: ``net`` trained on the
    whole real set for ``epochs`` epochs (DC protocol: SGD, no augmentation). Either way the
    network depends only on (real set, net, seed, epochs), never on a synthetic set, so the
    numbers of several synthetic sets are comparable.
    """
    device = device or torch.device("cpu")
    if kind == "random":
        return build_network(net, real.channels, real.num_classes, real.im_size, seed, device).eval()
    if kind == "trained":
        proto = get_protocol("dc").with_(epochs=int(epochs))
        return train_network(net, real.images, real.labels, real.num_classes, proto, seed=seed,
                             dsa_strategy="none", device=device, compile=False).eval()
    raise ConfigError(f"feature kind must be 'random' or 'trained', got {kind!r}")


@torch.no_grad()
def embed(net: torch.nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """(N, D) float32 embeddings on the CPU of ``images`` (N, C, H, W), eval mode, fp32."""
    net.eval()
    device = next(net.parameters()).device
    return torch.cat([net.embed(images[i : i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def subsample(real: RealDataset, max_n: int, seed: int) -> RealDataset:
    """At most ``max_n`` random images of ``real`` (all of them when it is smaller)."""
    if len(real) <= max_n:
        return real
    perm = torch.randperm(len(real), generator=make_generator(seed))[:max_n]
    return real.subset(perm.sort().values)
