"""Tests of the benchmark scripts' shared resume logic, through ``benchmarks/tune_preset.py`` run
in-process on digits (the scripts are not part of the package; they import ``common`` from their
own folder)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def tune_preset(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import tune_preset

    def run(*argv: str) -> None:
        monkeypatch.setattr(sys, "argv", ["tune_preset.py", *argv])
        tune_preset.main()
        torch.set_num_threads(1)  # main() tunes the allocator only; keep the test suite's setting

    return run


def _args(out: Path) -> list[str]:
    return ["--dataset", "digits", "--method", "dm", "--ipc", "2", "--n-val", "300",
            "--epochs", "5", "--num-eval", "1", "--out", str(out),
            "--candidate", "a:lr_img=2,compile=false:3"]


def test_tune_preset_row_and_resume(tune_preset, tmp_path, capsys):
    tune_preset(*_args(tmp_path))
    row_path = tmp_path / "ipc2-a.json"
    row = json.loads(row_path.read_text())
    assert row["dataset"] == "digits" and row["overrides"] == {"lr_img": 2, "compile": False}
    assert row["steps"] == 3 and 0 < row["relative_image_change"] < 1
    assert len(row["val_accuracies"]) == 1 and 10 < row["val_mean"] <= 100  # 10 classes
    assert (tmp_path / "ipc2-a.pt").exists()  # the set is kept beside its row
    assert not list((tmp_path / "checkpoints").glob("*"))  # the evaluation checkpoint is removed

    # a finished candidate is skipped
    capsys.readouterr()
    tune_preset(*_args(tmp_path))
    assert json.loads(capsys.readouterr().out) == row

    # killed after distilling (set saved, row not yet written): the set is re-used, not re-made,
    # and the same seed gives the same validation accuracy
    row_path.unlink()
    tune_preset(*_args(tmp_path))
    assert "the set of an interrupted run" in capsys.readouterr().out
    again = json.loads(row_path.read_text())
    assert again["val_accuracies"] == row["val_accuracies"]
    assert again["distill_seconds"] == row["distill_seconds"]  # the set's own record


def test_tune_preset_rejects_bad_validation_size(tune_preset, tmp_path):
    with pytest.raises(SystemExit):
        tune_preset("--dataset", "digits", "--n-val", "5000", "--out", str(tmp_path),
                    "--candidate", "a::1")


def test_tune_preset_with_the_sequential_strategy(tune_preset, tmp_path):
    """``--strategy sequential``: ``strategy.*`` keys reach the strategy, the rest the preset."""
    tune_preset("--dataset", "digits", "--method", "dm", "--ipc", "2", "--n-val", "300",
                "--epochs", "5", "--num-eval", "1", "--out", str(tmp_path),
                "--strategy", "sequential", "--candidate",
                "s:strategy.segments=2,strategy.reg_weight=0.3,strategy.probe_epochs=2,"
                "compile=false:4")
    row = json.loads((tmp_path / "ipc2-s.json").read_text())
    assert row["overrides"] == {"compile": False}
    assert row["strategy_overrides"] == {"segments": 2, "reg_weight": 0.3, "probe_epochs": 2}
    assert row["strategy"]["options"]["reg_weight"] == 0.3
    assert "--strategy sequential" in row["command"] and 10 < row["val_mean"] <= 100
    from datadistill.synthetic import SyntheticSet

    meta = SyntheticSet.load(tmp_path / "ipc2-s.pt").meta
    assert meta["sequential"]["num_segments"] == 2 and sorted(set(meta["segment"])) == [0, 1]
    with pytest.raises(SystemExit):  # strategy options without a strategy
        tune_preset("--dataset", "digits", "--n-val", "300", "--out", str(tmp_path),
                    "--candidate", "b:strategy.segments=2:1")


def test_report_renders_the_committed_results(monkeypatch, tmp_path):
    """Every section of BENCHMARKS.md renders from the committed results (a new result file in
    an unexpected shape fails here, not when a session regenerates the report)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import report

    sections = [report.table_section(), report.curve_section(), report.speed_section(),
                report.gm_section(), report.sequential_section(), report.frepo_section(),
                report.isa_diag_section(), report.tuning_section(), report.in_progress_section()]
    assert all(isinstance(line, str) for lines in sections for line in lines)
    figure = report.ipc_figure_section(tmp_path)  # into tmp_path: the test leaves results alone
    assert not figure or (tmp_path / "accuracy_vs_ipc.png").stat().st_size > 1000
    tuning = "\n".join(report.tuning_section())
    for row in (BENCH / "results").glob("tune_*/ipc*.json"):
        assert f"| {json.loads(row.read_text())['name']} |" in tuning


def test_report_image_lr_of_a_curve_row(monkeypatch):
    """A DM curve row's image lr: its resolved config first, then its ``--set`` overrides, then
    the rate the first snapshots (which kept neither) ran with."""
    monkeypatch.syspath_prepend(str(BENCH))
    import report

    assert report._image_lr({"config": {"lr_img": 10.0}, "overrides": {"lr_img": 3}}) == 10.0
    assert report._image_lr({"overrides": {"lr_img": "3"}}) == 3.0
    assert report._image_lr({"overrides": {}}) == 1.0
    # and its init: the resolved config, the overrides, else random real images (the paper's)
    assert report._init({"config": {"init": "herding"}, "overrides": {}}) == "herding"
    assert report._init({"overrides": {"init": "noise"}}) == "noise"
    assert report._init({"overrides": {}}) == "real"


def test_report_cross_architecture_table(monkeypatch):
    """Rows evaluated on several networks get one column per network; single-network rows none."""
    monkeypatch.syspath_prepend(str(BENCH))
    import report

    def sc(mean):
        return {"mean": mean, "std": 0.5}

    rows = [{"method": "dm", "variant": "seq", "ipc": 50, "models": ["convnet", "vgg11"],
             "evaluation": {"scores": {"convnet": sc(85.0), "vgg11": sc(80.25)}}},
            {"method": "dm", "variant": "base", "ipc": 50, "models": ["convnet"],
             "evaluation": {"scores": {"convnet": sc(84.0)}}}]
    lines = report.cross_architecture_lines(rows)
    assert "| method | variant | IPC | convnet | vgg11 |" in lines
    assert "| dm | seq | 50 | 85.00 ± 0.50 | 80.25 ± 0.50 |" in lines
    assert not any("| base |" in line for line in lines)
    assert report.cross_architecture_lines(rows[1:]) == []


def test_distill_provenance_keeps_the_distilling_machine(monkeypatch, tmp_path):
    """A row resumed on another machine keeps where its set was distilled (and the killed run's
    CPU time) and names the machine that finished the evaluation, and whether it ran all of it."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common
    from datadistill.data.base import Preprocessing
    from datadistill.synthetic import SyntheticSet

    pre = Preprocessing((0.5,), (0.5,))
    monkeypatch.setattr(common, "machine_description", lambda: "cpu: B")
    synset = SyntheticSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"], pre,
                          meta={"machine": "cpu: A"})
    assert common.distill_provenance(synset, tmp_path / "row.json", reused=False) == {
        "machine": "cpu: A"}
    row = tmp_path / "row.json"
    row.write_text(json.dumps({"machine": "cpu: A", "distill_cpu_seconds": 5.0}))
    old = SyntheticSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"], pre, meta={})
    assert common.distill_provenance(old, row, reused=True) == {
        "machine": "cpu: A", "distill_cpu_seconds": 5.0, "eval_machine": "cpu: B"}
    # given the evaluation's checkpoint: all of the evaluation runs here unless one waits there
    ckpt = tmp_path / "row.eval.json"
    assert common.distill_provenance(old, row, reused=True, eval_ckpt=ckpt)["eval_machine_all"]
    ckpt.write_text("{}")
    assert not common.distill_provenance(old, row, True, eval_ckpt=ckpt)["eval_machine_all"]
    import report
    assert report._machines({"machine": "cpu: A", "eval_machine": "cpu: B"}) == (
        "cpu: A; eval. partly cpu: B")
    assert report._machines({"machine": "cpu: A", "eval_machine": "cpu: B",
                             "eval_machine_all": True}) == "cpu: A; eval. cpu: B"
    row.unlink()  # no earlier row and no machine in the set: this one did it all
    assert common.distill_provenance(old, row, reused=True) == {"machine": "cpu: B"}


def test_finished_row_is_skipped_or_refused_not_overwritten(monkeypatch, tmp_path, capsys):
    """A rerun of a finished row's command skips it where the recorded settings match, refuses it
    where one differs (naming it), skips it naming settings the row does not record, and goes
    ahead for an unfinished row or with ``force``."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    row = tmp_path / "dm-ipc100-base.json"
    assert not common.finished_row(row, config={"lr_img": 10.0})  # no row yet
    row.write_text(json.dumps({"config": {"lr_img": 1.0, "steps": 600}, "seed": 0,
                               "models": ["convnet"]}))
    assert common.finished_row(row, config={"lr_img": 1.0, "steps": 600}, seed=0)
    with pytest.raises(SystemExit, match=r"config\.lr_img: 1\.0 -> 10\.0"):
        common.finished_row(row, config={"lr_img": 10.0, "steps": 600}, seed=0)
    with pytest.raises(SystemExit, match=r"models: \['convnet'\] -> \['convnet', 'vgg11'\]"):
        common.finished_row(row, models=["convnet", "vgg11"])
    assert json.loads(row.read_text())["config"]["lr_img"] == 1.0  # nothing overwritten
    capsys.readouterr()
    assert common.finished_row(row, config={"lr_img": 1.0, "steps": 600, "init": "herding"})
    assert "does not record config.init" in capsys.readouterr().out
    assert not common.finished_row(row, force=True, config={"lr_img": 10.0})
    row.write_text(json.dumps({"config": {"lr_img": 1.0}, "complete": False}))
    assert not common.finished_row(row, config={"lr_img": 10.0})  # its evaluation resumes


def test_report_labels_a_row_its_command_no_longer_reproduces(monkeypatch):
    """A sequential row whose recorded config differs from what its command resolves to today
    (a preset changed, nothing pinned with --set) says so in its label; one pinned is plain."""
    monkeypatch.syspath_prepend(str(BENCH))
    import report
    from datadistill.methods import make_distiller

    cfg = make_distiller("dm", dataset="fashion-mnist", ipc=100, preset="fast").config
    row = {"dataset": "fashion-mnist", "method": "dm", "ipc": 100, "preset": "fast",
           "variant": "base", "strategy_options": None, "command": "x --variant base",
           "preset_overrides": {}, "config": {**cfg, "lr_img": 1.0}}
    assert cfg["lr_img"] != 1.0
    assert report._variant_label(row) == "base (earlier preset: lr_img=1)"
    assert report._variant_label({**row, "preset_overrides": {"lr_img": 1.0}}) == "base (lr_img 1.0)"
    assert report._variant_label({**row, "config": cfg}) == "base"


def test_report_variant_label_names_knobs_off_the_variants_own(monkeypatch):
    """A sequential row's label adds the regulariser weight / drop fraction only where they
    differ from what its variant pins (bench_sequential.py's VARIANTS)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import report

    def label(variant, **opts):
        return report._variant_label({"variant": variant, "strategy_options": opts})

    assert label("seq", segments=5) == "seq"  # rows from before the variants pinned the weight
    assert label("seq", reg_weight=1.0) == "seq"
    assert label("seq", reg_weight=0.3) == "seq (reg 0.3)"
    assert label("noreg", reg_weight=0.0) == "noreg"
    assert label("nofilter", drop_fraction=0.0, reg_weight=1.0) == "nofilter"
    assert label("nofilter", drop_fraction=0.25) == "nofilter (drop 0.25)"
    # preset keys set with --set: read from the row where stored, else from its command
    base = {"variant": "base", "strategy_options": None}
    assert report._variant_label({**base, "preset_overrides": {"syn_precision": "bf16"},
                                  "command": "... --set lr_img=1"}) == "base (syn_precision bf16)"
    assert report._variant_label({**base, "command": "... --set init=real --set lr_img=1"}) \
        == "base (init real, lr_img 1)"
    assert report._variant_label({**base, "preset_overrides": {}}) == "base"


def test_report_sequential_points_on_the_ipc_figure(monkeypatch, tmp_path):
    """The figure takes `base` / `seq` rows made at the preset's own settings; among `seq` rows at
    one IPC the one at the variant's own regulariser weight, whatever their accuracy."""
    monkeypatch.syspath_prepend(str(BENCH))
    import report

    monkeypatch.setattr(report, "RESULTS", tmp_path)
    (tmp_path / "sequential").mkdir()

    def row(name, variant, command, mean, **extra):
        r = {"dataset": "fashion-mnist", "method": "dm", "ipc": 50, "variant": variant,
             "preset": "fast", "command": command, "protocol": "dsa", "config": None,
             "evaluation": {"scores": {"convnet": {"mean": mean, "std": 0.1}}}, **extra}
        (tmp_path / "sequential" / f"{name}.json").write_text(json.dumps(r))

    row("a", "seq", "x --reg-weight 0.1", 90.0, strategy_options={"reg_weight": 0.1})
    row("b", "seq", "x", 80.0, strategy_options={"reg_weight": 1.0})
    row("c", "base", "x --set lr_img=1", 85.0)  # an override: not the preset's point
    row("d", "nofilter", "x", 85.0, strategy_options={"drop_fraction": 0.0, "reg_weight": 1.0})
    row("e", "base", "x", 70.0, preset_overrides={"init": "noise"})
    points = report._sequential_points()
    assert list(points) == [("dm", "seq", 50)]
    assert points["dm", "seq", 50]["evaluation"]["scores"]["convnet"]["mean"] == 80.0
