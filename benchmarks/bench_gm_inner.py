"""Gradient matching's inner loop: the network trained on the synthetic set between outer steps
(DC's ``epoch('train', ...)``, 50 epochs at IPC 10), timed by precision and compilation.

At IPC 10 this loop runs 9 times per DC / DSA iteration and is most of its wall time; it
carries no gradient to the synthetic images, so bf16 and ``torch.compile`` are allowed there
(the ``precision`` / ``compile`` options of ``dc`` / ``dsa``). Every variant trains the same
fresh ConvNet-3 on the same 100 real Fashion-MNIST images (batch 256, SGD lr 0.01 momentum 0.5),
without and with per-sample DSA; compiled variants are warmed up (2 epochs) first. Variants run
round-robin, ``--repeats`` times; the median is reported.

    python benchmarks/bench_gm_inner.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from datadistill import load_dataset
from datadistill.augment import DSA, default_strategy
from datadistill.evaluate.train import build_network
from datadistill.methods.gm import train_on_batches
from datadistill.utils import atomic_write_text, machine_description, make_generator, tune_allocator

VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def time_inner(x: torch.Tensor, y: torch.Tensor, dsa: DSA | None, precision: str,
               compile: bool, epochs: int) -> float:
    """Seconds for ``epochs`` of ``train_on_batches`` on a fresh ConvNet-3 (after warm-up)."""
    net = build_network("convnet", 1, 10, (28, 28), 0, x.device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.5)
    if compile:  # the first call compiles; not part of the loop's cost
        train_on_batches(net, opt, x, y, 2, 256, make_generator(1), dsa, precision, compile)
    t = time.perf_counter()
    train_on_batches(net, opt, x, y, epochs, 256, make_generator(1), dsa, precision, compile)
    return time.perf_counter() - t


def main() -> None:
    tune_allocator()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=50, help="DC's inner loop at IPC 10")
    ap.add_argument("--out", default="benchmarks/results/gm_inner.json")
    a = ap.parse_args()
    real, _ = load_dataset("fashion-mnist")
    x, y = real.sample_balanced(10, make_generator(0))
    times: dict[str, list[float]] = {}
    for use_dsa in (False, True):
        dsa = DSA(default_strategy("fashion-mnist")) if use_dsa else None
        for _ in range(a.repeats):
            for precision, compile in VARIANTS:
                key = f"{'dsa' if use_dsa else 'no_aug'}/{precision}{'_compiled' if compile else ''}"
                times.setdefault(key, []).append(
                    round(time_inner(x, y, dsa, precision, compile, a.epochs), 2))
                print(key, times[key][-1], flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    speedup = {k: round(median[k.split("/")[0] + "/fp32"] / v, 2) for k, v in median.items()}
    out = {"dataset": "fashion-mnist", "ipc": 10, "epochs": a.epochs, "batch": 256,
           "threads": torch.get_num_threads(), "machine": machine_description(),
           "date": time.strftime("%Y-%m-%d"), "seconds": times, "median_s": median,
           "speedup_vs_fp32_eager": speedup}
    print(json.dumps(out, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.out), json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
