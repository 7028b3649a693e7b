"""Plots of the diagnostics (matplotlib, Agg backend; every PNG is written atomically).

* :func:`tsne_plot`: real and synthetic features in 2-D (scikit-learn t-SNE), coloured by class,
  synthetic images marked by segment (EDD Figure 2).
* :func:`segment_plot`: per-segment pool sizes, dropped and forgotten counts (from ``meta``).
* :func:`accuracy_vs_ipc_plot`: test accuracy against IPC for several series (base method,
  sequential, random subset) and the full real set, from a JSON of results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datadistill.errors import ConfigError, DataError
from datadistill.utils import atomic_path

MARKERS = ("*", "P", "X", "D", "^", "s", "v", "p", "h", "<", ">", "8")


def _figure(*size: float):
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed; safe in threads and on servers
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(*size)


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def tsne_embedding(features: Tensor, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(N, 2) t-SNE coordinates of ``features`` (N, D) (scikit-learn, PCA init, ``seed``).

    The perplexity is capped at (N - 1) / 3 so small sets work. Raises ConfigError for N < 4."""
    from sklearn.manifold import TSNE

    n = features.shape[0]
    if n < 4:
        raise ConfigError(f"t-SNE needs at least 4 points, got {n}")
    tsne = TSNE(n_components=2, init="pca", random_state=seed,
                perplexity=min(perplexity, (n - 1) / 3.0))
    return tsne.fit_transform(features.double().numpy())


def tsne_plot(real_feats: Tensor, real_labels: Tensor, syn_feats: Tensor, syn_labels: Tensor,
              path: str | Path, *, syn_segments: Tensor | None = None, class_names: Sequence[str] = (),
              seed: int = 0, title: str = "") -> Path:
    """t-SNE of real (dots) and synthetic (large markers, one shape per segment) features, both
    coloured by class; one joint embedding so the two sets share coordinates. Writes a PNG."""
    xy = tsne_embedding(torch.cat([real_feats, syn_feats]), seed)
    n = real_feats.shape[0]
    num_classes = int(max(int(real_labels.max()), int(syn_labels.max())) + 1)
    plt, fig, ax = _figure(1, 1)
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    colour = lambda y: [cmap(int(c) % cmap.N) for c in y.tolist()]  # noqa: E731
    ax.scatter(xy[:n, 0], xy[:n, 1], s=4, c=colour(real_labels), alpha=0.35, linewidths=0)
    segs = syn_segments if syn_segments is not None else torch.zeros(len(syn_labels), dtype=torch.long)
    for s in segs.unique().tolist():
        m = (segs == s).numpy()
        marker = MARKERS[int(s) % len(MARKERS)]
        ax.scatter(xy[n:][m, 0], xy[n:][m, 1], s=70, c=colour(syn_labels[torch.from_numpy(m)]),
                   marker=marker, edgecolors="black", linewidths=0.6)
        # a neutral legend entry: the marker shape is the segment, the colour the class
        ax.scatter([], [], s=70, c="white", marker=marker, edgecolors="black",
                   label=f"segment {int(s) + 1}" if syn_segments is not None else "synthetic")
    ax.legend(loc="best", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE: real (dots) and synthetic (markers), coloured by class")
    return _save(plt, fig, path)


def segment_plot(records: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Bars per segment: pool size, dropped after it, forgotten when it was added. Writes a PNG."""
    if not records:
        raise ConfigError("no segment records to plot (not a sequential synthetic set)")
    idx = np.arange(len(records))
    plt, fig, ax = _figure(1, 1)
    w = 0.27
    for j, (key, lab) in enumerate((("pool_size", "pool size"), ("dropped", "dropped after"),
                                    ("forgotten", "forgotten"))):
        ax.bar(idx + (j - 1) * w, [r.get(key) or 0 for r in records], w, label=lab)
    ax.set_xticks(idx, [str(int(r["index"]) + 1) for r in records])
    ax.set_xlabel("segment")
    ax.set_ylabel("real training images")
    ax.legend()
    ax.set_title(title or "per-segment real pool, dropped and forgotten images")
    return _save(plt, fig, path)


def load_accuracy_results(path: str | Path) -> dict[str, Any]:
    """Read and check an accuracy-versus-IPC JSON::

        {"title": "fashion-mnist, ConvNet-3",                       (optional)
         "full": {"mean": 93.5, "std": 0.2, "label": "full real set"},  (optional; or a number)
         "series": {"dm": [{"ipc": 10, "mean": 83.6, "std": 0.3}, ...],
                    "dm+sequential": [...], "random": [...]}}

    Raises DataError when the file is unreadable or does not have this form."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read accuracy results {path}: {e}") from None
    series = d.get("series") if isinstance(d, dict) else None
    if not isinstance(series, dict) or not series:
        raise DataError(f"{path}: expected {{'series': {{name: [{{'ipc', 'mean', 'std'}}, ...]}}}}")
    for name, pts in series.items():
        if not isinstance(pts, list) or not pts or not all(
            isinstance(p, dict) and {"ipc", "mean"} <= set(p) for p in pts
        ):
            raise DataError(f"{path}: series {name!r} must be a non-empty list of "
                            "{'ipc': int, 'mean': float, 'std': float} points")
    return d


def accuracy_vs_ipc_plot(results: Mapping[str, Any], path: str | Path) -> Path:
    """Test accuracy (mean ± std) against IPC (log axis) per series, the full real set as a
    horizontal line; ``results`` as read by :func:`load_accuracy_results`. Writes a PNG."""
    plt, fig, ax = _figure(1, 1)
    for j, (name, pts) in enumerate(results["series"].items()):
        pts = sorted(pts, key=lambda p: p["ipc"])
        x = [p["ipc"] for p in pts]
        y = np.array([p["mean"] for p in pts], dtype=float)
        e = np.array([p.get("std", 0.0) for p in pts], dtype=float)
        ax.errorbar(x, y, yerr=e, marker=MARKERS[j % len(MARKERS)], capsize=3, label=name)
    full = results.get("full")
    if full is not None:
        mean = full["mean"] if isinstance(full, dict) else float(full)
        label = full.get("label", "full real set") if isinstance(full, dict) else "full real set"
        ax.axhline(mean, color="black", linestyle="--", label=f"{label} ({mean:.1f})")
    ax.set_xscale("log")
    ipcs = sorted({p["ipc"] for pts in results["series"].values() for p in pts})
    ax.set_xticks(ipcs, [str(i) for i in ipcs])  # the measured IPCs, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("images per class (IPC)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: curves cross anywhere
    ax.set_title(results.get("title", "accuracy versus IPC"))
    return _save(plt, fig, path)
