"""The ``datadistill`` command: ``list``, ``distill``, ``evaluate``, ``export``, ``analyze``.

Errors caused by bad input print one line that says what to do and exit with status 2 (no
traceback); Ctrl-C exits with 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from datadistill.errors import ConfigError, DatadistillError

log = logging.getLogger("datadistill")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="datadistill",
        description="Dataset distillation: distil a real set into a small synthetic set and "
        "evaluate it under the field's protocols.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="datasets, networks, methods, protocols and presets")

    d = sub.add_parser("distill", help="distil a dataset, then evaluate the synthetic set")
    d.add_argument("--dataset", required=True, help="e.g. fashion-mnist (see `datadistill list`)")
    d.add_argument("--method", required=True, help="e.g. dm, random, herding, k-center")
    d.add_argument("--ipc", type=int, required=True, help="images per class")
    d.add_argument("--preset", default="fast", help="fast (CPU-sized) or paper (published)")
    d.add_argument("--steps", type=int, default=None, help="override the preset's iterations")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset hyperparameter (repeatable), e.g. --set lr_img=2")
    d.add_argument("--out", default=None, help="run folder (default runs/DATASET-METHOD-ipcN-sS)")
    d.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (its distillation or evaluation)")
    d.add_argument("--no-eval", action="store_true", help="only distil")
    d.add_argument("--zca", action="store_true", help="ZCA-whiten the data (fit on train)")
    d.add_argument("--im-size", type=int, default=None, help="imagefolder only: resize to this")
    _strategy_args(d)
    _eval_args(d)
    _data_args(d)

    e = sub.add_parser("evaluate", help="evaluate a synthetic set (synset.pt or its run folder)")
    e.add_argument("path")
    _eval_args(e)
    _data_args(e)
    e.add_argument("--out", default=None, help="write the result as JSON here")
    e.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="record each finished network in FILE (JSON); rerunning with the same "
                        "FILE trains only the missing networks")

    x = sub.add_parser("export", help="export a synthetic set to PNG folders, .npz or a grid")
    x.add_argument("path")
    x.add_argument("--imagefolder", default=None, help="write DIR/<class>/<i>.png")
    x.add_argument("--npz", default=None, help="write pixels, images and labels to this .npz")
    x.add_argument("--grid", default=None, help="write a PNG grid (one row per class)")
    _analyze_args(sub)
    return p


def _analyze_args(sub: Any) -> None:
    z = sub.add_parser("analyze", help="diagnostics of synthetic sets: update-signal similarity, "
                       "k-NN recall/coverage, t-SNE, per-segment statistics, accuracy vs IPC")
    z.add_argument("paths", nargs="*", metavar="PATH", help="synset.pt files or run folders")
    z.add_argument("--out", default=None,
                   help="folder for analysis.json and PNGs (default: PATH's folder/analysis)")
    z.add_argument("--features", default="random", choices=["random", "trained"],
                   help="fixed feature space: a random or a briefly trained network")
    z.add_argument("--feature-net", default="convnet")
    z.add_argument("--feature-epochs", type=int, default=5, help="with --features trained")
    z.add_argument("--k", type=int, default=5, help="k of the k-NN manifolds (ISA: 5)")
    z.add_argument("--max-real", type=int, default=5000, help="real images compared (random)")
    z.add_argument("--no-tsne", action="store_true", help="skip the t-SNE plot")
    z.add_argument("--hard-easy", type=int, default=0, metavar="N",
                   help="ISA's hard-predicts-easy diagnostic over N draws of a real batch and a "
                        "fresh network (0: skip)")
    z.add_argument("--hard-easy-net", default="frepo-convnet-bn",
                   help="feature network of --hard-easy (default: FRePo's pool network)")
    z.add_argument("--hard-easy-batch", type=int, default=1024, help="real batch of --hard-easy")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--accuracy-json", default=None,
                   help="also plot accuracy vs IPC from this JSON (see analysis.plots)")
    _data_args(z)


def _strategy_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("strategy (wraps the base method; see `datadistill list`)")
    g.add_argument("--strategy", default=None, help="e.g. sequential, isa")
    # Options of the strategies; each strategy accepts its own and refuses the others.
    g.add_argument("--segments", type=int, default=None, help="sequential: number of segments")
    g.add_argument("--segment-ipc", type=int, default=None,
                   help="sequential: IPC per segment (instead of --segments)")
    g.add_argument("--reg-weight", type=float, default=None,
                   help="sequential: weight of the anti-forgetting regulariser (default 1; "
                        "0.1 validated better with 2 segments, BENCHMARKS.md)")
    g.add_argument("--discard-easy", type=float, default=None,
                   help="isa: fraction of the easiest real samples dropped per step")
    g.add_argument("--isa-eps", type=float, default=None,
                   help="isa: infinite semantic augmentation range epsilon")
    g.add_argument("--strategy-set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other strategy option (repeatable)")


STRATEGY_FLAGS = ("segments", "segment_ipc", "reg_weight", "discard_easy", "isa_eps")


def _make_strategy(a: argparse.Namespace) -> Any:
    """The strategy named by --strategy with its options, or None."""
    from datadistill.config import parse_override
    from datadistill.strategies import STRATEGIES

    options = {k: getattr(a, k) for k in STRATEGY_FLAGS if getattr(a, k) is not None}
    options.update(parse_override(s) for s in a.strategy_set)
    if a.strategy is None:
        if options:
            raise ConfigError(f"{', '.join('--' + k.replace('_', '-') for k in options)} "
                              "need --strategy (see `datadistill list`)")
        return None
    return STRATEGIES.get(a.strategy)(options)


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", default=None,
                   help="dc, dsa, idc, frepo, frepo-krr (see `datadistill list`; default: the "
                        "method's: dsa for most, idc for idc, frepo for frepo)")
    p.add_argument("--models", type=_csv, default=None,
                   help="comma-separated networks (default: the protocol's, convnet; "
                        "frepo-convnet for the frepo protocols)")
    p.add_argument("--num-eval", type=int, default=5, help="networks per architecture")
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    p.add_argument("--eval-steps", type=int, default=None,
                   help="override the optimizer steps of a step-based protocol (frepo)")
    p.add_argument("--krr", action="store_true",
                   help="also predict the test set by kernel ridge regression on the features "
                        "of the same trained networks (FRePo's KRR predictor; --protocol "
                        "frepo-krr reports it alone)")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-subset baseline")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--no-compile", action="store_true", help="do not torch.compile")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="directory holding the dataset files")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------------------------- commands
def cmd_list(_: argparse.Namespace) -> None:
    from datadistill.config import preset_names
    from datadistill.data import DATASETS
    from datadistill.evaluate import PROTOCOLS
    from datadistill.methods import METHODS
    from datadistill.models import NETWORKS
    from datadistill.strategies import STRATEGIES

    def section(title: str, reg: Any, extra: Any = None) -> None:
        print(f"{title}:")
        for n in reg.names():
            more = f"  [presets: {', '.join(extra(n))}]" if extra else ""
            print(f"  {n:<20}{reg.help(n)}{more}")
        print()

    section("datasets", DATASETS)
    section("methods", METHODS, lambda n: preset_names(METHODS.get(n).name))
    section("protocols", PROTOCOLS)
    section("strategies", STRATEGIES)
    print("networks:\n  " + ", ".join(NETWORKS.names()))


def _protocol(a: argparse.Namespace, method: str | None) -> Any:
    """The protocol of --protocol (default: the method's) with --epochs/--eval-steps."""
    from datadistill.evaluate import get_protocol
    from datadistill.methods import METHODS

    name = a.protocol
    if name is None:
        name = METHODS.get(method).default_protocol if method in METHODS else "dsa"
    proto = get_protocol(name)
    if a.epochs is not None:
        proto = proto.with_(epochs=a.epochs)
    if a.eval_steps is not None:
        if not proto.step_based:
            raise ConfigError(f"--eval-steps applies to step-based protocols (frepo); protocol "
                              f"{proto.name} counts epochs: use --epochs")
        if a.eval_steps < 1:
            raise ConfigError("--eval-steps must be >= 1")
        proto = proto.with_(steps=a.eval_steps)
    return proto


def _evaluate(synset: Any, a: argparse.Namespace, train: Any, test: Any,
              checkpoint: Path | None) -> Any:
    from datadistill.evaluate import evaluate

    proto = _protocol(a, synset.meta.get("method"))
    return evaluate(synset, proto, a.models, a.num_eval, a.eval_seed, train=train, test=test,
                    baseline=not a.no_baseline, device=a.device, precision=a.precision,
                    compile=False if a.no_compile else "auto", data_root=a.data_root,
                    progress=not a.quiet, checkpoint=checkpoint, krr=a.krr)


def cmd_distill(a: argparse.Namespace) -> None:
    from datadistill.config import parse_override
    from datadistill.data import dataset_info, load_dataset
    from datadistill.methods import METHODS, check_ipc, make_distiller

    overrides = dict(parse_override(s) for s in a.set)
    if a.steps is not None:
        overrides["steps"] = a.steps
    if a.num_eval < 1:
        raise ConfigError("--num-eval must be >= 1")
    a.dataset = dataset_info(a.dataset).name  # canonical spelling for presets and folder names
    a.method = METHODS.get(a.method).name
    distiller = make_distiller(a.method, dataset=a.dataset, ipc=a.ipc, preset=a.preset,
                               overrides=overrides)  # validates names before loading data
    a.strategy_obj = _make_strategy(a)
    if a.strategy_obj is not None:
        a.strategy_obj.check(distiller)
    if not a.no_eval:
        _protocol(a, a.method)  # validates the evaluation flags before the long distillation
    zca = True if a.zca or distiller.config.get("zca") else None  # e.g. frepo on colour data
    train, test = load_dataset(a.dataset, a.data_root, zca=zca, im_size=a.im_size)
    check_ipc(train, a.ipc)
    out = Path(a.out or f"runs/{a.dataset}-{a.method}-ipc{a.ipc}-s{a.seed}")
    if (out / "metrics.json").exists():
        raise ConfigError(f"{out} already holds a finished run: choose another --out, delete it, "
                          f"or evaluate it with `datadistill evaluate {out}`")
    if (out / "synset.pt").exists() and not a.resume:
        raise ConfigError(f"{out} holds a distilled set whose evaluation was interrupted: add "
                          "--resume to finish it, or choose another --out")
    if (out / "checkpoint.pt").exists() and not a.resume:
        raise ConfigError(f"{out} holds an interrupted run: add --resume to continue it, or "
                          "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        _distill_run(a, distiller, train, test, out)
    finally:
        log.removeHandler(handler)
        handler.close()


def _distill_run(a: argparse.Namespace, distiller: Any, train: Any, test: Any, out: Path) -> None:
    from datadistill.utils import atomic_write_text, peak_memory_mb, resolve_device

    device = resolve_device(a.device)
    strategy = a.strategy_obj
    config = {"dataset": a.dataset, "method": a.method, "ipc": a.ipc, "preset": a.preset,
              "seed": a.seed, "device": str(device), "hyperparameters": distiller.config}
    if strategy is not None:
        config["strategy"] = {"name": strategy.name, "options": strategy.options}
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    log.info("distilling %s with %s at IPC %d (%s preset) into %s", a.dataset, a.method, a.ipc,
             a.preset, out)
    t0 = time.perf_counter()
    if (out / "synset.pt").exists():  # --resume after the distillation had finished
        synset = _finished_synset(out / "synset.pt", a)
        log.info("resuming the evaluation of %s", out / "synset.pt")
    else:
        run = distiller.distill if strategy is None else (
            lambda *args, **kw: strategy.run(distiller, *args, **kw))
        synset = run(train, a.ipc, seed=a.seed, device=device, checkpoint=out / "checkpoint.pt",
                     resume=a.resume, progress=not a.quiet)
        synset.save(out / "synset.pt")
        synset.save_grid(out / "grid.png")
        (out / "checkpoint.pt").unlink(missing_ok=True)
    distill_s = time.perf_counter() - t0
    metrics: dict[str, Any] = {
        "distill_seconds": synset.meta.get("distill_seconds", round(distill_s, 2)),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }
    print(f"synthetic set: {out / 'synset.pt'} (grid: {out / 'grid.png'}); "
          f"distilled in {metrics['distill_seconds']:.1f} s")
    log.info("distilled in %.1f s", metrics["distill_seconds"])
    if not a.no_eval:
        result = _evaluate(synset, a, train, test, out / "eval-checkpoint.json")
        metrics["evaluation"] = result.to_dict()
        print(result.table())
        log.info("\n%s", result.table())
    metrics["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    (out / "eval-checkpoint.json").unlink(missing_ok=True)
    print(f"run folder: {out}")


def _finished_synset(path: Path, a: argparse.Namespace) -> Any:
    """The set a killed run had finished distilling, checked against this command's arguments."""
    from datadistill.synthetic import SyntheticSet

    synset = SyntheticSet.load(path)
    meta = synset.meta
    strategy = meta.get("strategy")
    found = (meta.get("dataset"), meta.get("method"), synset.stored_ipc, meta.get("seed"),
             strategy.get("name") if isinstance(strategy, dict) else None)
    wanted = (a.dataset, a.method, a.ipc, a.seed,
              a.strategy_obj.name if a.strategy_obj is not None else None)
    if found != wanted:
        raise ConfigError(f"{path} was distilled with (dataset, method, IPC, seed, strategy) = "
                          f"{found}, not {wanted}: resume with the original arguments, or choose "
                          "another --out")
    return synset


def cmd_evaluate(a: argparse.Namespace) -> None:
    from datadistill.synthetic import SyntheticSet
    from datadistill.utils import atomic_write_text

    if a.num_eval < 1:
        raise ConfigError("--num-eval must be >= 1")
    synset = SyntheticSet.load(a.path)
    result = _evaluate(synset, a, None, None, a.checkpoint)
    print(result.table())
    if a.out:
        atomic_write_text(a.out, json.dumps(result.to_dict(), indent=2))


def cmd_export(a: argparse.Namespace) -> None:
    from datadistill.synthetic import SyntheticSet

    synset = SyntheticSet.load(a.path)
    if not (a.imagefolder or a.npz or a.grid):
        raise ConfigError("nothing to export: pass --imagefolder DIR, --npz FILE and/or --grid FILE")
    if a.imagefolder:
        print(f"wrote {synset.export_imagefolder(a.imagefolder)}")
    if a.npz:
        print(f"wrote {synset.export_npz(a.npz)}")
    if a.grid:
        print(f"wrote {synset.save_grid(a.grid)}")


def cmd_analyze(a: argparse.Namespace) -> None:
    from datadistill.analysis import (
        accuracy_vs_ipc_plot,
        analyze,
        format_report,
        load_accuracy_results,
    )

    if not a.paths and not a.accuracy_json:
        raise ConfigError("nothing to analyse: pass synset.pt files / run folders and/or "
                          "--accuracy-json FILE")
    if a.k < 1 or a.max_real <= a.k or a.feature_epochs < 1:
        raise ConfigError("--k must be >= 1, --max-real > --k and --feature-epochs >= 1")
    if a.hard_easy < 0 or a.hard_easy_batch < 5:
        raise ConfigError("--hard-easy must be >= 0 and --hard-easy-batch >= 5")
    for i, path in enumerate(a.paths):
        out = None if a.out is None else Path(a.out) / (f"{i}" if len(a.paths) > 1 else "")
        result = analyze(path, out_dir=out, features=a.features, net=a.feature_net,
                         feature_epochs=a.feature_epochs, k=a.k, max_real=a.max_real,
                         tsne=not a.no_tsne, hard_easy=a.hard_easy, hard_easy_net=a.hard_easy_net,
                         hard_easy_batch=a.hard_easy_batch, seed=a.seed, device=a.device,
                         data_root=a.data_root)
        print(f"== {path}")
        print(format_report(result))
    if a.accuracy_json:
        target = Path(a.out or Path(a.accuracy_json).parent) / "accuracy_vs_ipc.png"
        print(f"accuracy vs IPC: {accuracy_vs_ipc_plot(load_accuracy_results(a.accuracy_json), target)}")


COMMANDS = {"list": cmd_list, "distill": cmd_distill, "evaluate": cmd_evaluate,
            "export": cmd_export, "analyze": cmd_analyze}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``datadistill`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if argv is None:  # the console script owns its process (not when embedded or under tests)
        from datadistill.utils import tune_allocator

        tune_allocator()
    try:
        COMMANDS[args.command](args)
    except DatadistillError as e:
        print(f"datadistill: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable --out, a file where a folder is expected, disk full
        print(f"datadistill: error: cannot access {e.filename or ''}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = {"distill": " (continue with the same command plus --resume)",
                "evaluate": (" (rerun with the same --checkpoint FILE to keep the finished "
                             "networks)")}.get(args.command, "")
        print(f"datadistill: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
