"""``analyze``: all diagnostics of one synthetic set, as a dict, a JSON file, PNGs and a text
summary (used by ``datadistill analyze``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from datadistill.analysis.isa import hard_easy_summary
from datadistill.analysis.metrics import (
    embed,
    feature_network,
    manifold_metrics,
    subsample,
    update_signal_similarity,
)
from datadistill.analysis.plots import segment_plot, tsne_plot
from datadistill.data import RealDataset
from datadistill.synthetic import SyntheticSet
from datadistill.utils import atomic_write_text, make_generator, resolve_device


def analyze(
    synset: SyntheticSet | str | Path,
    *,
    out_dir: str | Path | None = None,
    train: RealDataset | None = None,
    features: str = "random",
    net: str = "convnet",
    feature_epochs: int = 5,
    k: int = 5,
    max_real: int = 5000,
    tsne: bool = True,
    tsne_real: int = 2000,
    hard_easy: int = 0,
    hard_easy_net: str = "frepo-convnet-bn",
    hard_easy_batch: int = 1024,
    seed: int = 0,
    device: torch.device | str | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Diagnostics of ``synset`` (a SyntheticSet, a ``synset.pt`` or its run folder).

    * ``update_signal``: update-signal similarity (EDD Figure 1) when the set keeps its initial
      images (``SyntheticSet.initial``) and some class has two or more, else None (IPC 1);
    * ``manifold``: k-NN precision / recall / coverage of ``max_real`` random real training
      images by the synthetic set in a fixed feature space (``features``: ``"random"`` or
      ``"trained"`` ``net`` from ``seed``; see :func:`feature_network`);
    * ``segments``: per-segment records of a sequential set (pool sizes, dropped, forgotten);
    * ``hard_easy`` (when ``hard_easy`` > 0): the ISA paper's hard-predicts-easy diagnostic
      (:func:`~datadistill.analysis.isa.hard_predicts_easy`, easy fraction 0.2) over
      ``hard_easy`` draws of a real batch of ``hard_easy_batch`` images and a fresh
      ``hard_easy_net`` (seeds ``seed`` ... ``seed + hard_easy - 1``): mean and std of both
      losses, and every draw;
    * with ``out_dir``: ``analysis.json``, ``tsne.png`` (unless ``tsne=False``) and, for a
      sequential set, ``segments.png``, all written atomically.

    ``train`` is loaded from ``synset.meta["dataset"]`` when omitted (``data_root``).
    """
    from datadistill.evaluate.api import resolve_splits

    source = None
    if not isinstance(synset, SyntheticSet):
        source = Path(synset)
        synset = SyntheticSet.load(source)
        if out_dir is None:
            out_dir = (source if source.is_dir() else source.parent) / "analysis"
    dev = resolve_device(device)
    if train is None:
        train, _ = resolve_splits(synset, None, None, True, data_root)
    assert train is not None
    meta = synset.meta
    seg_stored = meta.get("segment")
    seg_stored_t = torch.tensor(seg_stored) if seg_stored is not None else None
    result: dict[str, Any] = {"source": str(source) if source else None,
                              "method": meta.get("method"),
                              "strategy": (meta.get("strategy") or {}).get("name"),
                              "dataset": meta.get("dataset"), "ipc": synset.ipc}

    result["update_signal"] = None
    # a pairwise similarity needs a pair: at IPC 1 it is undefined, not an error of the caller
    if synset.initial is not None and int(torch.bincount(synset.hard_labels).max()) >= 2:
        result["update_signal"] = update_signal_similarity(
            synset.images, synset.initial, synset.hard_labels, seg_stored_t)

    x_syn, y_syn = synset.decode()
    y_syn = y_syn.argmax(1) if y_syn.dim() == 2 else y_syn
    seg_dec = None if seg_stored_t is None else seg_stored_t.repeat_interleave(synset.factor**2)
    fnet = feature_network(train, kind=features, net=net, seed=seed, epochs=feature_epochs,
                           device=dev)
    real_sub = subsample(train, max_real, seed)
    f_real, f_syn = embed(fnet, real_sub.images), embed(fnet, x_syn)
    result["manifold"] = {**manifold_metrics(f_real, f_syn, k), "k": k, "features": features,
                          "net": net, "real_images": len(real_sub), "synthetic_images": len(x_syn)}
    records = (meta.get("sequential") or {}).get("segments")
    result["segments"] = records
    result["hard_easy"] = None
    if hard_easy > 0:
        result["hard_easy"] = hard_easy_summary(synset, train, draws=hard_easy, net=hard_easy_net,
                                                batch=hard_easy_batch, seed=seed, device=dev)

    if out_dir is not None:
        out = Path(out_dir)
        files: dict[str, str] = {}
        if tsne:
            # a random subset: the sample is index-sorted and ImageFolder data is class-ordered
            pick = torch.randperm(len(real_sub), generator=make_generator(seed + 1))[:tsne_real]
            files["tsne"] = str(tsne_plot(
                f_real[pick], real_sub.labels.cpu()[pick], f_syn, y_syn.cpu(), out / "tsne.png",
                syn_segments=seg_dec, class_names=train.class_names, seed=seed,
                title=f"{result['dataset']} IPC {result['ipc']}: {result['method']}"
                      + (f" + {result['strategy']}" if result["strategy"] else "")))
        if records:
            files["segments"] = str(segment_plot(records, out / "segments.png"))
        result["files"] = files
        atomic_write_text(out / "analysis.json", json.dumps(result, indent=2))
        result["files"]["json"] = str(out / "analysis.json")
    return result


def format_report(result: dict[str, Any]) -> str:
    """A plain-text summary of :func:`analyze`'s result."""
    name = str(result.get("method")) + (f" + {result['strategy']}" if result.get("strategy") else "")
    lines = [f"{result.get('dataset')}, IPC {result.get('ipc')}, {name}"]
    us = result.get("update_signal")
    if us is None:
        lines.append("update-signal similarity: n/a (no initial images kept, or IPC 1)")
    else:
        line = f"update-signal similarity (mean pairwise cosine within a class): {us['mean']:.4f}"
        if us.get("within_segment") is not None and us.get("across_segment") is not None:
            line += (f"; same segment {us['within_segment']:.4f}, "
                     f"different segments {us['across_segment']:.4f}")
        lines.append(line)
    m = result["manifold"]
    lines.append(f"k-NN manifold (k={m['k']}, {m['features']} {m['net']} features, "
                 f"{m['real_images']} real / {m['synthetic_images']} synthetic): precision "
                 f"{m['precision']:.4f}, recall {m['recall']:.4f}, coverage {m['coverage']:.4f}")
    he = result.get("hard_easy")
    if he:
        lines.append(f"hard predicts easy (ISA; KRR on fresh {he['net']} features, batch "
                     f"{he['batch']}, {len(he['draws'])} draws): hardest 80 % -> easiest 20 % "
                     f"{he['hard_to_easy']:.4f} ± {he['hard_to_easy_std']:.4f}, easiest 80 % -> "
                     f"hardest 20 % {he['easy_to_hard']:.4f} ± {he['easy_to_hard_std']:.4f}")
    records = result.get("segments")
    if records:
        lines.append(f"{'segment':>8}{'IPC':>6}{'steps':>8}{'pool':>8}{'reg pool':>10}"
                     f"{'probe acc %':>13}{'forgotten':>11}{'learned':>9}{'dropped':>9}{'s':>9}")
        for r in records:
            lines.append(
                f"{r['index'] + 1:>8}{r['ipc']:>6}{r['steps']:>8}{r['pool_size']:>8}"
                f"{r['reg_pool_size']:>10}{r['probe_train_accuracy']:>13.2f}"
                f"{'-' if r['forgotten'] is None else r['forgotten']:>11}"
                f"{'-' if r['learned'] is None else r['learned']:>9}{r['dropped']:>9}"
                f"{r['seconds']:>9.1f}")
    for key, path in (result.get("files") or {}).items():
        lines.append(f"{key}: {path}")
    return "\n".join(lines)
