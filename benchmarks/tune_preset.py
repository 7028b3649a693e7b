"""Choose a method's ``fast`` preset on a validation split (never on the test set).

10,000 images (``--n-val``) are held out of the Fashion-MNIST training set (``--dataset``;
seeded permutation); each candidate distils the remaining 50,000 (compare candidates at equal
wall-clock cost: for DM the real-image pass dominates a step, so a candidate with half the real
batch gets more iterations) and is evaluated on the held-out images with the method's own
protocol shortened to ``--epochs`` (default 300) and 2 networks: a cheap proxy whose only job
is to rank candidates. The chosen preset is then measured on the test set with the full
protocol by ``run_all.py`` / ``bench_dm_curve.py``. Each row also records how far the images
moved from their initialisation (``||x - x0|| / ||x0||`` of the stored images): a fast preset
with a fraction of the paper's steps at the paper's learning rate barely moves them.

    python benchmarks/tune_preset.py --method dm --ipc 10 \\
        --candidate base:lr_img=1.0,batch_real=256:300 --candidate lr3:lr_img=3.0,batch_real=256:300
    python benchmarks/tune_preset.py --method idc --ipc 10 --candidate lr1e-3:lr_img=1e-3:30

A candidate is ``NAME:KEY=VALUE,...:STEPS`` (preset overrides; STEPS: the method's ``steps``);
with ``--strategy sequential`` the keys ``strategy.KEY=VALUE`` set the strategy's options instead
(the strategy's own probes classify only the training part, never the held-out images):

    python benchmarks/tune_preset.py --method dm --ipc 10 --strategy sequential \\
        --candidate reg0:strategy.segments=2,strategy.reg_weight=0,init=real:120

Results are cached in ``benchmarks/results/tune_<method>[_<strategy>]/`` (``--out``; a finished
candidate is skipped; a killed one resumes its distillation and evaluation, as the other
benchmarks do, and keeps its set beside its row as ``.pt``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common import distilled_set, eval_checkpoint  # benchmarks/common.py
from datadistill import load_dataset
from datadistill.config import parse_override
from datadistill.evaluate import evaluate, get_protocol
from datadistill.methods import METHODS, make_distiller
from datadistill.strategies import STRATEGIES
from datadistill.utils import (
    Timer,
    atomic_write_text,
    machine_description,
    make_generator,
    resolve_device,
    resolve_precision,
    tune_allocator,
)

RESULTS = Path(__file__).parent / "results"


def validation_split(train, n_val: int, seed: int):
    """(train minus n_val images, the n_val held-out images), by a seeded permutation."""
    perm = torch.randperm(len(train.labels), generator=make_generator(seed))
    return train.subset(perm[n_val:]), train.subset(perm[:n_val])


def main() -> None:
    tune_allocator()  # as the command line does
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="dm")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--candidate", action="append", required=True, help="NAME:K=V,...:STEPS")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--num-eval", type=int, default=2)
    ap.add_argument("--n-val", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--out", type=Path, default=None, help="default: results/tune_<method>[_<strategy>]")
    ap.add_argument("--strategy", default=None,
                    help="wrap the method in this strategy (candidate keys strategy.KEY=VALUE)")
    a = ap.parse_args()
    train, _ = load_dataset(a.dataset)
    if not 0 < a.n_val < len(train.labels):
        ap.error(f"--n-val must be between 1 and {len(train.labels) - 1} for {a.dataset}")
    fit, val = validation_split(train, a.n_val, a.seed)
    val.split = "validation"
    out = a.out or RESULTS / (f"tune_{a.method}" + (f"_{a.strategy}" if a.strategy else ""))
    out.mkdir(parents=True, exist_ok=True)
    proto = get_protocol(METHODS.get(a.method).default_protocol).with_(epochs=a.epochs)
    for spec in a.candidate:
        name, kvs, steps = spec.split(":")
        path = out / f"ipc{a.ipc}-{name}.json"
        if path.exists():
            print(path.read_text())
            continue
        pairs = [parse_override(kv) for kv in kvs.split(",") if kv]
        overrides = {k: v for k, v in pairs if not k.startswith("strategy.")}
        options = {k.removeprefix("strategy."): v for k, v in pairs if k.startswith("strategy.")}
        if options and a.strategy is None:
            ap.error(f"candidate {name}: strategy.* keys need --strategy")
        strategy = None if a.strategy is None else STRATEGIES.get(a.strategy)(options)
        strategy_meta = None if strategy is None else {"name": strategy.name,
                                                       "options": strategy.options}
        d = make_distiller(a.method, dataset=fit.name, ipc=a.ipc, preset="fast",
                           overrides={**overrides, "steps": int(steps)})

        def run(ckpt: Path, d=d, strategy=strategy):
            if strategy is None:
                return d.distill(fit, a.ipc, seed=a.seed, checkpoint=ckpt, resume=True,
                                 progress=False)
            return strategy.run(d, fit, a.ipc, seed=a.seed, checkpoint=ckpt, resume=True,
                                progress=False)

        with Timer() as t:  # a killed candidate resumes its distillation and its evaluation
            synset, reused = distilled_set(
                path.with_suffix(".pt"), path, run, seed=a.seed, config=d.config,
                dataset_checksum=fit.checksum(), strategy=strategy_meta)
        # a resumed run's own time covers only its part; the set's meta has the whole run's
        distill_seconds = synset.meta.get("distill_seconds") or (None if reused else t.seconds)
        moved = None
        if synset.initial is not None:
            moved = float((synset.images - synset.initial).norm() / synset.initial.norm())
        res = evaluate(synset, proto, ["convnet"], a.num_eval, seed=0, train=fit, test=val,
                       baseline=False, progress=False, checkpoint=eval_checkpoint(out, path.stem))
        s = res.scores["convnet"]
        row = {"name": name, "method": a.method, "ipc": a.ipc, "overrides": overrides,
               "strategy": strategy_meta,
               "strategy_overrides": options,
               "steps": int(steps), "relative_image_change": moved, "protocol": proto.name,
               "distill_seconds": distill_seconds and round(distill_seconds, 1),
               "val_accuracies": s.accuracies,
               "val_mean": s.mean, "val_std": s.std, "epochs": a.epochs,
               "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
               "machine": machine_description(),
               "dataset": a.dataset,
               # what precision "auto" meant here (bf16 where native: it differs by machine)
               "precision": resolve_precision(str(d.config.get("precision", "fp32")),
                                              resolve_device(None)),
               "command": f"python benchmarks/tune_preset.py --method {a.method} --ipc {a.ipc} "
                          + (f"--strategy {a.strategy} " if a.strategy else "")
                          + f"--candidate {spec} "
                          f"--epochs {a.epochs} --num-eval {a.num_eval}"
                          + (f" --dataset {a.dataset}" if a.dataset != "fashion-mnist" else "")
                          + (f" --n-val {a.n_val}" if a.n_val != 10000 else "")}
        atomic_write_text(path, json.dumps(row, indent=2))
        eval_checkpoint(out, path.stem).unlink(missing_ok=True)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
