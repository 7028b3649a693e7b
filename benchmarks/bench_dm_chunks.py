"""DM's frozen real-image pass against the chunk size (images per forward pass) on this machine.

2560 Fashion-MNIST images (256 per class), a fresh ConvNet-3 per repeat, bf16 autocast where the
hardware runs it natively, compiled; prints the best and the mean of the timed repeats (seconds).
The default CPU chunk of ``datadistill.methods.dm.real_embedder`` was chosen with it.

    python benchmarks/bench_dm_chunks.py --chunks 32,64,128,256,512
"""

from __future__ import annotations

import argparse
import time

import torch

from datadistill import load_dataset
from datadistill.evaluate.train import build_network
from datadistill.methods.dm import real_embedder
from datadistill.utils import machine_description, make_generator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", default="32,64,128,256,512")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--precision", default="auto")
    a = ap.parse_args()
    train, _ = load_dataset("fashion-mnist")
    gen = make_generator(0)
    x = torch.cat([train.sample(c, 256, gen) for c in range(train.num_classes)])
    dev = torch.device("cpu")
    print(machine_description())
    for chunk in (int(c) for c in a.chunks.split(",")):
        embed = real_embedder(dev, a.precision, True, chunk=chunk)
        times = []
        for it in range(a.repeats + 2):  # two warm-up passes (compilation)
            net = build_network("convnet", train.channels, train.num_classes, train.im_size, it,
                                dev)
            for p in net.parameters():
                p.requires_grad_(False)
            t = time.perf_counter()
            embed(net, x)
            times.append(time.perf_counter() - t)
        timed = times[2:]
        print(f"chunk {chunk}: best {min(timed):.3f} s, mean {sum(timed) / len(timed):.3f} s",
              flush=True)


if __name__ == "__main__":
    main()
