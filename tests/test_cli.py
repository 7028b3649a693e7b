"""Tests of the ``datadistill`` command line (in-process through ``main`` and one subprocess) and
end-to-end runs on digits (command line) and a Fashion-MNIST slice (Python API)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from datadistill.cli import main
from datadistill.synthetic import SyntheticSet

ROOT = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Default run folders (runs/...) land in a temporary directory."""
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------------------ errors


def test_unknown_dataset(capsys):
    code, _, err = run_cli(capsys, "distill", "--dataset", "fashion-mnis", "--method", "dm",
                           "--ipc", "1")
    assert code == 2
    assert "fashion-mnis" in err and "digits" in err and "fashion-mnist" in err and "cifar10" in err
    assert "Traceback" not in err


def test_unknown_method(capsys):
    code, _, err = run_cli(capsys, "distill", "--dataset", "digits", "--method", "dmm", "--ipc", "1")
    assert code == 2
    for name in ("dm", "random", "herding", "k-center"):
        assert name in err


def test_unknown_preset(capsys):
    code, _, err = run_cli(capsys, "distill", "--dataset", "digits", "--method", "dm", "--ipc", "1",
                           "--preset", "turbo")
    assert code == 2 and "turbo" in err and "fast, paper" in err


def test_unknown_override_and_bad_set(capsys):
    code, _, err = run_cli(capsys, "distill", "--dataset", "digits", "--method", "dm", "--ipc", "1",
                           "--set", "lr_imgg=2")
    assert code == 2 and "lr_imgg" in err and "lr_img" in err
    code, _, err = run_cli(capsys, "distill", "--dataset", "digits", "--method", "dm", "--ipc", "1",
                           "--set", "lr_img")
    assert code == 2 and "key=value" in err


@pytest.mark.parametrize("ipc", ["0", "1000", "-3"])
def test_bad_ipc(capsys, ipc, tmp_path):
    code, _, err = run_cli(capsys, "distill", "--dataset", "digits", "--method", "random", "--ipc",
                           ipc, "--out", tmp_path / "r")
    assert code == 2
    assert "IPC" in err
    if ipc == "1000":
        assert "122" in err  # the smallest digits class in the training split
    assert not (tmp_path / "r").exists()  # nothing is created for a rejected run


def test_bad_num_eval(capsys):
    code, _, err = run_cli(capsys, "distill", "--dataset", "digits", "--method", "random", "--ipc",
                           "1", "--num-eval", "0")
    assert code == 2 and "--num-eval" in err


def test_evaluate_corrupt_file(capsys, tmp_path):
    bad = tmp_path / "synset.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip archive" * 20)
    code, _, err = run_cli(capsys, "evaluate", bad, "--no-compile", "--quiet")
    assert code == 2
    assert str(bad) in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "missing.pt", "--quiet")
    assert code == 2 and "no synthetic set" in err
    code, _, err = run_cli(capsys, "export", bad, "--npz", tmp_path / "x.npz")
    assert code == 2 and not (tmp_path / "x.npz").exists()


def test_evaluate_empty_file(capsys, tmp_path):
    empty = tmp_path / "synset.pt"
    empty.write_bytes(b"")
    code, _, err = run_cli(capsys, "evaluate", empty, "--quiet")
    assert code == 2 and str(empty) in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["distill", "--dataset", "digits", "--method", "dm"])  # no --ipc
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    capsys.readouterr()


def test_list(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for section in ("datasets:", "methods:", "protocols:", "networks:"):
        assert section in out
    for name in ("digits", "fashion-mnist", "cifar10", "dm", "herding", "k-center", "random", "dc",
                 "dsa", "convnet", "mlp", "resnet18"):
        assert name in out
    assert "[presets: fast, paper]" in out


def test_subprocess_error_exit_code_and_no_traceback(tmp_path):
    exe = ROOT / ".venv" / "bin" / "datadistill"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "datadistill.cli"]
    proc = subprocess.run(
        [*cmd, "distill", "--dataset", "no-such-data", "--method", "dm", "--ipc", "1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no-such-data" in proc.stderr and "digits" in proc.stderr
    assert proc.stderr.startswith("datadistill: error:")


def test_keyboard_interrupt_exit_130(capsys, tmp_path, monkeypatch):
    import datadistill.cli as cli

    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "distill", interrupted)
    code, _, err = run_cli(capsys, "distill", "--dataset", "digits", "--method", "dm", "--ipc", "1")
    assert code == 130 and "--resume" in err


def test_log_handler_not_leaked_between_runs(capsys, tmp_path):
    logger = logging.getLogger("datadistill")
    before = list(logger.handlers)
    try:
        for name in ("first", "second"):
            code, _, _ = run_cli(capsys, "distill", "--dataset", "digits", "--method", "random",
                                 "--ipc", "1", "--no-eval", "--quiet", "--out", tmp_path / name)
            assert code == 0
        assert str(tmp_path / "second") not in (tmp_path / "first" / "log.txt").read_text()
        assert logger.handlers == before
    finally:
        for h in logger.handlers[:]:
            if h not in before:
                logger.removeHandler(h)
                h.close()


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
    """One `datadistill distill` run on digits (dm, IPC 5, 20 steps, dc protocol 60 epochs)."""
    out = tmp_path_factory.mktemp("e2e") / "run"
    code = main(["distill", "--dataset", "digits", "--method", "dm", "--ipc", "5", "--steps", "20",
                 "--set", "compile=false", "--set", "precision=fp32", "--protocol", "dc",
                 "--epochs", "60", "--num-eval", "2", "--no-compile", "--out", str(out), "--quiet"])
    logger = logging.getLogger("datadistill")
    for h in logger.handlers[:]:  # see test_log_handler_not_leaked_between_runs
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == out:
            logger.removeHandler(h)
            h.close()
    return code, out


@pytest.mark.slow
def test_e2e_distill_run_folder(e2e_run):
    code, out = e2e_run
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.yaml", "grid.png", "log.txt", "metrics.json", "synset.pt"]
    assert not (out / "checkpoint.pt").exists()
    synset = SyntheticSet.load(out / "synset.pt")
    assert synset.images.shape == (50, 1, 8, 8)
    assert torch.equal(synset.labels, torch.arange(10).repeat_interleave(5))
    assert synset.meta["method"] == "dm" and synset.meta["dataset"] == "digits"
    assert synset.meta["config"]["steps"] == 20 and synset.meta["config"]["compile"] is False
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["dataset"] == "digits" and config["ipc"] == 5 and config["method"] == "dm"
    assert config["hyperparameters"]["precision"] == "fp32"
    assert "distilling digits with dm at IPC 5" in (out / "log.txt").read_text()
    with Image.open(out / "grid.png") as im:
        assert im.size == ((5 * 9 + 1) * 2, (10 * 9 + 1) * 2)


@pytest.mark.slow
def test_e2e_metrics(e2e_run):
    _, out = e2e_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distill_seconds"] > 0 and metrics["peak_memory_mb"] > 0
    ev = metrics["evaluation"]
    assert ev["protocol"]["name"] == "dc" and ev["protocol"]["epochs"] == 60
    assert ev["ipc"] == 5 and ev["dataset"] == "digits" and ev["method"] == "dm"
    conv = ev["scores"]["convnet"]
    assert len(conv["accuracies"]) == 2
    assert conv["mean"] > 50.0  # chance is 10%
    assert conv["mean"] == pytest.approx(np.mean(conv["accuracies"]))
    base = ev["baseline"]["convnet"]
    assert len(base["accuracies"]) == 2 and base["mean"] > 30.0


@pytest.mark.slow
def test_e2e_evaluate_command(e2e_run, capsys, tmp_path):
    _, out = e2e_run
    capsys.readouterr()
    result = tmp_path / "result.json"
    code, stdout, err = run_cli(capsys, "evaluate", out / "synset.pt", "--protocol", "dc", "--epochs",
                                "30", "--num-eval", "2", "--no-baseline", "--no-compile", "--quiet",
                                "--precision", "fp32", "--out", result)
    assert code == 0, err
    assert "digits, IPC 5, protocol dc" in stdout and "±" in stdout and "random subset" not in stdout
    d = json.loads(result.read_text())
    assert d["baseline"] is None and d["protocol"]["epochs"] == 30
    assert len(d["scores"]["convnet"]["accuracies"]) == 2
    assert d["scores"]["convnet"]["mean"] > 20.0


@pytest.mark.slow
def test_e2e_export_command(e2e_run, capsys, tmp_path):
    _, out = e2e_run
    folder, npz, grid = tmp_path / "png", tmp_path / "set.npz", tmp_path / "grid.png"
    code, stdout, err = run_cli(capsys, "export", out, "--imagefolder", folder, "--npz", npz,
                                "--grid", grid)
    assert code == 0, err
    assert str(folder) in stdout and str(npz) in stdout and str(grid) in stdout
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(classes) == 10
    for d in classes:
        pngs = list(d.glob("*.png"))
        assert len(pngs) == 5
        with Image.open(pngs[0]) as im:
            assert im.size == (8, 8)
    with np.load(npz) as z:
        assert z["pixels"].shape == (50, 1, 8, 8) and z["labels"].shape == (50,)
        assert z["pixels"].min() >= 0 and z["pixels"].max() <= 1
    assert grid.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli(capsys, "export", out)
    assert code == 2 and "nothing to export" in err


@pytest.mark.slow
def test_e2e_rerun_same_out_refused(e2e_run, capsys):
    _, out = e2e_run
    before = (out / "synset.pt").read_bytes()
    code, _, err = run_cli(capsys, "distill", "--dataset", "digits", "--method", "dm", "--ipc", "5",
                           "--steps", "20", "--no-eval", "--out", out, "--quiet")
    assert code == 2 and "already holds a finished run" in err
    assert (out / "synset.pt").read_bytes() == before


def test_interrupted_evaluation_resumes(capsys, tmp_path, monkeypatch):
    """A run killed during its evaluation keeps its set and finished networks; --resume trains
    only the missing networks and gives the uninterrupted run's result."""
    import datadistill.evaluate.api as api

    out = tmp_path / "run"
    argv = ["distill", "--dataset", "digits", "--method", "random", "--ipc", "2", "--protocol",
            "dc", "--epochs", "5", "--num-eval", "2", "--models", "mlp", "--no-compile",
            "--precision", "fp32", "--quiet", "--out", out]
    real_train = api.train_and_test
    seeds = []

    def killed_at_second(*args, **kwargs):
        seeds.append(kwargs["seed"])
        if len(seeds) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(api, "train_and_test", killed_at_second)
    code, _, err = run_cli(capsys, *argv)
    assert code == 130 and "--resume" in err
    assert (out / "synset.pt").exists() and not (out / "metrics.json").exists()
    first = json.loads((out / "eval-checkpoint.json").read_text())["networks"]
    assert list(first) == ["scores/mlp/0"]
    set_bytes = (out / "synset.pt").read_bytes()

    code, _, err = run_cli(capsys, *argv)  # without --resume: refused, nothing touched
    assert code == 2 and "evaluation was interrupted" in err and "--resume" in err
    other_ipc = [*argv[:6], "3", *argv[7:]]
    assert argv[5:7] == ["--ipc", "2"]
    code, _, err = run_cli(capsys, *other_ipc, "--resume")
    assert code == 2 and "resume with the original arguments" in err

    monkeypatch.setattr(api, "train_and_test", real_train)
    code, _, err = run_cli(capsys, *argv, "--resume")
    assert code == 0, err
    assert (out / "synset.pt").read_bytes() == set_bytes  # not distilled again
    assert not (out / "eval-checkpoint.json").exists()
    ev = json.loads((out / "metrics.json").read_text())["evaluation"]
    assert ev["scores"]["mlp"]["accuracies"][0] == first["scores/mlp/0"]["accuracy"]
    whole = tmp_path / "whole"
    code, _, err = run_cli(capsys, *argv[:-1], whole)
    assert code == 0, err
    again = json.loads((whole / "metrics.json").read_text())["evaluation"]
    for part in ("scores", "baseline"):
        assert again[part]["mlp"]["accuracies"] == ev[part]["mlp"]["accuracies"]


def test_evaluate_command_checkpoint(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "distill", "--dataset", "digits", "--method", "random", "--ipc",
                           "2", "--no-eval", "--quiet", "--out", out)
    assert code == 0, err
    ckpt = tmp_path / "eval.json"
    argv = ["evaluate", out, "--protocol", "dc", "--epochs", "3", "--num-eval", "1", "--models",
            "mlp", "--no-baseline", "--no-compile", "--precision", "fp32", "--quiet",
            "--checkpoint", ckpt]
    code, first, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert list(json.loads(ckpt.read_text())["networks"]) == ["scores/mlp/0"]
    code, again, err = run_cli(capsys, *argv)
    assert code == 0 and again.splitlines()[:3] == first.splitlines()[:3]
    assert argv[4:6] == ["--epochs", "3"]
    code, _, err = run_cli(capsys, *argv[:5], "4", *argv[6:])  # other epochs: refused
    assert code == 2 and "different evaluation" in err and "Traceback" not in err


@pytest.mark.slow
def test_fashion_mnist_slice_end_to_end():
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} is missing")
    from datadistill import load_dataset
    from datadistill.evaluate import evaluate, get_protocol
    from datadistill.methods import distill

    train, test = load_dataset("fashion-mnist")
    assert train.image_shape == (1, 28, 28) and len(train) == 60000
    idx = torch.cat([pool[:100] for pool in train.indices_by_class])
    small = train.subset(idx)
    assert len(small) == 1000 and small.class_counts().tolist() == [100] * 10
    # fewer real images per class and step than the preset (256) to fit the 2-core CPU budget
    synset = distill("dm", small, 2, steps=20, seed=0, progress=False, compile=False,
                     precision="auto", batch_real=16)
    assert synset.images.shape == (20, 1, 28, 28) and torch.isfinite(synset.images).all()
    test_slice = test.subset(torch.arange(1000))
    result = evaluate(synset, get_protocol("dsa").with_(epochs=100), ["convnet"], num_eval=2,
                      train=small, test=test_slice, baseline=False, compile=False,
                      precision="auto", progress=False)
    accs = result.scores["convnet"].accuracies
    assert len(accs) == 2
    assert result.scores["convnet"].mean > 50.0, accs  # chance is 10%
