"""Sequential difficulty-aligned segments: the filtering rule, forgetting, the DM segment
interface (regulariser, zero weight), options, checkpoint/resume, and a CLI run on digits."""

from __future__ import annotations

import json

import pytest
import torch

from datadistill.cli import main
from datadistill.errors import ConfigError
from datadistill.methods import SegmentContext, make_distiller
from datadistill.methods.dm import DM, segment_reg_loss
from datadistill.strategies import STRATEGIES
from datadistill.strategies.sequential import (
    count_forgetting,
    segment_plan,
    select_dropped,
    split_steps,
)
from datadistill.synthetic import SyntheticSet

# Tiny DM: a narrow ConvNet, few real images per class, eager fp32.
DM_TINY = {"batch_real": 8, "net": "convnet-w32", "compile": False, "precision": "fp32"}


def tiny_dm(steps: int, ipc: int = 2, cls: type = DM) -> DM:
    d = make_distiller("dm", dataset="digits", ipc=ipc, overrides={**DM_TINY, "steps": steps})
    return cls(d.config)


# ---------------------------------------------------------------------------- pure rules
def test_select_dropped_easiest_correct_per_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    correct = torch.tensor([True, True, True, False, True, True, False, False])
    loss = torch.tensor([0.5, 0.1, 0.3, 0.05, 0.2, 0.9, 0.01, 0.3])
    pool = torch.ones(8, dtype=torch.bool)
    drop = select_dropped(loss, correct, labels, pool, 0.5, 2)
    # class 0: 3 correct -> floor(1.5) = 1, the lowest-loss CORRECT one (index 3 is wrong);
    # class 1: 2 correct -> 1, index 4 (index 6 has a lower loss but is wrong)
    assert drop.nonzero().flatten().tolist() == [1, 4]
    drop = select_dropped(loss, correct, labels, pool, 1.0, 2, min_keep=2)
    assert drop.nonzero().flatten().tolist() == [1, 2, 4, 5]  # each class keeps 2
    drop = select_dropped(loss, correct, labels, pool, 1.0, 2, min_keep=3)
    assert drop.nonzero().flatten().tolist() == [1, 4]
    # images already outside the pool are never dropped again and do not count
    pool[1] = False
    drop = select_dropped(loss, correct, labels, pool, 1.0, 2)
    assert drop.nonzero().flatten().tolist() == [0, 2, 4, 5]
    assert not select_dropped(loss, correct, labels, pool, 0.0, 2).any()
    with pytest.raises(ConfigError):
        select_dropped(loss, correct, labels, pool, 1.5, 2)


def test_select_dropped_with_a_network(digits):
    """The rule on a real probe: dropped images are correct, in the pool, and easier (lower
    loss) than every kept correct image of their class."""
    from datadistill.evaluate.protocols import get_protocol
    from datadistill.evaluate.train import train_network
    from datadistill.strategies.sequential import probe_predictions

    train, _ = digits
    x, y = train.sample_balanced(3, torch.Generator().manual_seed(0))
    net = train_network("convnet-w32", x, y, 10, get_protocol("dc").with_(epochs=100, lr=0.05), seed=0,
                        dsa_strategy="none", device=torch.device("cpu"), compile=False,
                        precision="fp32")
    loss, correct = probe_predictions(net, train, precision="fp32")
    assert loss.shape == correct.shape == (len(train),) and 0.3 < correct.float().mean() < 1.0
    pool = torch.ones(len(train), dtype=torch.bool)
    drop = select_dropped(loss, correct, train.labels, pool, 0.5, 10)
    assert (correct[drop]).all()
    for c in range(10):
        of_c = train.labels == c
        n_correct = int((of_c & correct).sum())
        assert int((drop & of_c).sum()) == n_correct // 2
        kept = of_c & correct & ~drop
        if (drop & of_c).any() and kept.any():
            assert loss[drop & of_c].max() <= loss[kept].min()


def test_count_forgetting():
    before = torch.tensor([True, True, False, False, True])
    after = torch.tensor([False, True, True, False, False])
    assert count_forgetting(before, after) == 2  # indices 0 and 4
    assert count_forgetting(after, before) == 1  # index 2
    assert count_forgetting(before, before) == 0
    with pytest.raises(ConfigError):
        count_forgetting(before, after[:3])


def test_segment_plan_and_steps():
    assert segment_plan(10, 3, None) == [4, 3, 3]
    assert segment_plan(10, None, 4) == [4, 4, 2]
    assert segment_plan(10, None, None) == [2] * 5
    assert segment_plan(3, None, None) == [1, 1, 1]
    assert segment_plan(10, 5, 2) == [2] * 5
    for bad in ((10, 11, None), (10, 0, None), (10, 3, 2)):
        with pytest.raises(ConfigError):
            segment_plan(*bad)
    assert split_steps(10, 3) == [4, 3, 3] and sum(split_steps(601, 5)) == 601
    with pytest.raises(ConfigError, match="steps"):
        split_steps(2, 3)


def test_segment_reg_loss_hand_made():
    # class 0: dropped mean 2, synthetic so far = frozen [0] + new [2] -> mean 1 -> (2-1)^2 = 1;
    # class 1 has no dropped image and is skipped.
    emb_d, y_d = torch.tensor([[1.0], [3.0]]), torch.tensor([0, 0])
    emb_f, y_f = torch.tensor([[0.0], [5.0]]), torch.tensor([0, 1])
    emb_n = torch.tensor([[2.0], [7.0]], requires_grad=True)
    y_n = torch.tensor([0, 1])
    loss = segment_reg_loss(emb_d, y_d, emb_f, y_f, emb_n, y_n, 2)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert emb_n.grad[:, 0].tolist() == pytest.approx([-1.0, 0.0])  # d/dnew of (2 - (0+n)/2)^2


# ---------------------------------------------------------------------------- options
def test_options_and_method_support(digits):
    seq = STRATEGIES.get("sequential")
    with pytest.raises(ConfigError, match="unknown option"):
        seq({"segmentz": 2})
    for bad in ({"drop_fraction": 1.5}, {"reg_weight": -1}, {"probe_epochs": 0},
                {"init_from_trained": "yes"}, {"segments": 2.5}):
        with pytest.raises(ConfigError):
            seq(bad)
    random = make_distiller("random", dataset="digits", ipc=2)
    with pytest.raises(ConfigError, match="cannot distil sequential segments.*dm"):
        seq({"segments": 2}).run(random, digits[0], 2, progress=False)
    with pytest.raises(ConfigError):
        SegmentContext(0, torch.zeros(2, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError):
        SegmentContext(0, torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), reg_weight=-1.0)


# ---------------------------------------------------------------------------- DM segments
def test_zero_reg_weight_has_no_effect(digits):
    train, _ = digits
    frozen_x, frozen_y = train.sample_balanced(1, torch.Generator().manual_seed(5))
    pool = train.subset(torch.arange(0, len(train), 2))
    dropped = train.subset(torch.arange(1, len(train), 2))

    def run(weight: float, reg_pool):
        ctx = SegmentContext(1, frozen_x, frozen_y, reg_pool=reg_pool, reg_weight=weight)
        return tiny_dm(4).distill(pool, 2, seed=3, progress=False, segment=ctx).images

    plain = tiny_dm(4).distill(pool, 2, seed=3, progress=False).images
    zero = run(0.0, dropped)
    assert torch.equal(zero, run(1.0, None))  # no dropped images: nothing to regularise
    assert torch.equal(zero, plain)
    assert not torch.allclose(zero, run(10.0, dropped))  # the regulariser does act


def test_dm_keeps_initial_images_and_trained_net(digits):
    train, _ = digits
    s = tiny_dm(3).distill(train, 2, seed=0, progress=False)
    assert s.initial is not None and s.initial.shape == s.images.shape
    assert not torch.equal(s.initial, s.images)
    assert any(torch.equal(s.initial[0], im) for im in train.images[train.labels == 0])
    from datadistill.evaluate.train import build_network

    state = build_network("convnet-w32", 1, 10, (8, 8), 99, torch.device("cpu")).state_dict()
    ctx = SegmentContext(1, s.images, s.labels, reg_pool=None, net_state=state,
                         trained_net_fraction=1.0)
    a = tiny_dm(3).distill(train, 2, seed=0, progress=False, segment=ctx).images
    assert not torch.equal(a, s.images)  # the matching networks changed
    bad = build_network("convnet", 1, 10, (8, 8), 0, torch.device("cpu")).state_dict()
    with pytest.raises(ConfigError, match="trained network"):
        tiny_dm(1).distill(train, 2, seed=0, progress=False,
                           segment=SegmentContext(1, s.images, s.labels, net_state=bad,
                                                  trained_net_fraction=1.0))


class _FailOnSecondSegment(DM):
    calls = 0

    def distill(self, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == 2:
            raise KeyboardInterrupt
        return super().distill(*args, **kwargs)


def test_resume_after_a_finished_segment(digits, tmp_path):
    train, _ = digits
    opts = {"segments": 2, "probe_epochs": 5, "reg_weight": 1.0, "init_from_trained": True}
    ref = STRATEGIES.get("sequential")(opts).run(tiny_dm(4), train, 4, seed=1, progress=False)
    ck = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        STRATEGIES.get("sequential")(opts).run(tiny_dm(4, cls=_FailOnSecondSegment), train, 4,
                                               seed=1, progress=False, checkpoint=ck)
    assert ck.exists()
    again = STRATEGIES.get("sequential")(opts).run(tiny_dm(4), train, 4, seed=1, progress=False,
                                                   checkpoint=ck, resume=True)
    assert torch.equal(again.images, ref.images)
    assert again.meta["sequential"]["segments"][0]["pool_hash"] == \
        ref.meta["sequential"]["segments"][0]["pool_hash"]
    assert not (tmp_path / "checkpoint.segment1.pt").exists()


# ---------------------------------------------------------------------------- end to end
def test_cli_dm_sequential_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["distill", "--dataset", "digits", "--method", "dm", "--strategy", "sequential",
                 "--segments", "2", "--ipc", "6", "--steps", "40", "--reg-weight", "1.0",
                 "--set", "batch_real=16", "--set", "net=convnet-w32", "--set", "compile=false",
                 "--strategy-set", "probe_epochs=200", "--strategy-set", "drop_fraction=0.6",
                 "--models", "convnet-w32", "--epochs", "150", "--num-eval", "1", "--no-baseline",
                 "--no-compile", "--precision", "fp32", "--quiet", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    acc = metrics["evaluation"]["scores"]["convnet-w32"]["mean"]
    assert acc > 60.0, acc  # chance is 10 %
    s = SyntheticSet.load(out)
    assert s.images.shape == (60, 1, 8, 8) and s.initial is not None
    assert s.labels.tolist() == torch.arange(10).repeat_interleave(6).tolist()  # class-major
    assert s.meta["segment"] == ([0] * 3 + [1] * 3) * 10
    segs = s.meta["sequential"]["segments"]
    assert [r["index"] for r in segs] == [0, 1] and [r["ipc"] for r in segs] == [3, 3]
    assert [r["steps"] for r in segs] == [20, 20]  # the base steps split over the segments
    assert segs[0]["pool_size"] == 1257 and segs[0]["dropped"] > 0
    assert segs[1]["pool_size"] == 1257 - segs[0]["dropped"]  # a different, smaller pool
    assert segs[0]["pool_hash"] != segs[1]["pool_hash"]
    assert segs[1]["reg_pool_size"] == segs[0]["dropped"]
    assert segs[0]["forgotten"] is None and isinstance(segs[1]["forgotten"], int)
    assert min(r["probe_train_accuracy"] for r in segs) > 50.0  # the probe learned something
    assert not (out / "checkpoint.pt").exists()


def test_cli_refuses_a_method_without_segments(tmp_path, capsys):
    code = main(["distill", "--dataset", "digits", "--method", "herding", "--strategy",
                 "sequential", "--segments", "2", "--ipc", "4", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot distil sequential segments" in err and "dm" in err
    assert not (tmp_path / "r").exists()  # refused before anything is written


# ---------------------------------------------------------------------------- gradient matching
GM_TINY = {"batch_real": 8, "net": "convnet-w32", "outer_loop": 2, "inner_loop": 2}


def test_segment_match_loss_uneven_classes_equals_the_class_loop():
    from datadistill.evaluate.train import build_network
    from datadistill.methods.gm import gradient_match_loss, segment_match_loss

    net = build_network("convnet-w32", 1, 3, (8, 8), 0, torch.device("cpu")).double()
    g = torch.Generator().manual_seed(0)
    # class 0: 3 dropped, 2 synthetic; class 1: 2 dropped, 3 synthetic; class 2: none dropped
    yd, ys = torch.tensor([1, 0, 0, 1, 0]), torch.tensor([2, 0, 1, 1, 0, 1, 2])
    xd = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=g)
    xs = torch.randn(7, 1, 8, 8, dtype=torch.float64, generator=g)
    got = segment_match_loss(net, xd, yd, xs, ys, 3, metric="cos")
    want = sum(gradient_match_loss(net, xd[yd == c][None], xs[ys == c][None], torch.tensor([c]),
                                   metric="cos") for c in (0, 1))
    torch.testing.assert_close(got, want)
    assert segment_match_loss(net, xd[:0], yd[:0], xs, ys, 3).item() == 0.0


def test_dsa_zero_reg_weight_has_no_effect(digits):
    train, _ = digits
    pool = train.subset(torch.arange(0, len(train), 2))
    dropped = train.subset(torch.arange(1, len(train), 2))
    frozen_x, frozen_y = train.sample_balanced(1, torch.Generator().manual_seed(5))
    d = make_distiller("dsa", dataset="digits", ipc=2, overrides={**GM_TINY, "steps": 2})

    def run(weight: float, reg_pool, fx=frozen_x, fy=frozen_y):
        ctx = SegmentContext(1, fx, fy, reg_pool=reg_pool, reg_weight=weight)
        return d.distill(pool, 2, seed=3, progress=False, segment=ctx).images

    zero = run(0.0, dropped)
    assert torch.equal(zero, run(1.0, None))  # no dropped images: nothing to regularise
    assert not torch.allclose(zero, run(10.0, dropped))  # the regulariser does act
    # nothing frozen and weight 0: exactly the plain run
    plain = d.distill(pool, 2, seed=3, progress=False).images
    assert torch.equal(run(0.0, dropped, frozen_x[:0], frozen_y[:0]), plain)


def test_cli_idc_sequential_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["distill", "--dataset", "digits", "--method", "idc", "--strategy", "sequential",
                 "--segments", "2", "--ipc", "2", "--steps", "4", "--reg-weight", "1.0",
                 "--set", "inner_loop=2", "--set", "n_data=64", "--set", "batch_real=8",
                 "--set", "net=convnet-w32", "--strategy-set", "probe_epochs=200",
                 "--strategy-set", "init_from_trained=true",
                 "--protocol", "idc", "--epochs", "300", "--num-eval", "1", "--no-baseline",
                 "--models", "convnet-w32",
                 "--no-compile", "--precision", "fp32", "--quiet", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    acc = metrics["evaluation"]["scores"]["convnet-w32"]["mean"]
    assert acc > 30.0, acc  # chance is 10 %; this tiny run reaches about 46 %
    s = SyntheticSet.load(out)
    # the stored (compact) images of both segments, class-major; each decodes to f^2 = 4 images
    assert s.parameterization == "multi-formation" and s.factor == 2
    assert s.images.shape == (20, 1, 8, 8) and len(s) == 80
    assert s.initial is not None and s.initial.shape == s.images.shape
    assert not torch.equal(s.initial, s.images)  # the stored pixels moved
    assert s.labels.tolist() == torch.arange(10).repeat_interleave(2).tolist()
    assert s.meta["segment"] == [0, 1] * 10
    segs = s.meta["sequential"]["segments"]
    assert [r["ipc"] for r in segs] == [1, 1] and [r["steps"] for r in segs] == [2, 2]
    assert segs[0]["pool_size"] == 1257 and segs[0]["dropped"] > 0
    assert segs[1]["pool_size"] == 1257 - segs[0]["dropped"]  # a different, smaller pool
    assert segs[0]["pool_hash"] != segs[1]["pool_hash"]
    assert segs[1]["reg_pool_size"] == segs[0]["dropped"]
