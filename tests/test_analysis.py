"""Diagnostics: update-signal similarity, k-NN manifold metrics on hand-made points, plots,
``analyze`` and ``datadistill analyze``."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from datadistill.analysis import (
    accuracy_vs_ipc_plot,
    analyze,
    feature_network,
    format_report,
    knn_radii,
    load_accuracy_results,
    manifold_metrics,
    segment_plot,
    update_signal_similarity,
)
from datadistill.cli import main
from datadistill.errors import ConfigError, DataError
from datadistill.synthetic import SyntheticSet


def _png_ok(path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100


# ---------------------------------------------------------------------------- update signals
def test_update_signal_similarity_hand_made():
    init = torch.zeros(5, 1, 1, 2)
    final = torch.tensor([[1.0, 0.0], [2.0, 0.0],            # class 0: parallel -> +1
                          [1.0, 1.0], [-1.0, -1.0],          # class 1: opposite -> -1
                          [5.0, 5.0]]).view(5, 1, 1, 2)       # class 2: one image, skipped
    labels = torch.tensor([0, 0, 1, 1, 2])
    r = update_signal_similarity(final, init, labels)
    assert r["per_class"] == pytest.approx({0: 1.0, 1: -1.0})
    assert r["mean"] == pytest.approx(0.0) and r["within_segment"] is None
    # three orthogonal updates of one class (and an offset initial image): mean 0
    init3 = torch.full((3, 1, 1, 3), 0.5)
    final3 = init3 + torch.eye(3).view(3, 1, 1, 3)
    assert update_signal_similarity(final3, init3, torch.zeros(3, dtype=torch.long))["mean"] == \
        pytest.approx(0.0, abs=1e-12)
    # segments: pairs in the same segment vs across segments
    final4 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]).view(4, 1, 1, 2)
    r = update_signal_similarity(final4, torch.zeros(4, 1, 1, 2), torch.zeros(4, dtype=torch.long),
                                 torch.tensor([0, 0, 1, 1]))
    assert r["within_segment"] == pytest.approx(1.0) and r["across_segment"] == pytest.approx(0.0)
    assert r["mean"] == pytest.approx(4 / 12)  # 4 of the 12 ordered pairs have cosine 1
    with pytest.raises(ConfigError):
        update_signal_similarity(final, init[:4], labels)
    with pytest.raises(ConfigError, match="at least 2"):
        update_signal_similarity(final[:1], init[:1], labels[:1])


# ---------------------------------------------------------------------------- k-NN manifolds
def test_knn_radii_hand_made():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert knn_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 5.0]
    with pytest.raises(ConfigError):
        knn_radii(x, 4)


def test_manifold_metrics_hand_made():
    real = torch.arange(10.0).view(10, 1)  # NND_1 = 1 for every real point
    same = manifold_metrics(real, real.clone(), k=1)
    assert same == {"precision": 1.0, "recall": 1.0, "coverage": 1.0}
    far = manifold_metrics(real, torch.tensor([[100.0], [101.0], [103.0]]), k=1)
    assert far == {"precision": 0.0, "recall": 0.0, "coverage": 0.0}
    # synthetic 0, 1, 2 (NND_1 = 1) and an outlier at 50 (NND_1 = 48, its ball covers 2..98):
    # recall counts every real point; coverage only reals 0..3 (a synthetic point within 1);
    # precision: 3 of the 4 synthetic points lie in a real ball.
    m = manifold_metrics(real, torch.tensor([[0.0], [1.0], [2.0], [50.0]]), k=1)
    assert m == pytest.approx({"precision": 0.75, "recall": 1.0, "coverage": 0.4})
    # recall grows as the synthetic set spreads over the real set (k = 5 as in the ISA paper)
    g = torch.Generator().manual_seed(0)
    real2 = torch.randn(400, 2, generator=g)
    narrow = manifold_metrics(real2, 0.1 * torch.randn(20, 2, generator=g), k=5)
    wide = manifold_metrics(real2, torch.randn(20, 2, generator=g), k=5)
    assert wide["recall"] > narrow["recall"] and wide["coverage"] > narrow["coverage"]
    with pytest.raises(ConfigError):
        manifold_metrics(real, torch.zeros(3, 2), k=1)


# ---------------------------------------------------------------------------- plots
def test_accuracy_vs_ipc_plot(tmp_path):
    res = {"title": "digits", "full": {"mean": 98.0, "std": 0.2},
           "series": {"dm": [{"ipc": 1, "mean": 60.0, "std": 2.0}, {"ipc": 10, "mean": 90.0, "std": 1}],
                      "dm+sequential": [{"ipc": 10, "mean": 91.0, "std": 1.0}],
                      "random": [{"ipc": 10, "mean": 85.0}]}}
    (tmp_path / "r.json").write_text(json.dumps(res))
    _png_ok(accuracy_vs_ipc_plot(load_accuracy_results(tmp_path / "r.json"), tmp_path / "a.png"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    (tmp_path / "bad.json").write_text(json.dumps({"series": {"dm": [{"mean": 3}]}}))
    with pytest.raises(DataError, match="ipc"):
        load_accuracy_results(tmp_path / "bad.json")
    with pytest.raises(DataError):
        load_accuracy_results(tmp_path / "missing.json")


def test_segment_plot(tmp_path):
    recs = [{"index": 0, "pool_size": 100, "dropped": 40, "forgotten": None},
            {"index": 1, "pool_size": 60, "dropped": 0, "forgotten": 7}]
    _png_ok(segment_plot(recs, tmp_path / "s.png"))
    with pytest.raises(ConfigError):
        segment_plot([], tmp_path / "t.png")


# ---------------------------------------------------------------------------- analyze
@pytest.fixture(scope="module")
def seq_synset(digits):
    """A hand-built two-segment synthetic set of digits (real images nudged away from their
    initial values), with the metadata the sequential strategy writes."""
    train, _ = digits
    g = torch.Generator().manual_seed(0)
    x, y = train.sample_balanced(4, g)
    init = x.clone()
    x = x + 0.1 * torch.randn(x.shape, generator=g)
    recs = [{"index": 0, "ipc": 2, "steps": 5, "pool_size": len(train), "reg_pool_size": 0,
             "probe_train_accuracy": 80.0, "forgotten": None, "learned": None, "dropped": 300,
             "seconds": 1.0},
            {"index": 1, "ipc": 2, "steps": 5, "pool_size": len(train) - 300, "reg_pool_size": 300,
             "probe_train_accuracy": 85.0, "forgotten": 12, "learned": 40, "dropped": 0,
             "seconds": 1.0}]
    meta = {"method": "dm", "dataset": "digits", "strategy": {"name": "sequential"},
            "segment": [0, 0, 1, 1] * 10, "sequential": {"segments": recs}}
    return SyntheticSet(x, y, train.class_names, train.preprocessing, meta=meta, initial=init)


def test_initial_images_survive_save_load(seq_synset, tmp_path):
    s = SyntheticSet.load(seq_synset.save(tmp_path / "s.pt"))
    assert torch.equal(s.initial, seq_synset.initial)
    plain = SyntheticSet(s.images, s.labels, s.class_names, s.preprocessing)
    assert SyntheticSet.load(plain.save(tmp_path / "p.pt")).initial is None


def test_analyze(seq_synset, digits, tmp_path):
    train, _ = digits
    r = analyze(seq_synset, out_dir=tmp_path / "a", train=train, max_real=300, k=5)
    assert -1.0 <= r["update_signal"]["mean"] <= 1.0
    assert r["update_signal"]["within_segment"] is not None
    for key in ("precision", "recall", "coverage"):
        assert 0.0 <= r["manifold"][key] <= 1.0
    assert r["manifold"]["real_images"] == 300 and r["manifold"]["synthetic_images"] == 40
    assert r["segments"][1]["forgotten"] == 12
    for f in ("tsne.png", "segments.png"):
        _png_ok(tmp_path / "a" / f)
    saved = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert saved["manifold"] == pytest.approx(r["manifold"])
    text = format_report(r)
    assert "recall" in text and "forgotten" in text and "segment" in text
    # the same set, analysed twice, gives the same numbers (fixed feature space and sample)
    again = analyze(seq_synset, train=train, max_real=300, k=5, tsne=False)
    assert again["manifold"] == r["manifold"]


def test_analyze_ipc1_has_no_update_signal(digits):
    """A pairwise similarity needs two images of a class: at IPC 1 analyze reports None."""
    train, _ = digits
    x, y = train.sample_balanced(1, torch.Generator().manual_seed(0))
    one = SyntheticSet(x + 0.1, y, train.class_names, train.preprocessing, initial=x.clone())
    r = analyze(one, train=train, max_real=100, k=3, tsne=False)
    assert r["update_signal"] is None and r["manifold"]["synthetic_images"] == 10
    assert "n/a" in format_report(r)


def test_feature_network_kinds(digits):
    train, _ = digits
    net = feature_network(train, kind="trained", net="convnet-w32", epochs=1)
    assert net.embed(train.images[:2]).shape[0] == 2
    with pytest.raises(ConfigError):
        feature_network(train, kind="pretrained")


def test_cli_analyze(seq_synset, tmp_path, capsys):
    path = seq_synset.save(tmp_path / "run" / "synset.pt")
    res = {"series": {"dm": [{"ipc": 10, "mean": 90.0, "std": 1.0}]}}
    (tmp_path / "acc.json").write_text(json.dumps(res))
    code = main(["analyze", str(path.parent), "--max-real", "200", "--no-tsne",
                 "--accuracy-json", str(tmp_path / "acc.json"), "--hard-easy", "2",
                 "--hard-easy-net", "frepo-convnet", "--hard-easy-batch", "100", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "update-signal similarity" in out and "recall" in out
    assert "hard predicts easy" in out and "2 draws" in out
    saved = json.loads((tmp_path / "run" / "analysis" / "analysis.json").read_text())
    assert len(saved["hard_easy"]["draws"]) == 2
    assert (tmp_path / "run" / "analysis" / "analysis.json").exists()
    assert (tmp_path / "run" / "analysis" / "segments.png").exists()
    _png_ok(tmp_path / "accuracy_vs_ipc.png")
    assert main(["analyze"]) == 2
    assert "nothing to analyse" in capsys.readouterr().err
    assert main(["analyze", str(path.parent), "--hard-easy", "-1"]) == 2
    assert "--hard-easy" in capsys.readouterr().err
