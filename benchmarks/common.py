"""What the benchmark scripts share: resuming a row whose run was killed.

A row's distillation checkpoints into ``<name>.ckpt.pt`` (removed once the set is saved as
``<name>.pt``); its evaluation records each finished network in ``checkpoints/<name>.eval.json``
(:mod:`datadistill.evaluate.checkpoint`). A rerun of the same command therefore continues where
the killed one stopped, and reports what an uninterrupted run would have. A rerun of a finished
row's command skips it, or refuses it where the row was made with other settings
(:func:`finished_row`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datadistill.synthetic import SyntheticSet
from datadistill.utils import machine_description


def _jsonable(value: Any) -> Any:
    """``value`` as a row's JSON holds it (rows are written with ``default=str``)."""
    return json.loads(json.dumps(value, default=str))


_ABSENT = object()


def _differences(prev: Any, now: Any, key: str) -> tuple[list[str], list[str]]:
    """Where two JSON values differ, leaf by leaf (dicts compared by key): ``key: old -> new``
    where both record the leaf, and the keys only one records (a setting added, or dropped,
    since the row was made)."""
    if isinstance(prev, dict) and isinstance(now, dict):
        both: list[str] = []
        one: list[str] = []
        for k in sorted(set(prev) | set(now), key=str):
            b, o = _differences(prev.get(k, _ABSENT), now.get(k, _ABSENT),
                                f"{key}.{k}" if key else str(k))
            both.extend(b)
            one.extend(o)
        return both, one
    if prev is _ABSENT or now is _ABSENT:
        return [], [key]
    return ([] if prev == now else [f"{key}: {prev!r} -> {now!r}"]), []


def finished_row(row: Path, force: bool = False, **expected: Any) -> bool:
    """Whether ``row`` is a finished row made with the ``expected`` values (e.g. ``config=``,
    ``seed=``; keys of the row's JSON), so a rerun of its command skips it; ``force`` measures it
    again (False). Rows are named by their command's arguments, not by the resolved config: after
    a preset change the same command names a row made with the old preset (the DM IPC 100 base
    row of 2026-12-07 ran at lr_img 1 and was nearly overwritten at 10). A setting the row does
    not record (it was added later) is named on the skip, not refused, as ``report.py`` reads a
    row against today's preset.

    Raises:
        SystemExit: the finished row records another value for one of ``expected`` (named,
            old -> new); nothing is overwritten unless ``force``.
    """
    if force or not row.exists():
        return False
    prev = json.loads(row.read_text())
    if not prev.get("complete", True):
        return False  # part of its evaluation waits: the run resumes it
    diff, unrecorded = _differences({k: prev.get(k, _ABSENT) for k in expected},
                                    _jsonable(expected), "")
    if diff:
        raise SystemExit(
            f"{row} is a finished row made with other settings ({'; '.join(diff)}). Its command "
            "now resolves to new ones (a preset changed?): rename the row (and its .pt) to a "
            "name that says what it ran, add --set K=V to reproduce it, or pass --force to "
            "overwrite it.")
    print(f"{row} is finished with these settings"
          + (f" (it does not record {', '.join(unrecorded)})" if unrecorded else "")
          + "; --force measures it again", flush=True)
    return True


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
