"""FRePo meta-step speed with and without crucial-sample selection + ISA, side by side.

Three variants of the same FRePo step (fast preset, Fashion-MNIST): the plain loss, discarding
the easiest 20 % of the real batch (``--strategy isa --isa-eps 0``), and discarding plus ISA
(``--strategy isa``, eps 1). They run in one process, round-robin (``--repeats`` rounds of
``--steps`` steps each), so that load on the machine hits all three alike; an untimed run first
compiles every graph, and the first ``--warmup`` steps of every run are not counted. Reported: mean wall
seconds and process CPU seconds per step, and ISA's overhead relative to the plain step.

    python benchmarks/bench_frepo_step.py --ipc 10 --steps 5 --repeats 1     # smoke run
    python benchmarks/bench_frepo_step.py --ipc 10 --steps 30 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from datadistill import load_dataset
from datadistill.methods import make_distiller
from datadistill.strategies import STRATEGIES
from datadistill.utils import atomic_write_text, machine_description, tune_allocator

VARIANTS = {
    "plain": None,
    "discard": {"discard_easy": 0.2, "isa_eps": 0.0},
    "isa": {"discard_easy": 0.2, "isa_eps": 1.0},
}


def run(variant: str, train, ipc: int, steps: int, warmup: int, cfg: dict) -> tuple[list, list]:
    """Per-step (wall, cpu) seconds of one run, after ``warmup`` steps."""
    stamps: list[tuple[float, float]] = []
    d = make_distiller("frepo", dataset=train.name, ipc=ipc, preset="fast",
                       overrides={"steps": steps + warmup, **cfg})
    start = (time.perf_counter(), time.process_time())

    def cb(step: int, _: object) -> None:
        stamps.append((time.perf_counter(), time.process_time()))

    options = VARIANTS[variant]
    if options is None:
        d.distill(train, ipc, seed=0, progress=False, callbacks=(cb,))
    else:
        STRATEGIES.get("isa")(options).run(d, train, ipc, seed=0, progress=False, callbacks=(cb,))
    marks = [start, *stamps]
    wall = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)][warmup:]
    cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)][warmup:]
    return wall, cpu


def main() -> None:
    tune_allocator()  # as the command line does
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    ap.add_argument("--repeats", type=int, default=1, help="round-robin rounds")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="fast-preset override, e.g. --set batch_real=1024")
    ap.add_argument("--out", default="benchmarks/results/frepo_step.json")
    a = ap.parse_args()
    from datadistill.config import parse_override

    cfg = dict(parse_override(s) for s in a.set)
    train, _ = load_dataset(a.dataset)
    times: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in VARIANTS}
    run("isa", train, a.ipc, 1, a.warmup, cfg)  # untimed: compiles every graph the runs use
    names = list(VARIANTS)
    for r in range(a.repeats):
        # rotate the order every round so that no variant always runs first or last
        for v in names[r % len(names):] + names[: r % len(names)]:
            wall, cpu = run(v, train, a.ipc, a.steps, a.warmup, cfg)
            times[v]["wall"] += wall
            times[v]["cpu"] += cpu
    res: dict = {"dataset": a.dataset, "ipc": a.ipc, "steps": a.steps, "warmup": a.warmup,
                 "repeats": a.repeats, "overrides": cfg, "threads": torch.get_num_threads(),
                 "machine": machine_description()}
    for v, t in times.items():
        res[f"{v}_wall_s"] = sum(t["wall"]) / len(t["wall"])
        res[f"{v}_cpu_s"] = sum(t["cpu"]) / len(t["cpu"])
    for v in ("discard", "isa"):
        res[f"{v}_overhead_wall"] = res[f"{v}_wall_s"] / res["plain_wall_s"] - 1
        res[f"{v}_overhead_cpu"] = res[f"{v}_cpu_s"] / res["plain_cpu_s"] - 1
    res["command"] = ("python benchmarks/bench_frepo_step.py " +
                      f"--ipc {a.ipc} --steps {a.steps} --warmup {a.warmup} --repeats {a.repeats}")
    res["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(res, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.out), json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
