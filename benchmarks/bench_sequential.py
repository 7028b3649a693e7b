"""A base method against the same method wrapped in the sequential-segments strategy, at equal
distillation steps, on Fashion-MNIST: each variant is distilled with a preset (``--steps``
overrides it for every variant alike), evaluated with 5 ConvNet-3 under one protocol with the
same seeds, and diagnosed (update-signal similarity, k-NN recall / coverage of the real set,
per-segment pools and forgetting).

Variants (``--variant``):

* ``base``: the method alone;
* ``seq``: sequential with filtering and the regulariser at weight 1 (the other options at
  the strategy's defaults);
* ``nofilter``: segments, nothing dropped (``drop_fraction 0``; the regulariser then has no pool);
* ``noreg``: filtering without the regulariser (``reg_weight 0``);
* ``seq-trained``: ``seq`` with matching networks started from the probe (``init_from_trained``).

``--reg-weight W`` / ``--drop-fraction P`` override the variant's value (a sweep of the strategy's
two knobs); ``--set K=V`` overrides a preset key of the base method for every variant alike (e.g.
``--set init=real`` to compare with rows made before the preset's init changed); the file name
and the recorded command carry them.

Each row is written to ``benchmarks/results/sequential/<method>-ipc<N>-<variant>[-...].json``
(the set beside it as ``.pt``; a killed run resumes its distillation or its evaluation, see
``benchmarks/common.py``). A finished row is skipped; one made with settings other than what its
command resolves to now (a preset changed since) is refused, not overwritten; ``--force``
measures it again;
``benchmarks/report.py`` puts the rows into BENCHMARKS.md.

    python benchmarks/bench_sequential.py --method dm --ipc 10 --segments 2 --steps 120 --variant seq
    python benchmarks/bench_sequential.py --method dm --ipc 10 --steps 120 --variant base
    python benchmarks/bench_sequential.py --method dm --ipc 10 --segments 2 --steps 120 --reg-weight 0.3
    python benchmarks/bench_sequential.py --method dm --ipc 50 --segments 5 --variant seq \
        --models convnet,resnet18-bn,vgg11,alexnet          # + the cross-architecture table
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from common import (  # benchmarks/common.py
    distill_provenance,
    distilled_set,
    eval_checkpoint,
    finished_row,
)
from datadistill import load_dataset
from datadistill.analysis.report import analyze
from datadistill.config import parse_override
from datadistill.evaluate import evaluate
from datadistill.methods import make_distiller
from datadistill.strategies import STRATEGIES
from datadistill.utils import atomic_write_text, peak_memory_mb, tune_allocator

RESULTS = Path(__file__).parent / "results" / "sequential"
# The variants pin the regulariser weight their rows were made with (1; the strategy's default
# was 0.1 for a day on 2026-12-06, benchmarks/notes.md), so their commands keep reproducing those
# rows whatever the default.
VARIANTS: dict[str, dict | None] = {
    "base": None,
    "seq": {"reg_weight": 1.0},
    "nofilter": {"drop_fraction": 0.0, "reg_weight": 1.0},
    "noreg": {"reg_weight": 0.0},
    "seq-trained": {"init_from_trained": True, "reg_weight": 1.0},
}


def main() -> None:
    tune_allocator()  # as the command line does
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="dm")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="seq")
    ap.add_argument("--segments", type=int, default=None, help="K (strategy default otherwise)")
    ap.add_argument("--steps", type=int, default=None, help="total steps (preset otherwise)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-eval", type=int, default=5)
    ap.add_argument("--baseline", action="store_true", help="also evaluate the random subset")
    ap.add_argument("--reg-weight", type=float, default=None, help="override the variant's")
    ap.add_argument("--drop-fraction", type=float, default=None, help="override the variant's")
    ap.add_argument("--set", action="append", default=[], metavar="K=V",
                    help="override a preset key of the base method (repeatable)")
    ap.add_argument("--models", default="convnet",
                    help="networks to evaluate, comma-separated (issue 3's cross-architecture "
                         "table: convnet,resnet18-bn,vgg11,alexnet); the first is the main column")
    ap.add_argument("--force", action="store_true",
                    help="measure a finished row again (else it is skipped, or refused where its "
                         "settings differ from what the command resolves to now)")
    a = ap.parse_args()
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    preset_overrides = dict(parse_override(kv) for kv in a.set)
    options = VARIANTS[a.variant]
    overrides = {k: v for k, v in (("segments", a.segments), ("reg_weight", a.reg_weight),
                                   ("drop_fraction", a.drop_fraction)) if v is not None}
    if options is None and set(overrides) - {"segments"}:
        ap.error("--reg-weight / --drop-fraction apply to the strategy variants, not to 'base'")
    if options is not None:
        options = {**options, **overrides}
    name = "-".join([f"{a.method}-ipc{a.ipc}-{a.variant}"]
                    + ([f"k{a.segments}"] if a.segments and options is not None else [])
                    + ([f"reg{a.reg_weight:g}"] if a.reg_weight is not None else [])
                    + ([f"drop{a.drop_fraction:g}"] if a.drop_fraction is not None else [])
                    + ([f"s{a.steps}"] if a.steps else [])
                    + [f"{k}{v}" for k, v in sorted(preset_overrides.items())]
                    + ([a.preset] if a.preset != "fast" else [])
                    + ([f"seed{a.seed}"] if a.seed else [])
                    + (["xarch"] if models != ["convnet"] else []))
    RESULTS.mkdir(parents=True, exist_ok=True)
    d = make_distiller(a.method, dataset=a.dataset, ipc=a.ipc, preset=a.preset,
                       overrides={**preset_overrides, **({"steps": a.steps} if a.steps else {})})
    strategy = None if options is None else STRATEGIES.get("sequential")(options)
    if finished_row(RESULTS / f"{name}.json", a.force, config=d.config, seed=a.seed,
                    strategy_options=options, num_eval=a.num_eval, models=models):
        return
    train, test = load_dataset(a.dataset)
    w0, c0 = time.perf_counter(), time.process_time()
    synset, reused = distilled_set(
        RESULTS / f"{name}.pt", RESULTS / f"{name}.json",
        lambda ckpt: (d.distill(train, a.ipc, seed=a.seed, checkpoint=ckpt, resume=True)
                      if strategy is None else
                      strategy.run(d, train, a.ipc, seed=a.seed, checkpoint=ckpt, resume=True)),
        config=d.config, seed=a.seed,
        strategy=None if strategy is None else {"name": strategy.name, "options": strategy.options})
    # this process only; unknown for a set an interrupted run made
    distill_cpu_s = None if reused else time.process_time() - c0
    eval_ckpt = eval_checkpoint(RESULTS, name)
    provenance = distill_provenance(synset, RESULTS / f"{name}.json", reused, eval_ckpt)
    # a resumed run counts only its own wall time; the set's meta carries the whole run's
    distill_s = float(synset.meta.get("distill_seconds") or time.perf_counter() - w0)
    protocol = d.default_protocol  # the protocol that fits the method (idc for IDC, else dsa)
    r = evaluate(synset, protocol, models, a.num_eval, seed=0, train=train, test=test,
                 baseline=a.baseline, checkpoint=eval_ckpt)
    print(r.table(), flush=True)
    diag = analyze(synset, train=train, tsne=False, seed=0)
    row = {
        "dataset": a.dataset, "method": a.method, "ipc": a.ipc, "variant": a.variant,
        "strategy_options": options, "preset": a.preset, "preset_overrides": preset_overrides,
        "steps": d.cfg("steps"),
        "config": d.config, "seed": a.seed, "protocol": protocol, "num_eval": a.num_eval,
        "evaluation": r.to_dict(), "distill_seconds": distill_s,
        "distill_cpu_seconds": distill_cpu_s, "models": models,
        "update_signal": diag["update_signal"], "manifold": diag["manifold"],
        "segments": diag["segments"], "peak_memory_mb": peak_memory_mb(),
        "threads": torch.get_num_threads(), "load_average_end": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_sequential.py " + " ".join(
            ([f"--dataset {a.dataset}"] if a.dataset != "fashion-mnist" else [])
            + [f"--method {a.method} --ipc {a.ipc} --variant {a.variant}"]
            + ([f"--segments {a.segments}"] if a.segments else [])
            + ([f"--reg-weight {a.reg_weight:g}"] if a.reg_weight is not None else [])
            + ([f"--drop-fraction {a.drop_fraction:g}"] if a.drop_fraction is not None else [])
            + ([f"--steps {a.steps}"] if a.steps else [])
            + [f"--set {kv}" for kv in a.set]
            + ([f"--preset {a.preset}"] if a.preset != "fast" else [])
            + ([f"--seed {a.seed}"] if a.seed else [])
            + ([f"--num-eval {a.num_eval}"] if a.num_eval != 5 else [])
            + ([f"--models {','.join(models)}"] if models != ["convnet"] else [])
            + (["--baseline"] if a.baseline else [])),
    }
    row.update(provenance)  # distill_cpu_seconds of a killed run, where it was distilled
    if distill_cpu_s is not None:
        row["distill_cpu_seconds"] = distill_cpu_s
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(row, indent=2, default=str))
    print(f"wrote {RESULTS / f'{name}.json'}")
    eval_ckpt.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
