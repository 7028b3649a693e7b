"""Gradient-matching speed: a plain per-class fp32 loop (the original code's structure) vs our
vmapped per-class gradients, side by side in one process, Fashion-MNIST, IPC 10.

One "outer step" = one update of the synthetic images: per-class gradients of the real batch
and of the synthetic batch, the distance, its backward to the images, and the SGD step.

* DC/DSA: 256 real images per class vs the 10 synthetic images of the class, DC's cosine
  distance over all weights (the original ``main.py`` loop: ``net(img_real)`` ->
  ``autograd.grad`` -> ``net(img_syn)`` -> ``autograd.grad(create_graph=True)`` per class).
* IDC: 64 real images per class vs the 40 decoded (f = 2) images, L1 over conv weights.

All variants see the same network, batches and images; the script also reports the relative
difference of the image gradients (vmap and compilation are exact up to float rounding; bf16 is
not). The compiled variants compile the real side's per-class loop (``compile: true``); the
synthetic side needs a double backward, which compiled graphs do not support.

    python benchmarks/bench_gm_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from datadistill import load_dataset
from datadistill.evaluate.train import build_network
from datadistill.methods.gm import gradient_match_loss, match_distance, per_class_gradients
from datadistill.utils import (
    atomic_write_text,
    cpu_has_fast_bf16,
    machine_description,
    make_generator,
    tune_allocator,
)


def loop_loss(net, xr, xs, classes, metric: str, conv_only: bool) -> torch.Tensor:
    """The original per-class fp32 loop."""
    params = list(net.parameters())
    loss = torch.zeros(())
    for c in range(xr.shape[0]):
        lr = torch.full((xr.shape[1],), int(classes[c]))
        g_real = torch.autograd.grad(F.cross_entropy(net(xr[c]), lr), params)
        g_real = [g.detach() for g in g_real]
        ls = torch.full((xs.shape[1],), int(classes[c]))
        g_syn = torch.autograd.grad(F.cross_entropy(net(xs[c]), ls), params, create_graph=True)
        loss = loss + match_distance(g_real, g_syn, metric, conv_only=conv_only)
    return loss


def run_once(fn, syn: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Seconds of ``loss = fn(); loss.backward()`` and the image gradient it produced."""
    syn.grad = None
    t = time.perf_counter()
    loss = fn()
    loss.backward()
    return time.perf_counter() - t, syn.grad.clone()


def bench(real, n_real: int, n_syn: int, metric: str, conv_only: bool, repeats: int,
          bf16: bool, only: set[str] | None = None) -> dict:
    """Median seconds per outer step of each variant; the variants are interleaved within every
    repeat so that a shared, fluctuating machine load affects them alike."""
    gen = make_generator(0)
    k = real.num_classes
    net = build_network("convnet", real.channels, k, real.im_size, 0, torch.device("cpu"))
    xr = real.sample_balanced(n_real, gen)[0].view(k, n_real, *real.image_shape)
    syn = real.sample_balanced(n_syn, gen)[0].view(k, n_syn, *real.image_shape).clone()
    syn.requires_grad_(True)
    classes = torch.arange(k)
    def ours(real_vmap: bool, prec: str, compile_real: bool = False, syn_vmap: bool = True,
             syn_prec: str = "fp32"):
        return lambda: gradient_match_loss(net, xr, syn, classes, metric=metric,
                                           conv_only=conv_only, vectorize=syn_vmap,
                                           vectorize_real=real_vmap, real_precision=prec,
                                           compile_real=compile_real, syn_precision=syn_prec)

    variants = {
        "loop_fp32": lambda: loop_loss(net, xr, syn, classes, metric, conv_only),
        "vmap_all_fp32": ours(True, "fp32"),
        "ours_fp32": ours(False, "fp32"),        # real side looped, syn vmapped
        "ours_fp32_compiled": ours(False, "fp32", True),  # real side compiled
        # both sides looped (`vectorize: auto` on a CPU), real side compiled
        "loop_fp32_compiled": ours(False, "fp32", True, syn_vmap=False),
    }
    if bf16:  # the fast presets on hardware with native bf16 (precision auto)
        variants["ours_bf16_real"] = ours(False, "bf16")
        variants["ours_bf16_real_compiled"] = ours(False, "bf16", True)
        variants["loop_bf16_real"] = ours(False, "bf16", syn_vmap=False)
        variants["loop_bf16_real_compiled"] = ours(False, "bf16", True, syn_vmap=False)
        # the synthetic side (the double backward to the images) under bf16 autocast: alone
        # (`syn_precision: bf16` with the fast presets' fp32 compiled real side) and with both
        variants["loop_bf16_syn_compiled"] = ours(False, "fp32", True, syn_vmap=False,
                                                  syn_prec="bf16")
        variants["loop_bf16_both"] = ours(False, "bf16", syn_vmap=False, syn_prec="bf16")
        variants["loop_bf16_both_compiled"] = ours(False, "bf16", True, syn_vmap=False,
                                                   syn_prec="bf16")
    if only:  # the reference loop always runs: speed-ups and differences are against it
        variants = {n: f for n, f in variants.items() if n == "loop_fp32" or n in only}
    times: dict[str, list[float]] = {name: [] for name in variants}
    grads: dict[str, torch.Tensor] = {}
    for r in range(repeats + 1):  # repeat 0 warms up
        for name, fn in variants.items():
            sec, grads[name] = run_once(fn, syn)
            if r > 0:
                times[name].append(sec)
    res = {"real_per_class": n_real, "syn_per_class": n_syn, "metric": metric,
           "conv_only": conv_only, "repeats": repeats}
    med = {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}
    ref = grads["loop_fp32"]
    for name in variants:
        res[f"{name}_s"] = round(med[name], 3)
        if name != "loop_fp32":
            res[f"{name}_speedup"] = round(med["loop_fp32"] / med[name], 2)
            res[f"{name}_grad_rel_diff"] = float((grads[name] - ref).norm() / ref.norm())
    if not bf16:
        return res
    # Is bf16 on the real side harmless? Compare its error on the per-class real gradients with
    # the sampling noise of those gradients (a second, independent real batch, fp32).
    xr2 = real.sample_balanced(n_real, gen)[0].view(k, n_real, *real.image_shape)
    g32 = per_class_gradients(net, xr, classes, create_graph=False, vectorize=False)
    g16 = per_class_gradients(net, xr, classes, create_graph=False, vectorize=False,
                              precision="bf16")
    g32b = per_class_gradients(net, xr2, classes, create_graph=False, vectorize=False)

    def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        num = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b, strict=True))
        return (num / sum(float(y.pow(2).sum()) for y in b)) ** 0.5

    res["real_grad_bf16_rel_err"] = rel(g16, g32)
    res["real_grad_batch_noise_rel"] = rel(g32b, g32)
    return res


def main() -> None:
    tune_allocator()  # as the command line does
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-real", type=int, default=256, help="DC real images per class")
    ap.add_argument("--bf16", action="store_true",
                    help="also time bf16 on a CPU without native bf16 (about 10x slower there)")
    ap.add_argument("--variants", default="",
                    help="comma-separated variant names to time (default: all; loop_fp32 always)")
    ap.add_argument("--out", default="benchmarks/results/gm_speed.json")
    a = ap.parse_args()
    bf16 = a.bf16 or cpu_has_fast_bf16()
    only = set(a.variants.split(",")) - {""} or None
    train, _ = load_dataset("fashion-mnist")
    out = {"dataset": "fashion-mnist", "ipc": 10, "threads": torch.get_num_threads(),
           "machine": machine_description(),
           "dc": bench(train, a.batch_real, 10, "cos", False, a.repeats, bf16, only),
           "idc": bench(train, 64, 40, "l1", True, a.repeats, bf16, only),
           "date": time.strftime("%Y-%m-%d"),
           "command": " ".join(["python benchmarks/bench_gm_speed.py", *sys.argv[1:]])}
    print(json.dumps(out, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.out), json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
