"""The ISA paper's diagnostics of FRePo synthetic sets (its section 2.2 and appendix B):

* **recall / coverage** of the real training set by the synthetic set, k-NN manifolds with
  k = 5 (the paper: recall 0.84 -> 0.89 once the easiest samples are discarded), in the same
  fixed feature space as the sequential benchmark (a random ConvNet-3, 5,000 real images);
* **hard predicts easy**: KRR loss of predicting the easiest 20 % of a real batch of 1,024 from
  the hardest 80 % and the reverse, the batch ranked by each sample's KRR loss predicted from the
  synthetic set in the features of a fresh FRePo pool network (the paper: 0.0661 vs 0.1430 on
  CIFAR-10 IPC 10), mean ± std over 5 draws of batch and network.

Each set's result goes to ``benchmarks/results/isa_diag/<set name>.json``; ``report.py`` puts
them into BENCHMARKS.md. ``--random IPC`` adds a random real subset at that IPC as the
reference.

    python benchmarks/bench_isa_diag.py benchmarks/results/frepo/*.pt --random 1 --random 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from datadistill import load_dataset
from datadistill.analysis import analyze
from datadistill.methods.coreset import random_subset
from datadistill.synthetic import SyntheticSet
from datadistill.utils import atomic_write_text, machine_description, tune_allocator

RESULTS = Path(__file__).parent / "results" / "isa_diag"


def main() -> None:
    tune_allocator()
    ap = argparse.ArgumentParser()
    ap.add_argument("synsets", nargs="*", help="synthetic sets (.pt) of one dataset")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--random", type=int, action="append", default=[], metavar="IPC",
                    help="also a random real subset at this IPC (repeatable)")
    ap.add_argument("--draws", type=int, default=5, help="hard-predicts-easy draws")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not a.synsets and not a.random:
        ap.error("pass synthetic sets and/or --random IPC")
    train, _ = load_dataset(a.dataset)
    # (name, set, its part of the command that reproduces the row)
    sets: list[tuple[str, SyntheticSet, str]] = [(Path(p).stem, SyntheticSet.load(p), p)
                                                 for p in a.synsets]
    for ipc in a.random:
        x, y = random_subset(train, ipc, a.seed)
        sets.append((f"{a.dataset}-random-ipc{ipc}",
                     SyntheticSet(x, y, train.class_names, train.preprocessing,
                                  meta={"dataset": a.dataset, "method": "random"}),
                     f"--random {ipc}"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, synset, arg in sets:
        t0 = time.perf_counter()
        r = analyze(synset, train=train, tsne=False, hard_easy=a.draws, seed=a.seed)
        row = {"name": name, "dataset": a.dataset, "ipc": synset.ipc,
               "method": synset.meta.get("method"), "strategy": synset.meta.get("strategy"),
               "manifold": r["manifold"], "hard_easy": r["hard_easy"],
               "seconds": time.perf_counter() - t0, "machine": machine_description(),
               "date": time.strftime("%Y-%m-%d"),
               "command": f"python benchmarks/bench_isa_diag.py {arg}"}
        atomic_write_text(RESULTS / f"{name}.json", json.dumps(row, indent=2, default=str))
        he, m = r["hard_easy"], r["manifold"]
        print(f"{name}: recall {m['recall']:.4f} coverage {m['coverage']:.4f}; hard->easy "
              f"{he['hard_to_easy']:.4f} ± {he['hard_to_easy_std']:.4f}, easy->hard "
              f"{he['easy_to_hard']:.4f} ± {he['easy_to_hard_std']:.4f} ({row['seconds']:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
