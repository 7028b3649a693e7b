"""FRePo (optionally with crucial-sample selection + ISA) on Fashion-MNIST: distil with a preset,
then evaluate under the ``frepo`` protocol, next to a random real subset under the same protocol
and seeds; each trained network also predicts by KRR on its features (FRePo's KRR predictor, the
same networks; ``--no-krr`` skips it).

Each row is written to ``benchmarks/results/frepo/<name>.json`` (the synthetic set beside it as
``.pt``; a killed run resumes its distillation or its evaluation, see ``benchmarks/common.py``);
``benchmarks/report.py`` puts the rows into BENCHMARKS.md. Wall time depends on other
load on the machine, so the process CPU time (both threads together) and the load average are
recorded too.

    python benchmarks/bench_frepo.py --ipc 10                       # FRePo, fast preset
    python benchmarks/bench_frepo.py --ipc 10 --strategy isa        # + crucial samples + ISA
    python benchmarks/bench_frepo.py --ipc 10 --strategy isa --isa-eps 0       # discard only
    python benchmarks/bench_frepo.py --ipc 10 --strategy isa --discard-easy 0  # ISA only
    python benchmarks/bench_frepo.py --ipc 10 --synset PATH         # evaluate an existing set
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from common import distill_provenance, distilled_set, eval_checkpoint  # benchmarks/common.py
from datadistill import load_dataset
from datadistill.config import parse_override
from datadistill.evaluate import evaluate, get_protocol
from datadistill.methods import make_distiller
from datadistill.strategies import STRATEGIES
from datadistill.synthetic import SyntheticSet
from datadistill.utils import atomic_write_text, peak_memory_mb, tune_allocator

RESULTS = Path(__file__).parent / "results" / "frepo"


def main() -> None:
    tune_allocator()  # as the command line does
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--strategy", default=None, help="isa (default options) or none")
    ap.add_argument("--discard-easy", type=float, default=None,
                    help="strategy option (isa default 0.2; negative drops the hardest)")
    ap.add_argument("--isa-eps", type=float, default=None, help="strategy option (isa default 1.0)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-eval", type=int, default=5)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-krr", action="store_true",
                    help="skip the KRR predictor (one feature pass over the test set per network)")
    ap.add_argument("--synset", default=None, help="evaluate this set instead of distilling")
    ap.add_argument("--name", default=None)
    a = ap.parse_args()
    overrides = dict(parse_override(s) for s in a.set)
    strategy_options = {k: v for k, v in (("discard_easy", a.discard_easy),
                                          ("isa_eps", a.isa_eps)) if v is not None}
    if strategy_options and not a.strategy:
        ap.error("--discard-easy / --isa-eps are options of a strategy: add --strategy isa")
    name = a.name or "-".join(
        [a.dataset, "frepo" + (f"+{a.strategy}" if a.strategy else ""), f"ipc{a.ipc}", a.preset]
        + [f"{k}{v}" for k, v in {**strategy_options, **overrides}.items()])
    RESULTS.mkdir(parents=True, exist_ok=True)
    train, test = load_dataset(a.dataset)
    row: dict = {"dataset": a.dataset, "ipc": a.ipc, "preset": a.preset, "strategy": a.strategy,
                 "strategy_options": strategy_options,
                 "overrides": overrides, "seed": a.seed, "threads": torch.get_num_threads(),
                 "load_average_start": os.getloadavg()[0]}
    strategy = STRATEGIES.get(a.strategy)(strategy_options) if a.strategy else None
    d = make_distiller("frepo", dataset=a.dataset, ipc=a.ipc, preset=a.preset, overrides=overrides)
    if a.synset:
        synset, reused = SyntheticSet.load(a.synset), True
    else:
        w0, c0 = time.perf_counter(), time.process_time()
        synset, reused = distilled_set(
            RESULTS / f"{name}.pt", RESULTS / f"{name}.json",
            lambda ckpt: (d.distill(train, a.ipc, seed=a.seed, checkpoint=ckpt, resume=True)
                          if strategy is None else
                          strategy.run(d, train, a.ipc, seed=a.seed, checkpoint=ckpt,
                                       resume=True)),
            seed=a.seed, config={**d.config, **({"strategy": {"name": strategy.name,
                                                              **strategy.options}}
                                                if strategy else {})})
    row["synset"] = a.synset or str(RESULTS / f"{name}.pt")
    eval_ckpt = eval_checkpoint(RESULTS, f"{name}-frepo")
    row.update(distill_provenance(synset, RESULTS / f"{name}.json", reused and not a.synset,
                                  eval_ckpt))
    if reused:
        row["distill_seconds"] = synset.meta.get("distill_seconds")
        row["config"] = synset.meta.get("config")
    else:
        row["config"] = d.config
        # a resumed run counts only its own time; the set's meta carries the whole run's
        row["distill_seconds"] = float(synset.meta.get("distill_seconds")
                                       or time.perf_counter() - w0)
        row["distill_cpu_seconds"] = time.process_time() - c0  # this process only
    row.setdefault("load_average_after_distill", os.getloadavg()[0])
    row["command"] = "python benchmarks/bench_frepo.py " + " ".join(
        [f"--ipc {a.ipc}"] + ([f"--strategy {a.strategy}"] if a.strategy else [])
        + [f"--{k.replace('_', '-')} {v:g}" for k, v in strategy_options.items()]
        + ([f"--synset {a.synset}"] if a.synset else [])
        + (["--no-baseline"] if a.no_baseline else [])
        + [f"--set {s}" for s in a.set] + ([f"--num-eval {a.num_eval}"] if a.num_eval != 5 else [])
        + (["--no-krr"] if a.no_krr else []))
    # The synthetic set's networks first, and the row written with them; then the random
    # subset's (the same checkpoint re-uses the first part), and the row again, complete.
    c0 = time.process_time()
    for baseline in [False] + ([] if a.no_baseline else [True]):
        r = evaluate(synset, get_protocol("frepo"), num_eval=a.num_eval, seed=0, train=train,
                     test=test, baseline=baseline, krr=not a.no_krr,
                     checkpoint=eval_ckpt)
        row["frepo"] = r.to_dict()
        row["frepo"]["cpu_seconds"] = time.process_time() - c0
        row["complete"] = baseline or a.no_baseline
        row["peak_memory_mb"] = peak_memory_mb()
        row["load_average_end"] = os.getloadavg()[0]
        row["date"] = time.strftime("%Y-%m-%d")
        atomic_write_text(RESULTS / f"{name}.json", json.dumps(row, indent=2, default=str))
        print(r.table(), f"\nwrote {RESULTS / f'{name}.json'}", flush=True)
    eval_ckpt.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
