"""Regenerate the Fashion-MNIST tables of BENCHMARKS.md: each (method, IPC) is distilled with the
``fast`` preset and evaluated under the ``dsa`` protocol (``idc`` for IDC) with 5 ConvNet-3
networks.

Each finished row is cached in ``benchmarks/results/table/<method>-ipc<N>.json`` and a killed row
resumes (its distillation from a checkpoint, its evaluation from the finished networks; see
``benchmarks/common.py``), so an interrupted run (or a later session) continues where it stopped;
``--force`` recomputes. The table itself is
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

from common import distilled_set, eval_checkpoint  # benchmarks/common.py
from datadistill import load_dataset
from datadistill.evaluate import evaluate
from datadistill.methods import METHODS, make_distiller
from datadistill.utils import Timer, atomic_write_text, machine_description, peak_memory_mb, tune_allocator

RESULTS = Path(__file__).parent / "results" / "table"


def run_row(method: str, ipc: int, train, test, num_eval: int, seed: int) -> dict:
    out = RESULTS / f"{method}-ipc{ipc}"
    d = make_distiller(method, dataset="fashion-mnist", ipc=ipc, preset="fast")
    with Timer() as t_distill:
        synset, reused = distilled_set(
            out.with_suffix(".pt"), out.with_suffix(".json"),
            lambda ckpt: d.distill(train, ipc, seed=seed, checkpoint=ckpt, resume=True),
            config=d.config, seed=seed)
    # a re-used set's distillation finished in the killed run, which recorded its time in the set
    distill_s = synset.meta["distill_seconds"] if reused else t_distill.seconds
    if synset.meta.get("embedding_cached"):  # herding/k-center reused the embedding: count it
        distill_s += synset.meta["embedding_seconds"]
    protocol = METHODS.get(method).default_protocol  # idc for IDC, frepo for FRePo, else dsa
    # the random rows of the table are under ``dsa``; under another protocol the row carries its
    # own random subset (same protocol and seeds), as every comparison must
    with_baseline = protocol != "dsa" and method != "random"
    # wall_seconds includes the networks a killed run recorded in the checkpoint
    res = evaluate(synset, protocol, ["convnet"], num_eval, seed=0, train=train, test=test,
                   baseline=with_baseline, checkpoint=eval_checkpoint(RESULTS, out.name))
    s = res.scores["convnet"]
    base = res.baseline["convnet"] if res.baseline else None
    row = {
        "dataset": "fashion-mnist", "method": method, "ipc": ipc, "preset": "fast",
        "protocol": protocol, "num_eval": num_eval, "accuracies": s.accuracies,
        "mean": s.mean, "std": s.std, "distill_seconds": distill_s,
        "config": synset.meta.get("config"),
        "eval_seconds": res.wall_seconds, "eval_seconds_per_model": sum(s.seconds) / num_eval,
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
            eval_checkpoint(RESULTS, path.stem).unlink(missing_ok=True)
            print(f"{method} ipc {ipc}: {row['mean']:.2f} ± {row['std']:.2f}", flush=True)


if __name__ == "__main__":
    main()
