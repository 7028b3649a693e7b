"""Where the time of one IDC gradient-matching outer step goes on a CPU, and what three
layout / graph changes do to it (issue 3's 2x per-class-gradient target, unmet for IDC).

Same setting as ``bench_gm_speed.py``'s IDC case: Fashion-MNIST, ConvNet-3 (instance norm),
64 real images per class against the 40 decoded (f = 2) synthetic images of each class, L1 over
the conv weights, the plain per-class fp32 loop. Variants, timed interleaved in one process:

* ``loop_fp32``: the reference (the original code's structure);
* ``channels_last``: network and images in ``torch.channels_last`` memory format;
* ``explicit_instance_norm``: ``GroupNorm(w, w)`` replaced by mean / variance ops, whose double
  backward is plain elementwise autograd instead of ``native_group_norm_backward``'s formula;
* ``conv_weights_only``: the synthetic side differentiates only the conv weights (all the
  conv-only distance reads), not every parameter.

The script prints and records the median seconds per outer step, the speed-up over the
reference, the relative difference of the image gradient, and the reference's top operators
(``torch.profiler``, self CPU time).

    python benchmarks/profile_gm_step.py --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from datadistill import load_dataset
from datadistill.evaluate.train import build_network
from datadistill.methods.gm import match_distance
from datadistill.utils import atomic_write_text, machine_description, make_generator


class ExplicitInstanceNorm(nn.Module):
    """``GroupNorm(C, C)`` (instance norm with affine) written with mean / variance ops."""

    def __init__(self, gn: nn.GroupNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = gn.weight, gn.bias, gn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean((2, 3), keepdim=True)
        var = x.var((2, 3), keepdim=True, unbiased=False)
        return ((x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None]
                + self.bias[:, None, None])


def explicit_norm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every GroupNorm replaced by :class:`ExplicitInstanceNorm`."""
    net = copy.deepcopy(net)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(module, name, ExplicitInstanceNorm(child))
    return net


def step_fn(net: nn.Module, xr: torch.Tensor, syn: torch.Tensor, *, channels_last: bool = False,
            conv_only_grads: bool = False) -> Callable[[], torch.Tensor]:
    """One outer step's loss (per-class loop, fp32, L1 over conv weights) as a closure."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    params = list(net.parameters())
    wanted = [p for p in params if p.dim() == 4] if conv_only_grads else params

    def loss() -> torch.Tensor:
        total = torch.zeros(())
        for c in range(xr.shape[0]):
            y = torch.full((xr.shape[1],), c)
            g_real = torch.autograd.grad(
                F.cross_entropy(net(xr[c].contiguous(memory_format=fmt)), y), wanted)
            y = torch.full((syn.shape[1],), c)
            g_syn = torch.autograd.grad(
                F.cross_entropy(net(syn[c].contiguous(memory_format=fmt)), y), wanted,
                create_graph=True)
            total = total + match_distance([g.detach() for g in g_real], g_syn, "l1",
                                           conv_only=True)
        return total
    return loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/gm_profile.json")
    a = ap.parse_args()
    train, _ = load_dataset("fashion-mnist")
    gen = make_generator(0)
    k, n_real, n_syn = train.num_classes, 64, 40
    net = build_network("convnet", train.channels, k, train.im_size, 0, torch.device("cpu"))
    xr = train.sample_balanced(n_real, gen)[0].view(k, n_real, *train.image_shape)
    syn = train.sample_balanced(n_syn, gen)[0].view(k, n_syn, *train.image_shape).clone()
    syn.requires_grad_(True)
    cl_net = copy.deepcopy(net).to(memory_format=torch.channels_last)
    variants = {
        "loop_fp32": step_fn(net, xr, syn),
        "channels_last": step_fn(cl_net, xr, syn, channels_last=True),
        "explicit_instance_norm": step_fn(explicit_norm(net), xr, syn),
        "conv_weights_only": step_fn(net, xr, syn, conv_only_grads=True),
    }
    times: dict[str, list[float]] = {n: [] for n in variants}
    grads: dict[str, torch.Tensor] = {}
    for r in range(a.repeats + 1):  # repeat 0 warms up
        for name, fn in variants.items():
            syn.grad = None
            t = time.perf_counter()
            fn().backward()
            if r > 0:
                times[name].append(time.perf_counter() - t)
            grads[name] = syn.grad.clone()
    med = {n: sorted(ts)[len(ts) // 2] for n, ts in times.items()}
    ref = grads["loop_fp32"]
    res: dict = {n: {"seconds": round(med[n], 3),
                     "speedup": round(med["loop_fp32"] / med[n], 2),
                     "grad_rel_diff": float((grads[n] - ref).norm() / ref.norm())}
                 for n in variants}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        variants["loop_fp32"]().backward()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [{"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 3),
            "calls": e.count} for e in events[:12]]
    out = {"dataset": "fashion-mnist", "setting": "idc, ipc 10, 64 real / 40 synthetic per class",
           "threads": torch.get_num_threads(), "machine": machine_description(),
           "repeats": a.repeats, "variants": res, "reference_top_ops": top,
           "date": time.strftime("%Y-%m-%d"),
           "command": " ".join(["python benchmarks/profile_gm_step.py", *sys.argv[1:]])}
    print(json.dumps(out, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.out), json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
