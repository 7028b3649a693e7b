"""Regenerate the Fashion-MNIST tables of BENCHMARKS.md: each (method, IPC) is distilled with the
``fast`` preset and evaluated under the ``dsa`` protocol (``idc`` for IDC) with 5 ConvNet-3
networks.

Each finished row is cached in ``benchmarks/results/table/<method>-ipc<N>.json`` so an interrupted
run (or a later session) continues where it stopped; ``--force`` recomputes. The table itself is
written by ``benchmarks/report.py``.

    python benchmarks/run_all.py --methods random,herding,k-center,dm --ipcs 1,10,50
    python benchmarks/run_all.py --methods dc,dsa,idc --ipcs 1,10      # gradient matching
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from datadistill import load_dataset
from datadistill.evaluate import evaluate
from datadistill.methods import METHODS, distill
from datadistill.utils import Timer, atomic_write_text, machine_description, peak_memory_mb, tune_allocator

RESULTS = Path(__file__).parent / "results" / "table"


def run_row(method: str, ipc: int, train, test, num_eval: int, seed: int) -> dict:
    with Timer() as t_distill:
        synset = distill(method, train, ipc, preset="fast", seed=seed)
    distill_s = t_distill.seconds
    if synset.meta.get("embedding_cached"):  # herding/k-center reused the embedding: count it
        distill_s += synset.meta["embedding_seconds"]
    out = RESULTS / f"{method}-ipc{ipc}"
    synset.save(out.with_suffix(".pt"))
    protocol = METHODS.get(method).default_protocol  # idc for IDC, frepo for FRePo, else dsa
    # the random rows of the table are under ``dsa``; under another protocol the row carries its
    # own random subset (same protocol and seeds), as every comparison must
    with_baseline = protocol != "dsa" and method != "random"
    with Timer() as t_eval:
        res = evaluate(synset, protocol, ["convnet"], num_eval, seed=0,
                       train=train, test=test, baseline=with_baseline)
    s = res.scores["convnet"]
    base = res.baseline["convnet"] if res.baseline else None
    row = {
        "dataset": "fashion-mnist", "method": method, "ipc": ipc, "preset": "fast",
        "protocol": protocol, "num_eval": num_eval, "accuracies": s.accuracies,
        "mean": s.mean, "std": s.std, "distill_seconds": distill_s,
        "config": synset.meta.get("config"),
        "eval_seconds": t_eval.seconds, "eval_seconds_per_model": sum(s.seconds) / num_eval,
        "peak_memory_mb": peak_memory_mb(), "threads": torch.get_num_threads(),
        "machine": machine_description(),
        "command": f"python benchmarks/run_all.py --methods {method} --ipcs {ipc}",
        "date": time.strftime("%Y-%m-%d"),
    }
    if base is not None:
        row["baseline"] = {"accuracies": base.accuracies, "mean": base.mean, "std": base.std}
    return row


def main() -> None:
    tune_allocator()  # as the command line does
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="random,herding,k-center,dm")
    ap.add_argument("--ipcs", default="1,10,50")
    ap.add_argument("--num-eval", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    train, test = load_dataset("fashion-mnist")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for ipc in [int(i) for i in a.ipcs.split(",")]:
        for method in a.methods.split(","):
            path = RESULTS / f"{method}-ipc{ipc}.json"
            if path.exists() and not a.force:
                print(f"{path} exists, skipping")
                continue
            row = run_row(method, ipc, train, test, a.num_eval, a.seed)
            atomic_write_text(path, json.dumps(row, indent=2))
            print(f"{method} ipc {ipc}: {row['mean']:.2f} ± {row['std']:.2f}", flush=True)


if __name__ == "__main__":
    main()
