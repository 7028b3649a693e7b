"""DM iteration speed: our batched step vs a plain per-class fp32 loop of the original algorithm.

The reference loop follows ``main_DM.py`` of the original code: for each class, a siamese DSA draw
for its 256 real and IPC synthetic images, embeddings of both through a fresh frozen ConvNet-3,
squared distance of the means; the losses are summed and one SGD step updates the images.
Both run the same hyperparameters on Fashion-MNIST in one process, side by side.

    python benchmarks/bench_dm_speed.py --ipc 10 --iters 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from datadistill import load_dataset
from datadistill.augment import DSA, default_strategy
from datadistill.evaluate.train import build_network
from datadistill.methods import distill
from datadistill.utils import (
    atomic_write_text,
    cpu_has_fast_bf16,
    machine_description,
    make_generator,
    resolve_precision,
    tune_allocator,
)


def _start(real, ipc: int, seed: int):
    """The shared start of a timed loop: generator, real-initialised synthetic images (K*ipc, C,
    H, W) requiring grad, their labels, DM's SGD optimiser and the dataset's DSA."""
    gen = make_generator(seed)
    syn, syn_y = real.sample_balanced(ipc, gen)
    syn = syn.clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
    return gen, syn, syn_y, opt, DSA(default_strategy(real.name))


def reference_dm_iters(real, ipc: int, iters: int, seed: int = 0) -> float:
    """Seconds per iteration of the per-class fp32 loop (original algorithm)."""
    k = real.num_classes
    gen, syn, _, opt, dsa = _start(real, ipc, seed)
    times = []
    for it in range(iters + 2):
        t = time.perf_counter()
        net = build_network("convnet", real.channels, k, real.im_size, it, torch.device("cpu"))
        for p in net.parameters():
            p.requires_grad_(False)
        loss = torch.zeros(())
        for c in range(k):
            xr = real.sample(c, 256, gen)
            xs = syn[c * ipc : (c + 1) * ipc]
            xr, xs = dsa.siamese(xr, xs, generator=gen)
            er = net.embed(xr).detach()
            es = net.embed(xs)
            loss = loss + ((er.mean(0) - es.mean(0)) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it >= 2:
            times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def ours_dm_iters(real, ipc: int, iters: int, **cfg) -> float:
    stamps: list[float] = []
    distill("dm", real, ipc, steps=iters + 3, progress=False,
            callbacks=(lambda step, _: stamps.append(time.perf_counter()),), **cfg)
    # skip the first 3 steps (compilation / warm-up)
    return (stamps[-1] - stamps[2]) / (len(stamps) - 3)


PHASES = ("network", "sample", "dsa", "real_embed", "syn_forward", "syn_backward", "optimizer")


def step_breakdown(real, ipc: int, iters: int, precision: str, seed: int = 0) -> dict[str, float]:
    """Seconds per iteration of each phase of our batched, compiled DM step (the fast preset's
    path, built from the same pieces as ``methods/dm.py``), timed phase by phase after 3 warm-up
    iterations: where the time of a step goes, so a speed-up is sought where it can pay."""
    from datadistill.methods.dm import dm_loss, embed_function, real_embedder

    dev = torch.device("cpu")
    k = real.num_classes
    gen, syn_x, syn_y, opt, dsa = _start(real, ipc, seed)
    embed_real, embed_syn = real_embedder(dev, precision, True), embed_function(True)
    real_y = torch.arange(k).repeat_interleave(256)
    total = dict.fromkeys(PHASES, 0.0)
    for it in range(iters + 3):
        t = [time.perf_counter()]
        net = build_network("convnet", real.channels, k, real.im_size, it, dev)
        for p in net.parameters():
            p.requires_grad_(False)
        t.append(time.perf_counter())
        xr, _ = real.sample_balanced(256, gen)
        t.append(time.perf_counter())
        xr, xs = dsa.grouped((xr, syn_x), (real_y, syn_y), k, gen)
        t.append(time.perf_counter())
        emb_r = embed_real(net, xr)
        t.append(time.perf_counter())
        loss = dm_loss(emb_r, embed_syn(net, xs), k)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        if it >= 3:
            for name, a, b in zip(PHASES, t, t[1:], strict=False):
                total[name] += (b - a) / iters
    return total


def main() -> None:
    tune_allocator()  # as the command line does
    ap = argparse.ArgumentParser()
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--bf16", action="store_true",
                    help="also time bf16 variants on a CPU without native bf16 (10x slower there)")
    ap.add_argument("--out", default="benchmarks/results/dm_speed.json")
    a = ap.parse_args()
    train, _ = load_dataset("fashion-mnist")
    res = {"ipc": a.ipc, "iters": a.iters, "threads": torch.get_num_threads(),
           "machine": machine_description()}
    res["reference_per_class_fp32_s"] = reference_dm_iters(train, a.ipc, a.iters)
    res["ours_fp32_eager_s"] = ours_dm_iters(train, a.ipc, a.iters, precision="fp32", compile=False)
    res["ours_fp32_compiled_s"] = ours_dm_iters(train, a.ipc, a.iters, precision="fp32",
                                                compile=True)
    if cpu_has_fast_bf16() or a.bf16:
        res["ours_bf16_eager_s"] = ours_dm_iters(train, a.ipc, a.iters, precision="bf16",
                                                 compile=False)
        res["ours_bf16_compiled_s"] = ours_dm_iters(train, a.ipc, a.iters, precision="bf16",
                                                    compile=True)
    # the fast preset: precision auto (bf16 where native), compiled
    fast = resolve_precision("auto", torch.device("cpu"))
    res["fast_preset_breakdown_s"] = step_breakdown(train, a.ipc, a.iters, fast)
    res["fast_preset_variant"] = f"ours_{fast}_compiled_s"
    res["speedup_fast_preset"] = res["reference_per_class_fp32_s"] / res[res["fast_preset_variant"]]
    res["date"] = time.strftime("%Y-%m-%d")
    res["command"] = " ".join(["python benchmarks/bench_dm_speed.py", *sys.argv[1:]])
    print(json.dumps(res, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.out), json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
