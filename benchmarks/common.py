"""What the benchmark scripts share: resuming a row whose run was killed.

A row's distillation checkpoints into ``<name>.ckpt.pt`` (removed once the set is saved as
``<name>.pt``); its evaluation records each finished network in ``checkpoints/<name>.eval.json``
(:mod:`datadistill.evaluate.checkpoint`). A rerun of the same command therefore continues where
the killed one stopped, and reports what an uninterrupted run would have.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datadistill.synthetic import SyntheticSet
from datadistill.utils import machine_description


def interrupted_set(pt: Path, row: Path, **expected: Any) -> SyntheticSet | None:
    """The set a killed run saved at ``pt`` before its row ``row`` was written in full (a row
    written with ``"complete": false`` still waits for part of its evaluation), if its metadata
    has the ``expected`` values (e.g. ``config=``, ``seed=``); else None (distil again)."""
    if not pt.exists() or (row.exists() and json.loads(row.read_text()).get("complete", True)):
        return None
    synset = SyntheticSet.load(pt)
    other = sorted(k for k, v in expected.items() if synset.meta.get(k) != v)
    if other:
        print(f"{pt} was made with another {', '.join(other)}: distilling again", flush=True)
        return None
    print(f"{pt}: the set of an interrupted run; its evaluation resumes", flush=True)
    return synset


def distilled_set(pt: Path, row: Path, run: Callable[[Path], SyntheticSet],
                  **expected: Any) -> tuple[SyntheticSet, bool]:
    """The row's set and whether a killed run made it: re-used (see :func:`interrupted_set`), or
    made by ``run(checkpoint)`` and saved to ``pt`` (its checkpoint files then removed)."""
    saved = interrupted_set(pt, row, **expected)
    if saved is not None:
        return saved, True
    synset = run(pt.with_suffix(".ckpt.pt"))
    synset.save(pt, compress=True)  # gzipped: the kept initial images halve in size
    for p in pt.parent.glob(f"{pt.stem}.ckpt*.pt"):
        p.unlink()
    return synset, False


def eval_checkpoint(results: Path, name: str) -> Path:
    """Where the evaluation of row ``name`` records its finished networks: a ``checkpoints/``
    folder beside the rows, so ``report.py`` never reads one as a row. A partial evaluation may
    be committed there to continue in a later session."""
    (results / "checkpoints").mkdir(parents=True, exist_ok=True)
    return results / "checkpoints" / f"{name}.eval.json"


def distill_provenance(synset: SyntheticSet, row: Path, reused: bool,
                       eval_ckpt: Path | None = None) -> dict[str, Any]:
    """Where and how a row's set was distilled, kept across a resume on another machine: the
    set's own ``machine`` (recorded since 2026-12-04), else the killed run's row, else this
    machine; a re-used set also keeps the killed run's CPU time and load average. Called before
    the evaluation with its checkpoint ``eval_ckpt``, it also records whether all of the
    evaluation runs here (``eval_machine_all``: no finished network waits in the checkpoint)."""
    here = machine_description()
    if not reused:
        return {"machine": synset.meta.get("machine", here)}
    prev = json.loads(row.read_text()) if row.exists() else {}
    out = {k: prev[k] for k in ("distill_cpu_seconds", "load_average_after_distill") if k in prev}
    out["machine"] = synset.meta.get("machine") or prev.get("machine", here)
    if out["machine"] != here:
        out["eval_machine"] = here  # part of (or all) the evaluation ran here
        if eval_ckpt is not None:
            out["eval_machine_all"] = not eval_ckpt.exists()
    return out
