"""Write BENCHMARKS.md from the JSON results of the benchmark scripts.

    python benchmarks/report.py            # reads benchmarks/results/, writes BENCHMARKS.md

Only measured rows appear; a row that has not been run yet is listed as pending with the command
that produces it.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

from bench_sequential import VARIANTS  # benchmarks/bench_sequential.py
from datadistill.config import parse_override
from datadistill.methods import make_distiller
from datadistill.strategies import STRATEGIES
from datadistill.utils import atomic_write_text

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PUBLISHED = {  # REFERENCE.md, ConvNet-3, Fashion-MNIST, IPC 1 / 10 / 50
    "random": {1: 51.4, 10: 73.8, 50: 82.5},
    "herding": {1: 67.0, 10: 71.1, 50: 71.9},
    "dm": {1: 71.5, 10: 83.6, 50: 88.2},
    "dc": {1: 70.5, 10: 82.3, 50: 83.6},
    "dsa": {1: 70.6, 10: 84.6, 50: 88.7},
    "idc": {1: 81.0, 10: 86.0, 50: 86.2},
}
FULL_REAL_PUBLISHED = 93.5  # REFERENCE.md: ConvNet-3 on the whole Fashion-MNIST training set
METHODS = ["random", "herding", "k-center", "dm"]
GM_METHODS = ["dc", "dsa", "idc"]  # issue 3 measures these at IPC 1 and 10
# results written before the scripts recorded the machine were all measured on this one
MACHINE_AMX = "cpu: Intel Xeon with AVX-512 and AMX (bf16 native), 2 cores, torch 2.13.0"
IPCS = [1, 10, 50]
_DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10",
                  "cifar100": "CIFAR-100", "digits": "8x8 digits"}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _short(machine: str) -> str:
    """A machine column: "Xeon (AMX)", "EPYC (AVX2)" or "EPYC (AVX-512 bf16)" from a machine
    description."""
    if "AVX2" in machine and "bf16 emulated" in machine:
        return "EPYC (AVX2)" if "EPYC" in machine else "AVX2"
    if "AVX512" in machine and "bf16 native" in machine and "EPYC" in machine:
        return "EPYC (AVX-512 bf16)"  # precision auto resolves to bf16 here
    # every Xeon of this project had AMX (rows before 2026-12-04 did not name it)
    return "Xeon (AMX)" if "AMX" in machine or "Xeon" in machine and "bf16 native" in machine \
        else machine


def _machines(r: dict) -> str:
    """The machine cell of a row: where it was distilled, and where a resumed evaluation ran
    when that was another machine."""
    m = _short(r.get("machine", MACHINE_AMX))
    if not r.get("eval_machine"):
        return m
    return m + f"; eval. {'' if r.get('eval_machine_all') else 'partly '}{_short(r['eval_machine'])}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _only_model(scores: dict) -> str:
    """The one network a benchmark row evaluated (bench_frepo / bench_sequential evaluate one:
    the method's protocol network); a row with several would need a column per network."""
    if len(scores) != 1:
        raise ValueError(f"expected one evaluated network in the row, found {sorted(scores)}")
    return next(iter(scores))


def _earlier_preset(method: str, ipc: int, config: dict | None, dataset: str = "fashion-mnist",
                    preset: str = "fast", overrides: dict | None = None) -> str:
    """What a row's recorded config has that today's preset (``fast`` by default, with the
    command's ``overrides``) no longer has, e.g. ``"lr_img=0.0001"`` (empty when they agree or the
    row recorded no config; keys the row does not record are not compared): such a row measured
    an earlier preset and needs ``run_all.py --force`` to measure the current one."""
    if not config:
        return ""
    now = make_distiller(method, dataset=dataset, ipc=ipc, preset=preset,
                         overrides=overrides).config
    return ", ".join(f"{k}={config[k]:g}" if isinstance(config[k], float) else f"{k}={config[k]}"
                     for k in sorted(config) if k in now and config[k] != now[k])


def _table_row(method: str, ipc: int) -> tuple[dict | None, str]:
    """A table row of ``run_all.py`` (None when not measured) and what its recorded preset has
    that today's no longer has (see :func:`_earlier_preset`)."""
    r = _load(RESULTS / "table" / f"{method}-ipc{ipc}.json")
    return r, (_earlier_preset(method, ipc, r.get("config")) if r else "")


def table_section(methods: list[str] = METHODS, ipcs: list[int] = IPCS,
                  title: str = "## Fashion-MNIST, ConvNet-3, `dsa` protocol (1000 epochs, "
                               "per-sample DSA), fast presets") -> list[str]:
    lines = [
        title,
        "",
        "Last-epoch test accuracy, mean ± std over 5 networks (seeds 0-4); distillation and",
        "evaluation wall time on this 2-core CPU; peak resident memory of the process.",
        "",
        "| method | IPC | protocol | accuracy % | random subset % | published % | distill s "
        "| eval s / model | peak MiB | machine | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pending, stale, provenance = [], [], []
    for ipc in ipcs:
        for m in methods:
            r, earlier = _table_row(m, ipc)
            pub = PUBLISHED.get(m, {}).get(ipc)
            pub_s = f"{pub:.1f}" if pub else "-"
            if r is None:
                pending.append(f"python benchmarks/run_all.py --methods {m} --ipcs {ipc}")
                continue
            # the random subset under the row's protocol: carried by the row, or the dsa random row
            base = r.get("baseline")
            if base is None and r.get("protocol", "dsa") == "dsa" and m != "random":
                base = _load(RESULTS / "table" / f"random-ipc{ipc}.json")
            base_s = f"{base['mean']:.2f} ± {base['std']:.2f}" if base else "-"
            if earlier:
                stale.append(f"{m} IPC {ipc} ({earlier})")
            # a row measured by another command than run_all.py (same hyperparameters) says so
            if r.get("measured_with"):
                provenance.append(f"{m} IPC {ipc}: measured with `{r['measured_with']}`"
                                  + (f"; its random subset from {r['baseline_from']}"
                                     if r.get("baseline_from") else ""))
            lines.append(
                f"| {m}{' *' if earlier else ''} | {ipc} | {r.get('protocol', 'dsa')} | "
                f"{r['mean']:.2f} ± {r['std']:.2f} | "
                f"{base_s} | {pub_s} | "
                f"{r['distill_seconds']:.0f} | {r['eval_seconds_per_model']:.0f} | "
                f"{_num(r.get('peak_memory_mb'))} | {_short(r.get('machine', MACHINE_AMX))} | "
                f"{r['date']} |"
            )
    lines += ["", f"Command for every row: `python benchmarks/run_all.py --methods {','.join(methods)}"
              f" --ipcs {','.join(map(str, ipcs))}` (rows are cached in",
              "`benchmarks/results/table/`; `--methods` / `--ipcs` select rows)."]
    if stale:
        lines += ["", "\\* Measured with an earlier `fast` preset (its values differ from today's: "
                  + "; ".join(stale) + "); `run_all.py --force` with the row's `--methods` / "
                  "`--ipcs` measures the current one."]
    if provenance:
        lines += [""] + [f"- {p}." for p in provenance]
    if pending:
        lines += ["", "Not yet measured (run these):", ""] + [f"- `{c}`" for c in pending]
    return lines


def ipc_figure_section(out_dir: Path = RESULTS) -> list[str]:
    """The papers' key figure from the table rows: test accuracy against IPC per method (rows of
    an earlier preset left out; a protocol other than `dsa` named in the series), the full real
    set as the published line (not measured here). Writes ``accuracy_vs_ipc.json`` and ``.png``
    in ``out_dir`` (a PNG only when there are rows) and returns the Markdown that shows it."""
    from datadistill.analysis.plots import accuracy_vs_ipc_plot

    series: dict[str, list[dict]] = {}
    for m in METHODS + GM_METHODS:
        for ipc in IPCS:
            r, earlier = _table_row(m, ipc)
            if r is None or earlier:
                continue
            proto = r.get("protocol", "dsa")
            name = m if proto == "dsa" else f"{m} ({proto} protocol)"
            series.setdefault(name, []).append({"ipc": ipc, "mean": r["mean"], "std": r["std"]})
    strategy_points = _sequential_points()
    for (method, variant, ipc), r in sorted(strategy_points.items()):
        name = method + (" + sequential" if variant == "seq" else "")
        name += "" if r["protocol"] == "dsa" else f" ({r['protocol']} protocol)"
        if variant == "base" and any(p["ipc"] == ipc for p in series.get(name, [])):
            continue  # the table's row comes first
        sc = r["evaluation"]["scores"][(r.get("models") or ["convnet"])[0]]
        series.setdefault(name, []).append({"ipc": ipc, "mean": sc["mean"], "std": sc["std"]})
    if not series:
        return []
    results = {"title": "Fashion-MNIST, ConvNet-3, fast presets",
               "full": {"mean": FULL_REAL_PUBLISHED, "label": "full real set, published"},
               "series": series}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "accuracy_vs_ipc.json", json.dumps(results, indent=1) + "\n")
    png = accuracy_vs_ipc_plot(results, out_dir / "accuracy_vs_ipc.png")
    rel = os.path.relpath(png, ROOT.parent)  # BENCHMARKS.md lies in the repository root
    segs = sorted({(k[0], k[2], len(r.get("segments") or []))
                   for k, r in strategy_points.items() if k[1] == "seq"})
    return ["## Accuracy against IPC", "",
            "From the tables above (mean ± std over 5 networks; rows of an earlier preset left out);",
            f"the dashed line is the published full-real-set accuracy ({FULL_REAL_PUBLISHED} %), not",
            "measured here. The `+ sequential` points are the `seq` rows of the sequential table",
            "made at the base preset's own steps, so at equal image-update steps to the base point"
            + ("" if not segs else " (" + ", ".join(f"{m} IPC {i}: {k} segments"
                                                    for m, i, k in segs) + ")") + ";",
            "base points the tables above lack come from its base rows at the preset's steps.",
            "", f"![accuracy against IPC]({rel})", ""]


def _sequential_points() -> dict[tuple[str, str, int], dict]:
    """Rows of bench_sequential.py that can stand on the accuracy-against-IPC figure, by
    (method, variant, IPC): Fashion-MNIST, `fast` preset, no ``--set`` override, a config equal
    to today's preset (so the preset's own steps), variant `base` or `seq`. Where several `seq`
    rows qualify at one IPC (regulariser weights), the one at the variant's own weight wins; the
    choice never looks at accuracy."""
    points: dict[tuple[str, str, int], dict] = {}
    for p in sorted((RESULTS / "sequential").glob("*.json")):
        r = json.loads(p.read_text())
        if (r["dataset"] != "fashion-mnist" or r["preset"] != "fast" or r["variant"] not in
                ("base", "seq") or _preset_overrides(r)
                or _earlier_preset(r["method"], r["ipc"], r.get("config"))):
            continue
        key = (r["method"], r["variant"], r["ipc"])
        if key not in points or _variant_label(r) == r["variant"]:
            points[key] = r
    return points


def _curve_rows() -> list[dict]:
    """DM after N iterations: the snapshots of bench_dm_curve.py plus the base-method rows of
    bench_sequential.py (the fast preset and `dsa` protocol, no strategy; the table shows each
    row's image lr and init, which a ``--set`` may have changed)."""
    rows = []
    for p in (RESULTS / "dm_curve").glob("*.json"):
        r = json.loads(p.read_text())
        rows.append({**r, "machine": r.get("machine", MACHINE_AMX)})
    for p in (RESULTS / "sequential").glob("dm-*-base-*.json"):
        r = json.loads(p.read_text())
        if (r["dataset"] == "fashion-mnist" and r["preset"] == "fast" and r["protocol"] == "dsa"
                and not r.get("strategy_options")):
            sc = r["evaluation"]["scores"][_only_model(r["evaluation"]["scores"])]
            rows.append({"ipc": r["ipc"], "iterations": r["steps"],
                         "distill_seconds": r["distill_seconds"], "mean": sc["mean"],
                         "std": sc["std"], "num_eval": r["num_eval"], "date": r["date"],
                         "config": r["config"],
                         "machine": r["machine"], "command": r["command"]})
    return sorted(rows, key=lambda r: (r["ipc"], r["iterations"], r["date"]))


def _image_lr(row: dict) -> float:
    """The image learning rate a DM curve row ran with: its resolved config, else its overrides,
    else 1.0 (the `fast` preset's rate when the first snapshots, which kept no config, were made)."""
    if row.get("config"):
        return float(row["config"]["lr_img"])
    return float(row.get("overrides", {}).get("lr_img", 1.0))


def _init(row: dict) -> str:
    """How a DM curve row's images were initialised (rows that kept no config: random real)."""
    return str((row.get("config") or row.get("overrides") or {}).get("init", "real"))


def curve_section() -> list[str]:
    rows = _curve_rows()
    lines = ["## DM accuracy against iterations (Fashion-MNIST, fast preset, `dsa` protocol)", ""]
    if not rows:
        return lines + ["Not yet measured: `python benchmarks/bench_dm_curve.py`", ""]
    lines += ["Each row is its own distillation (seed 0) except where one command lists several",
              "snapshots; distillation seconds depend on the machine (see the speed tables).", "",
              "| IPC | iterations | image lr | init | distill s | accuracy % | networks | machine | date |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ipc']} | {r['iterations']} | {_image_lr(r):g} | {_init(r)} | "
                     f"{r['distill_seconds']:.0f} | "
                     f"{r['mean']:.2f} ± {r['std']:.2f} | {r['num_eval']} | "
                     f"{_short(r['machine'])} | {r['date']} |")
    commands = list(dict.fromkeys(r["command"] for r in rows))
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in commands), ""]
    return lines


def speed_section() -> list[str]:
    lines = ["## Speed, side by side in one process", ""]
    for path in sorted(RESULTS.glob("dm_speed*.json")):
        dm = _load(path)
        lines += [
            f"DM step at IPC {dm['ipc']}, 256 real images per class, seconds per iteration "
            f"(mean of {dm['iters']} after warm-up, {dm['date']}):",
            "",
            "| variant | s / iteration | speed-up |",
            "|---|---|---|",
        ]
        ref = dm["reference_per_class_fp32_s"]
        fast = dm.get("fast_preset_variant", "ours_bf16_compiled_s")
        for key, label in (("reference_per_class_fp32_s", "per-class fp32 loop (original algorithm)"),
                           ("ours_fp32_eager_s", "batched over classes, fp32, eager"),
                           ("ours_fp32_compiled_s", "batched, fp32, compiled"),
                           ("ours_bf16_eager_s", "batched, bf16 real pass, eager"),
                           ("ours_bf16_compiled_s", "batched, bf16 real pass, compiled")):
            if key in dm:
                label += " (fast preset)" if key == fast else ""
                lines.append(f"| {label} | {dm[key]:.2f} | {ref / dm[key]:.2f}x |")
        if "fast_preset_breakdown_s" in dm:  # where a step of the fast preset's path goes
            parts = dm["fast_preset_breakdown_s"]
            total = sum(parts.values())
            lines += ["", "Where a step of the fast preset's path goes (timed phase by phase): "
                      + ", ".join(f"{name.replace('_', ' ')} {s:.3f} s ({100 * s / total:.0f} %)"
                                  for name, s in parts.items()) + "."]
        lines += ["", f"Machine: {dm.get('machine', MACHINE_AMX)}.",
                  "Command: `" + dm.get("command", "python benchmarks/bench_dm_speed.py "
                                        f"--ipc {dm['ipc']} --iters {dm['iters']}") + "`", ""]
    for path in sorted(RESULTS.glob("eval_speed*.json")):
        ev = _load(path)
        if "speedup" not in ev:  # a run still in progress (partial results are saved)
            continue
        o, r = ev["ours_bf16_compiled"], ev["reference_fp32_eager"]
        lines += [
            f"Evaluation (`dsa` protocol, {ev['epochs']} epochs, ConvNet-3) of `{ev['synset']}` "
            f"(IPC {ev['ipc']}), {ev['date']}:",
            "",
            "| evaluator | accuracy % | networks | s / network |",
            "|---|---|---|---|",
            f"| fp32 eager (original evaluator's arithmetic) | {r['mean']:.2f} ± {r['std']:.2f} | "
            f"{len(r['acc'])} | {r['mean_seconds_after_first']:.0f} |",
            ("| bf16 autocast + torch.compile (default) | "
             if ev.get("ours_precision", "bf16") == "bf16" else
             "| fp32 + torch.compile (default; precision auto on this machine) | ")
            + f"{o['mean']:.2f} ± {o['std']:.2f} | "
            f"{len(o['acc'])} | {o['mean_seconds_after_first']:.0f} |",
            "",
            f"Speed-up {ev['speedup']:.2f}x; accuracy difference {ev['accuracy_gap']:+.2f} points. "
            f"Machine: {ev.get('machine', MACHINE_AMX)}.",
            f"Command: `python benchmarks/bench_eval.py --synset {ev['synset']} "
            f"--num-eval {ev['num_eval']} --num-eval-ref {len(r['acc'])}"
            + (f" --epochs {ev['epochs']}" if ev["epochs"] != 1000 else "")
            + (f" --out {path.relative_to(ROOT.parent)}" if path.name != "eval_speed.json" else "")
            + (f" --ours-from {o['from']}` (the first row reuses the `random` IPC 10 row of the "
               "table: same set, seeds, protocol)." if o.get("from") else "`"),
            "",
        ]
    return lines


GM_VARIANTS = {
    "loop_fp32": "per-class fp32 loop (original code's structure; `vectorize: auto` on a CPU)",
    "vmap_all_fp32": "both sides vmapped over classes, fp32",
    "ours_fp32": "real side looped, synthetic side vmapped, fp32 (`vectorize: true` on a CPU)",
    "ours_fp32_compiled": "as above, real side compiled (`compile: true`), fp32",
    "ours_bf16_real": "real side looped, synthetic side vmapped, bf16 real side "
                      "(`precision: auto` with native bf16)",
    "ours_bf16_real_compiled": "as above, real side compiled (`compile: true`)",
    "loop_fp32_compiled": "both sides looped, real side compiled (`compile: true`), fp32",
    "loop_bf16_real": "both sides looped, bf16 real side",
    "loop_bf16_real_compiled": "both sides looped, bf16 real side compiled (`compile: true`)",
    "loop_bf16_syn_compiled": "both sides looped, real side compiled (`compile: true`), fp32; "
                              "bf16 synthetic side (`syn_precision: bf16`)",
    "loop_bf16_both": "both sides looped, bf16 real and synthetic side",
    "loop_bf16_both_compiled": "both sides looped, bf16 real and synthetic side, real side "
                               "compiled (`compile: true`)",
}


def gm_section() -> list[str]:
    """Per-class gradient speed of gradient matching (bench_gm_speed.py), one table per machine
    (``gm_speed*.json``)."""
    found = [gm for p in sorted(RESULTS.glob("gm_speed*.json"))
             if "loop_fp32_s" in (gm := _load(p)).get("dc", {})]
    if not found:
        return ["Gradient matching speed: not yet measured with the current script: "
                "`python benchmarks/bench_gm_speed.py --repeats 3`", ""]
    lines = []
    for gm in found:
        lines += [f"Gradient matching outer step at IPC {gm['ipc']} (per-class gradients of the "
                  "real and synthetic batches, distance, backward to the images), median seconds "
                  f"of interleaved repeats ({gm['date']}):", "",
                  "| method | variant | s / outer step | speed-up | image-gradient rel. diff |",
                  "|---|---|---|---|---|"]
        for method in ("dc", "idc"):
            r = gm[method]
            for key, label in GM_VARIANTS.items():
                if f"{key}_s" in r:
                    speed = f"{r[key + '_speedup']:.2f}x" if key != "loop_fp32" else "1.00x"
                    diff = f"{r[key + '_grad_rel_diff']:.1e}" if key != "loop_fp32" else "-"
                    lines.append(f"| {method} ({r['real_per_class']} real, {r['syn_per_class']} "
                                 f"syn / class) | {label} | {r[key + '_s']:.2f} | {speed} | "
                                 f"{diff} |")
        cmd = gm.get("command", "python benchmarks/bench_gm_speed.py --repeats 3")
        lines += ["", f"Machine: {gm.get('machine', MACHINE_AMX)}.", f"Command: `{cmd}`", ""]
    return lines


def _frepo_label(strategy: str | None, options: dict) -> str:
    """``frepo``, or what the ``isa`` strategy did with these options (normalised by the
    strategy itself, so its defaults and sign convention live in one place)."""
    if not strategy:
        return "frepo"
    if strategy != "isa":
        return f"frepo + {strategy}"
    o = STRATEGIES.get("isa")(options).options
    parts = ([f"discard {o['drop']} {100 * o['discard_easy']:g} %"] if o["discard_easy"] else []) + (
        [f"ISA eps {o['isa_eps']:g}"] if o["isa_eps"] else [])
    return "frepo + " + (" + ".join(parts) or "isa, nothing on")


def frepo_section() -> list[str]:
    """FRePo / FRePo + ISA rows (bench_frepo.py) and the meta-step speed (bench_frepo_step.py)."""
    lines = ["## FRePo and crucial samples + ISA (Fashion-MNIST, `frepo` protocol)", ""]
    # by IPC, plain FRePo first, then the strategy variants
    loaded = [(p.name, json.loads(p.read_text())) for p in (RESULTS / "frepo").glob("*.json")]
    rows = [r for _, r in sorted(loaded, key=lambda nr: (nr[1]["ipc"],
                                                         bool(nr[1].get("strategy")), nr[0]))]
    if rows:
        lines += [
            "Last-step test accuracy of FRePo's network (no normalisation) trained under the `frepo`",
            "protocol, mean ± std over the networks (seeds 0-4), next to a random real subset under",
            "the same protocol; published (ISA paper): FRePo 75.6 / 86.2 %, ISA on FRePo",
            "77.1 / 86.0 % at IPC 1 / 10. KRR: FRePo's KRR predictor with the features of the same",
            "trained networks (\"-\": a row measured before it was recorded).",
            "Distillation wall time on the shared 2-core machine, and the process CPU time (both",
            "threads; roughly twice the wall time of an otherwise idle machine).",
            "",
            "| set | IPC | preset | steps | accuracy % | random subset % | KRR % | distill s | "
            "distill CPU s | machine | date |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            ev = r["frepo"]
            model = _only_model(ev["scores"])
            sc, base = ev["scores"][model], (ev.get("baseline") or {}).get(model)
            # KRR predictor: the same networks (krr_scores), or a separate frepo-krr run
            krr = (ev.get("krr_scores") or (r.get("frepo-krr") or {}).get("scores") or {}).get(model)
            steps = (r.get("config") or {}).get("steps", "-")
            label = _frepo_label(r.get("strategy"), r.get("strategy_options") or {})
            lines.append(
                f"| {label} | {r['ipc']} | {r['preset']} | {steps} | "
                f"{sc['mean']:.2f} ± {sc['std']:.2f} | "
                + (f"{base['mean']:.2f} ± {base['std']:.2f}" if base
                   else "pending" if r.get("complete") is False else "-") + " | "
                + (f"{krr['mean']:.2f} ± {krr['std']:.2f}" if krr else "-") + " | "
                f"{_num(r.get('distill_seconds'))} | {_num(r.get('distill_cpu_seconds'))} | "
                f"{_machines(r)} | {r['date']} |")
        lines += ["", "Commands: " + "; ".join(
            f"`{r['command']}`" for r in rows), ""]
        lines += discard_ablation_lines(rows)
    else:
        lines += ["Not yet measured: `python benchmarks/bench_frepo.py --ipc 10`", ""]
    # one table per machine (frepo_step*.json), the newest first
    steps = [json.loads(p.read_text()) for p in RESULTS.glob("frepo_step*.json")]
    for st in sorted(steps, key=lambda st: st["date"], reverse=True):
        lines += [
            f"FRePo meta-step at IPC {st['ipc']} (fast preset), seconds per step, "
            f"{st['steps']} steps x {st['repeats']} round(s) per variant after warm-up, "
            f"round-robin in one process ({st['date']}):",
            "",
            "| variant | wall s / step | CPU s / step | overhead (CPU) |",
            "|---|---|---|---|",
            f"| plain FRePo loss | {st['plain_wall_s']:.2f} | {st['plain_cpu_s']:.2f} | - |",
            f"| discard easiest 20 % | {st['discard_wall_s']:.2f} | {st['discard_cpu_s']:.2f} | "
            f"{100 * st['discard_overhead_cpu']:+.1f} % |",
            f"| discard + ISA (eps 1) | {st['isa_wall_s']:.2f} | {st['isa_cpu_s']:.2f} | "
            f"{100 * st['isa_overhead_cpu']:+.1f} % |",
            "",
            f"Machine: {st.get('machine', MACHINE_AMX)}.",
            f"Command: `{st['command']}`",
            "",
        ]
    return lines


def _signed_discard(r: dict) -> float | None:
    """The row's crucial-sample setting as one signed fraction (negative: the hardest dropped),
    0 for plain FRePo; None for rows with ISA on (not part of the discard ablation)."""
    if not r.get("strategy"):
        return 0.0
    if r["strategy"] != "isa":
        return None
    o = STRATEGIES.get("isa")(r.get("strategy_options") or {}).options
    if o["isa_eps"]:
        return None
    return -o["discard_easy"] if o["drop"] == "hardest" else o["discard_easy"]


def discard_ablation_lines(rows: list[dict]) -> list[str]:
    """The ISA paper's Figure 1 / 5 ablation (issue 4: p in {drop hardest 0.1, none, drop
    easiest 0.1, 0.2, 0.3}), from the FRePo rows without ISA, by IPC."""
    pts = sorted(((r["ipc"], p, r) for r in rows if (p := _signed_discard(r)) is not None),
                 key=lambda t: t[:2])
    settings = Counter(ipc for ipc, _, _ in pts)
    pts = [t for t in pts if settings[t[0]] >= 2]  # an IPC with one setting is no ablation
    if not pts:
        return []
    lines = ["Crucial-sample ablation (no ISA): the fraction of each real batch discarded per",
             "meta-step, the hardest (by per-sample KRR loss) or the easiest; the ISA paper has",
             "discarding the easiest help and the hardest hurt (its Figures 1 and 5).", "",
             "| IPC | discarded | accuracy % | KRR % | distill s | date |", "|---|---|---|---|---|---|"]
    for ipc, p, r in pts:
        ev = r["frepo"]
        model = _only_model(ev["scores"])
        sc, krr = ev["scores"][model], (ev.get("krr_scores") or {}).get(model)
        what = ("none" if p == 0 else f"hardest {100 * -p:g} %" if p < 0 else f"easiest {100 * p:g} %")
        lines.append(f"| {ipc} | {what} | {sc['mean']:.2f} ± {sc['std']:.2f} | "
                     + (f"{krr['mean']:.2f} ± {krr['std']:.2f}" if krr else "-")
                     + f" | {_num(r.get('distill_seconds'))} | {r['date']} |")
    return lines + [""]


def isa_diag_section() -> list[str]:
    """The ISA paper's diagnostics of FRePo sets and random subsets (bench_isa_diag.py)."""
    rows = [json.loads(p.read_text()) for p in sorted((RESULTS / "isa_diag").glob("*.json"))]
    if not rows:
        return []
    lines = [
        "**ISA diagnostics** (its section 2.2 / appendix B): k-NN recall and coverage (k = 5) of 5,000",
        "real training images by the set, in the features of a fixed random ConvNet-3 (published:",
        "recall 0.84 -> 0.89 once the easiest samples are discarded); hard predicts easy: KRR loss",
        "of predicting the easiest 20 % of a real batch of 1,024 from the hardest 80 %, and the",
        "reverse, the batch ranked by the KRR loss predicted from the set in the features of a",
        "fresh FRePo pool network, mean ± std over 5 draws (published, CIFAR-10 IPC 10: 0.0661",
        "vs 0.1430).",
        "",
        "| set | IPC | recall | coverage | hardest 80 % -> easiest 20 % | easiest 80 % -> "
        "hardest 20 % | machine | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["ipc"], r["method"] != "random", r["name"])):
        st = r.get("strategy") or {}
        label = ("random subset" if r["method"] == "random" else
                 _frepo_label(st.get("name"), {k: v for k, v in st.items() if k != "name"}))
        m, he = r["manifold"], r["hard_easy"]
        lines.append(f"| {label} | {r['ipc']} | {m['recall']:.3f} | {m['coverage']:.3f} | "
                     f"{he['hard_to_easy']:.4f} ± {he['hard_to_easy_std']:.4f} | "
                     f"{he['easy_to_hard']:.4f} ± {he['easy_to_hard_std']:.4f} | "
                     f"{_short(r['machine'])} | {r['date']} |")
    return lines + ["", "Commands: " + "; ".join(f"`{r['command']}`" for r in rows), ""]


def _preset_overrides(r: dict) -> list[tuple[str, str]]:
    """The preset keys a sequential row's command set with ``--set``: stored in the row since
    2026-12-07, read back from its command for older rows."""
    if "preset_overrides" in r:
        return [(k, str(v)) for k, v in sorted(r["preset_overrides"].items())]
    return [tuple(kv.split("=", 1)) for kv in re.findall(r"--set (\S+)", r.get("command", ""))]


def _command_drift(r: dict) -> str:
    """What a sequential row's recorded config has that its command no longer resolves to, e.g.
    ``"lr_img=1"`` (a preset changed since and no ``--set`` pins the old value), by
    :func:`_earlier_preset` with the command's ``--set`` and ``--steps``; empty for rows without
    a config. ``bench_sequential.py`` refuses to overwrite such a row; this names it in the table."""
    if not r.get("config") or "method" not in r:
        return ""
    overrides = dict(parse_override(f"{k}={v}") for k, v in _preset_overrides(r))
    steps = re.search(r"--steps (\d+)", r["command"])
    if steps:
        overrides["steps"] = int(steps.group(1))
    return _earlier_preset(r["method"], r["ipc"], r["config"], r["dataset"], r["preset"],
                           overrides)


def _variant_label(r: dict) -> str:
    """The variant's name plus any strategy knob set away from that variant's own value, any
    preset key the command set (``--set K=V``) and any the command no longer reproduces
    (:func:`_command_drift`)."""
    own = VARIANTS.get(r["variant"]) or {}
    opts = r.get("strategy_options") or {}
    extra = [f"{k.split('_')[0]} {opts[k]:g}" for k in ("reg_weight", "drop_fraction")
             if k in opts and opts[k] != own.get(k)]
    extra += [f"{k} {v}" for k, v in _preset_overrides(r)]
    drift = _command_drift(r)
    extra += [f"earlier preset: {drift}"] if drift else []
    return r["variant"] + (f" ({', '.join(extra)})" if extra else "")


def sequential_section() -> list[str]:
    """Base method vs the sequential-segments strategy at equal steps (bench_sequential.py)."""
    loaded = [json.loads(p.read_text()) for p in sorted((RESULTS / "sequential").glob("*.json"))]
    datasets = sorted({_DATASET_NAMES.get(r["dataset"], r["dataset"]) for r in loaded})
    lines = [f"## Sequential segments vs the base method ({', '.join(datasets) or 'Fashion-MNIST'}"
             ", ConvNet-3)", ""]
    order = {"base": 0, "seq": 1, "nofilter": 2, "noreg": 3, "seq-trained": 4}
    rows = sorted(loaded, key=lambda r: (r["dataset"], r["method"], r["ipc"], r["steps"],
                                         order.get(r["variant"], 9), _variant_label(r)))
    if not rows:
        return lines + ["Not yet measured: `python benchmarks/bench_sequential.py --method dm "
                        "--ipc 10 --segments 2 --steps 120 --variant seq` (and `--variant base`)",
                        ""]
    nets = sorted({r["num_eval"] for r in rows})
    lines += [
        f"Last-epoch test accuracy, mean ± std over {'/'.join(map(str, nets))} networks (seeds "
        "from 0), the base method and the",
        "strategy at the same total number of image-update steps (the strategy's probe trainings",
        "and regulariser pass are extra and included in its wall time; a base row with about twice",
        "the steps is the equal-compute comparison, see the notes). Update-signal similarity:",
        "mean within-class cosine similarity of (final - initial) images (EDD Figure 1; lower =",
        "more diverse updates). Recall / coverage: k-NN manifold (k = 5) of 5,000 real training",
        "images in the features of a fixed random ConvNet-3. Forgotten: real training images the",
        "probe classified correctly before a segment was added and wrongly after, per later",
        "segment; pool: real images the segment matched.",
        "",
        "| method | variant | IPC | K | steps | protocol | accuracy % | update-signal sim. | recall "
        "| coverage | pools | forgotten | distill s | machine | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sc = r["evaluation"]["scores"][(r.get("models") or ["convnet"])[0]]
        segs = r.get("segments") or []
        us = (r.get("update_signal") or {}).get("mean")
        m = r["manifold"]
        lines.append(
            f"| {r['method']} | {_variant_label(r)} | {r['ipc']} | {len(segs) or 1} | {r['steps']} | "
            f"{r['protocol']} | "
            f"{sc['mean']:.2f} ± {sc['std']:.2f} | " + ("-" if us is None else f"{us:.3f}")
            + f" | {m['recall']:.3f} | {m['coverage']:.3f} | "
            + (" / ".join(str(s["pool_size"]) for s in segs) or "-") + " | "
            + (" / ".join(str(s["forgotten"]) for s in segs[1:]) or "-") + " | "
            f"{_num(r.get('distill_seconds'))} | {_machines(r)} | {r['date']} |")
    lines += ["", "Commands: " + "; ".join(f"`{r['command']}`" for r in rows), ""]
    return lines + cross_architecture_lines(rows)


def cross_architecture_lines(rows: list[dict]) -> list[str]:
    """Rows evaluated on several networks (bench_sequential.py --models): one column each."""
    rows = [r for r in rows if len(r.get("models") or []) > 1]
    if not rows:
        return []
    nets = list(dict.fromkeys(m for r in rows for m in r["models"]))
    lines = ["Cross-architecture accuracy of the same sets (trained on each network under the "
             "row's protocol, same seeds):", "",
             "| method | variant | IPC | " + " | ".join(nets) + " |",
             "|---|---|---|" + "---|" * len(nets)]
    for r in rows:
        sc = r["evaluation"]["scores"]
        lines.append(f"| {r['method']} | {_variant_label(r)} | {r['ipc']} | " + " | ".join(
            f"{sc[m]['mean']:.2f} ± {sc[m]['std']:.2f}" if m in sc else "-" for m in nets) + " |")
    return lines + [""]


def tuning_section() -> list[str]:
    """The `fast`-preset candidates of `tune_preset.py`: validation accuracy under a shortened
    protocol (a proxy for ranking candidates, not comparable with the test-set rows above)."""
    # results/tune_<method>[_<strategy>]/ (tune_preset.py --strategy)
    rows = [(p.parent.name.removeprefix("tune_").replace("_", " + "), json.loads(p.read_text()))
            for p in sorted(RESULTS.glob("tune_*/ipc*.json"))]
    if not rows:
        return []
    lines = ["## Preset tuning on a validation split (`benchmarks/tune_preset.py`)", "",
             "10,000 Fashion-MNIST training images held out; each candidate distils the other",
             "50,000 and is evaluated on the held-out images with its method's protocol cut to",
             "the given epochs (2 networks). Images moved: `||x - x0|| / ||x0||` of the stored",
             "images. Used only to choose a preset (or a strategy default); the chosen one is then",
             "measured on the test set.",
             "",
             "| method | IPC | candidate | overrides | steps | images moved | validation % | "
             "epochs | precision | distill s | machine | date |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for method, r in sorted(rows, key=lambda mr: (mr[0], mr[1]["ipc"], -mr[1]["val_mean"])):
        moved = r.get("relative_image_change")
        pairs = [*r["overrides"].items(),
                 *((f"strategy.{k}", v) for k, v in r.get("strategy_overrides", {}).items())]
        over = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in pairs)
        machine = r.get("machine", MACHINE_AMX)
        # rows before "precision" was recorded: the fast presets' "auto" = bf16 where native
        precision = r.get("precision") or ("bf16" if "bf16 native" in machine else "fp32")
        lines.append(
            f"| {method} | {r['ipc']} | {r['name']} | {over or '-'} | {r['steps']} | "
            + ("-" if moved is None else f"{100 * moved:.0f} %") + " | "
            f"{r['val_mean']:.2f} ± {r['val_std']:.2f} | {r['epochs']} | {precision} | "
            f"{_num(r.get('distill_seconds'))} | {_short(machine)} | "
            f"{r['date']} |")
    lines += ["", "Commands: " + "; ".join(f"`{r['command']}`" for _, r in rows), ""]
    return lines


def in_progress_section() -> list[str]:
    """Evaluations that stopped part-way (a session ended): their finished networks, from the
    checkpoints that `benchmarks/common.py:eval_checkpoint` keeps. No mean is given until a row
    is complete; the finished row replaces its checkpoint."""
    found = sorted(RESULTS.glob("*/checkpoints/*.eval.json"))
    if not found:
        return []
    lines = ["## Evaluations in progress", "",
             "Networks finished so far (last-step test accuracy %, seconds), in the order they are",
             "trained (seeds 0, 1, ...); the row appears above once all of them are in.", ""]
    for path in found:
        data = json.loads(path.read_text())
        nets = data["networks"]
        fp = data["fingerprint"]
        parts = [f"{key}: {r['accuracy']:.2f}"
                 + (f" (KRR {r['krr_accuracy']:.2f})" if "krr_accuracy" in r else "")
                 + f", {r['seconds']:.0f} s" for key, r in sorted(nets.items())]
        lines.append(f"- `{path.relative_to(ROOT.parent)}` ({fp['protocol']['name']} protocol, "
                     f"{fp['precision']}): " + "; ".join(parts))
    return lines + [""]


def main() -> None:
    notes = (ROOT / "notes.md").read_text() if (ROOT / "notes.md").exists() else ""
    parts = ["# Benchmarks", "",
             "Generated by `python benchmarks/report.py` from `benchmarks/results/`; every number",
             "below was measured on this project's 2-core CPU machine (no GPU) by the command given.",
             ""]
    parts += (table_section() + [""]
              + table_section(GM_METHODS, [1, 10], "## Gradient matching (DC, DSA, IDC), "
                              "Fashion-MNIST, ConvNet-3, fast presets (`idc` protocol for IDC)")
              + [""] + ipc_figure_section() + curve_section() + speed_section() + gm_section()
              + sequential_section() + frepo_section() + isa_diag_section()
              + tuning_section() + in_progress_section())
    if notes:
        parts += [notes]
    (ROOT.parent / "BENCHMARKS.md").write_text("\n".join(parts).rstrip() + "\n")


if __name__ == "__main__":
    main()
