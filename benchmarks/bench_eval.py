"""Evaluation speed and accuracy: our evaluator (precision auto, i.e. bf16 autocast where the
hardware runs bf16 natively, + torch.compile) vs the original
evaluator's plain fp32 eager loop, side by side on the same synthetic set with the same seeds.

Both train ConvNet-3 under the ``dsa`` protocol (1000 epochs, per-sample DSA, SGD lr 0.01,
momentum 0.9, wd 5e-4, batch 256, lr x0.1 at epoch 500) and test after the last epoch.

    python benchmarks/bench_eval.py --synset benchmarks/results/table/random-ipc10.pt \
        --num-eval 5 --num-eval-ref 2 --ours-from benchmarks/results/table/random-ipc10.json

``--ours-from`` reuses the accuracies and times that ``run_all.py`` measured for the same synthetic
set with the same evaluator, seeds and protocol, instead of training those networks again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from datadistill import SyntheticSet, load_dataset
from datadistill.augment import default_strategy
from datadistill.evaluate import get_protocol, train_and_test
from datadistill.utils import machine_description, resolve_device, resolve_precision, tune_allocator


def main() -> None:
    tune_allocator()  # as the command line does
    ap = argparse.ArgumentParser()
    ap.add_argument("--synset", required=True)
    ap.add_argument("--num-eval", type=int, default=5, help="networks, our evaluator")
    ap.add_argument("--num-eval-ref", type=int, default=2, help="networks, fp32 eager evaluator")
    ap.add_argument("--ours-from", default=None, help="run_all.py row of the same synset")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/eval_speed.json")
    a = ap.parse_args()
    synset = SyntheticSet.load(a.synset)
    _, test = load_dataset(synset.meta["dataset"])
    proto = get_protocol("dsa")
    if a.epochs:
        proto = proto.with_(epochs=a.epochs)
    x, y = synset.decode()
    dev = resolve_device(None)
    strategy = default_strategy(synset.meta["dataset"])
    res: dict = {"synset": a.synset, "ipc": synset.ipc, "epochs": proto.epochs,
                 "num_eval": a.num_eval, "date": time.strftime("%Y-%m-%d"),
                 "machine": machine_description(dev),
                 "ours_precision": resolve_precision("auto", dev)}
    # key kept from the first version of this script: "ours" is precision auto + compile
    variants = [("ours_bf16_compiled", "auto", True, a.num_eval),
                ("reference_fp32_eager", "fp32", False, a.num_eval_ref)]
    if a.ours_from:
        row = json.loads(Path(a.ours_from).read_text())
        per = row["eval_seconds_per_model"]
        res["ours_bf16_compiled"] = {"acc": row["accuracies"], "mean": row["mean"],
                                     "std": row["std"], "seconds": [per] * len(row["accuracies"]),
                                     "mean_seconds_after_first": per, "from": a.ours_from}
        variants = variants[1:]
    for label, precision, compile, n in variants:
        accs, secs = [], []
        for i in range(n):
            acc, sec, _ = train_and_test("convnet", x, y, test, proto, seed=i, dsa_strategy=strategy,
                                      device=dev, precision=precision, compile=compile)
            accs.append(acc)
            secs.append(sec)
            print(label, i, f"{acc:.2f}", f"{sec:.1f}s", flush=True)
            res[label] = {"acc": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                          "seconds": secs,
                          "mean_seconds_after_first": float(np.mean(secs[1:] or secs))}
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(res, indent=2))  # partial results survive a kill
    res["speedup"] = (res["reference_fp32_eager"]["mean_seconds_after_first"]
                      / res["ours_bf16_compiled"]["mean_seconds_after_first"])
    res["accuracy_gap"] = res["ours_bf16_compiled"]["mean"] - res["reference_fp32_eager"]["mean"]
    print(json.dumps(res, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
