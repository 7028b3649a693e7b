"""Write BENCHMARKS.md from the JSON results of the benchmark scripts.

    python benchmarks/report.py            # reads benchmarks/results/, writes BENCHMARKS.md

Only measured rows appear; a row that has not been run yet is listed as pending with the command
that produces it.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PUBLISHED = {  # REFERENCE.md, ConvNet-3, Fashion-MNIST, IPC 1 / 10 / 50
    "random": {1: 51.4, 10: 73.8, 50: 82.5},
    "herding": {1: 67.0, 10: 71.1, 50: 71.9},
    "dm": {1: 71.5, 10: 83.6, 50: 88.2},
}
METHODS = ["random", "herding", "k-center", "dm"]
IPCS = [1, 10, 50]


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def table_section() -> list[str]:
    lines = [
        "## Fashion-MNIST, ConvNet-3, `dsa` protocol (1000 epochs, per-sample DSA), fast presets",
        "",
        "Last-epoch test accuracy, mean ± std over 5 networks (seeds 0-4); distillation and",
        "evaluation wall time on this 2-core CPU; peak resident memory of the process.",
        "",
        "| method | IPC | accuracy % | published % | distill s | eval s / model | peak MiB | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pending = []
    for ipc in IPCS:
        for m in METHODS:
            r = _load(RESULTS / "table" / f"{m}-ipc{ipc}.json")
            pub = PUBLISHED.get(m, {}).get(ipc)
            pub_s = f"{pub:.1f}" if pub else "-"
            if r is None:
                pending.append(f"python benchmarks/run_all.py --methods {m} --ipcs {ipc}")
                continue
            lines.append(
                f"| {m} | {ipc} | {r['mean']:.2f} ± {r['std']:.2f} | {pub_s} | "
                f"{r['distill_seconds']:.0f} | {r['eval_seconds_per_model']:.0f} | "
                f"{_num(r.get('peak_memory_mb'))} | {r['date']} |"
            )
    lines += ["", "Command for every row: `python benchmarks/run_all.py` (rows are cached in",
              "`benchmarks/results/table/`; `--methods` / `--ipcs` select rows)."]
    if pending:
        lines += ["", "Not yet measured (run these):", ""] + [f"- `{c}`" for c in pending]
    return lines


def curve_section() -> list[str]:
    rows = sorted((RESULTS / "dm_curve").glob("*.json"),
                  key=lambda p: (json.loads(p.read_text())["ipc"],
                                 json.loads(p.read_text())["iterations"]))
    lines = ["## DM accuracy against iterations (Fashion-MNIST, fast preset, `dsa` protocol)", ""]
    if not rows:
        return lines + ["Not yet measured: `python benchmarks/bench_dm_curve.py`", ""]
    lines += ["| IPC | iterations | distill s | accuracy % | networks | date |",
              "|---|---|---|---|---|---|"]
    for p in rows:
        r = json.loads(p.read_text())
        lines.append(f"| {r['ipc']} | {r['iterations']} | {r['distill_seconds']:.0f} | "
                     f"{r['mean']:.2f} ± {r['std']:.2f} | {r['num_eval']} | {r['date']} |")
    lines += ["", f"Command: `{json.loads(rows[-1].read_text())['command']}`", ""]
    return lines


def speed_section() -> list[str]:
    lines = ["## Speed, side by side in one process", ""]
    dm = _load(RESULTS / "dm_speed.json")
    if dm:
        lines += [
            f"DM step at IPC {dm['ipc']}, 256 real images per class, seconds per iteration "
            f"(mean of {dm['iters']} after warm-up, {dm['date']}):",
            "",
            "| variant | s / iteration | speed-up |",
            "|---|---|---|",
        ]
        ref = dm["reference_per_class_fp32_s"]
        for key, label in (("reference_per_class_fp32_s", "per-class fp32 loop (original algorithm)"),
                           ("ours_fp32_eager_s", "batched over classes, fp32, eager"),
                           ("ours_bf16_eager_s", "batched, bf16 real pass, eager"),
                           ("ours_bf16_compiled_s", "batched, bf16 real pass, compiled (fast preset)")):
            lines.append(f"| {label} | {dm[key]:.2f} | {ref / dm[key]:.2f}x |")
        lines += ["", "Command: `python benchmarks/bench_dm_speed.py --ipc 10 --iters 8`", ""]
    ev = _load(RESULTS / "eval_speed.json")
    if ev:
        o, r = ev["ours_bf16_compiled"], ev["reference_fp32_eager"]
        lines += [
            f"Evaluation (`dsa` protocol, {ev['epochs']} epochs, ConvNet-3) of `{ev['synset']}` "
            f"(IPC {ev['ipc']}), {ev['date']}:",
            "",
            "| evaluator | accuracy % | networks | s / network |",
            "|---|---|---|---|",
            f"| fp32 eager (original evaluator's arithmetic) | {r['mean']:.2f} ± {r['std']:.2f} | "
            f"{len(r['acc'])} | {r['mean_seconds_after_first']:.0f} |",
            f"| bf16 autocast + torch.compile (default) | {o['mean']:.2f} ± {o['std']:.2f} | "
            f"{len(o['acc'])} | {o['mean_seconds_after_first']:.0f} |",
            "",
            f"Speed-up {ev['speedup']:.2f}x; accuracy difference {ev['accuracy_gap']:+.2f} points.",
            f"Command: `python benchmarks/bench_eval.py --synset {ev['synset']} "
            f"--num-eval {ev['num_eval']} --num-eval-ref {len(r['acc'])}"
            + (f" --ours-from {o['from']}`" if o.get("from") else "`")
            + " (the bf16 row reuses the `random` IPC 10 row of the table: same set, seeds,"
            " protocol).",
            "",
        ]
    return lines


def main() -> None:
    notes = (ROOT / "notes.md").read_text() if (ROOT / "notes.md").exists() else ""
    parts = ["# Benchmarks", "",
             "Generated by `python benchmarks/report.py` from `benchmarks/results/`; every number",
             "below was measured on this project's 2-core CPU machine (no GPU) by the command given.",
             ""]
    parts += table_section() + [""] + curve_section() + speed_section()
    if notes:
        parts += [notes]
    (ROOT.parent / "BENCHMARKS.md").write_text("\n".join(parts).rstrip() + "\n")


if __name__ == "__main__":
    main()
