"""DM accuracy against the number of iterations (so a user can pick a budget).

Distils Fashion-MNIST with DM (fast preset) once, snapshots the synthetic set at the given
iterations (with the distillation wall time so far), then evaluates every snapshot under the
``dsa`` protocol. Snapshots and results go to ``benchmarks/results/dm_curve/``; an existing
evaluation is reused, so the script can be re-run to add models or iterations; a killed
distillation resumes from its checkpoint (``<prefix>.ckpt.pt``) and a killed evaluation from its
finished networks (``dm_curve/checkpoints/``).

    python benchmarks/bench_dm_curve.py --ipc 10 --snapshots 100,200,400,800,1500 --num-eval 5

``--set K=V`` (repeatable) overrides the preset (e.g. ``--set lr_img=10``, a candidate chosen on
the validation split by tune_preset.py); such snapshots carry the overrides in their file names.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import eval_checkpoint  # benchmarks/common.py
from datadistill import SyntheticSet, load_dataset
from datadistill.config import parse_override
from datadistill.evaluate import evaluate
from datadistill.methods import distill
from datadistill.utils import atomic_write_text, machine_description, peak_memory_mb, tune_allocator

OUT = Path(__file__).parent / "results" / "dm_curve"


def main() -> None:
    tune_allocator()  # as the command line does
    ap = argparse.ArgumentParser()
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--snapshots", default="100,200,400,800,1500")
    ap.add_argument("--num-eval", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-only", action="store_true", help="only evaluate existing snapshots")
    ap.add_argument("--eval-only-largest", action="store_true",
                    help="evaluate only the last snapshot now (the others later, with --eval-only)")
    ap.add_argument("--set", action="append", default=[], metavar="K=V",
                    help="override a fast-preset key (repeatable)")
    a = ap.parse_args()
    overrides = dict(parse_override(kv) for kv in a.set)
    snaps = sorted(int(s) for s in a.snapshots.split(","))
    train, test = load_dataset("fashion-mnist")
    OUT.mkdir(parents=True, exist_ok=True)
    prefix = f"dm-ipc{a.ipc}-s{a.seed}" + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    missing = [s for s in snaps if not (OUT / f"{prefix}-it{s}.pt").exists()]
    if missing and not a.eval_only:
        def snapshot(step: int, synset_fn) -> None:
            # only the missing ones: a stored snapshot may carry another machine's evaluation;
            # the set's distill_seconds include the part of a resumed run done before the kill
            if step in missing:
                synset_fn().save(OUT / f"{prefix}-it{step}.pt")

        ckpt = OUT / f"{prefix}-to{max(snaps)}.ckpt.pt"
        distill("dm", train, a.ipc, preset="fast", seed=a.seed, steps=max(snaps),
                callbacks=(snapshot,), checkpoint=ckpt, resume=True, **overrides)
        ckpt.unlink(missing_ok=True)
    lost = [s for s in missing if not (OUT / f"{prefix}-it{s}.pt").exists()]
    if lost:  # --eval-only, or a distillation resumed from a checkpoint past them
        print(f"no snapshot at iterations {lost} (not distilled, or the distillation resumed "
              f"after them): run --snapshots {','.join(map(str, lost))} without --eval-only to "
              "make them", flush=True)
    for s in snaps[-1:] if a.eval_only_largest else snaps:
        path = OUT / f"{prefix}-it{s}.json"
        if s in lost:
            continue
        if path.exists() and json.loads(path.read_text())["num_eval"] >= a.num_eval:
            continue
        synset = SyntheticSet.load(OUT / f"{prefix}-it{s}.pt")
        eval_ckpt = eval_checkpoint(OUT, path.stem)
        res = evaluate(synset, "dsa", ["convnet"], a.num_eval, seed=0, train=train, test=test,
                       baseline=False, checkpoint=eval_ckpt)
        sc = res.scores["convnet"]
        row = {"ipc": a.ipc, "iterations": s, "overrides": overrides,
               "config": synset.meta.get("config"),
               "distill_seconds": synset.meta["distill_seconds"],
               "accuracies": sc.accuracies, "mean": sc.mean, "std": sc.std,
               "num_eval": a.num_eval, "eval_seconds": res.wall_seconds,
               "peak_memory_mb": peak_memory_mb(),  # of the process: the distillation's if it ran
               "date": time.strftime("%Y-%m-%d"), "machine": machine_description(),
               "command": f"python benchmarks/bench_dm_curve.py --ipc {a.ipc} --snapshots "
                          f"{a.snapshots} --num-eval {a.num_eval}"
                          + "".join(f" --set {kv}" for kv in a.set)}
        atomic_write_text(path, json.dumps(row, indent=2))
        eval_ckpt.unlink(missing_ok=True)
        print(f"it {s}: {sc.mean:.2f} ± {sc.std:.2f} ({synset.meta['distill_seconds']} s)",
              flush=True)


if __name__ == "__main__":
    main()
