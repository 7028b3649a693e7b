"""Tests of datadistill.evaluate: protocols, the training loop and ``evaluate``, on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datadistill.data import Preprocessing, RealDataset
from datadistill.errors import ConfigError, UnknownNameError
from datadistill.evaluate import PROTOCOLS, EvalResult, Protocol, evaluate, get_protocol
from datadistill.evaluate.train import train_network
from datadistill.methods.coreset import random_subset
from datadistill.synthetic import SyntheticSet

# short protocol for the 8x8 digits (the real ones train 300/1000 epochs)
SHORT = get_protocol("dc").with_(epochs=40)
FAST = dict(compile=False, precision="fp32", progress=False)


def subset_synset(train: RealDataset, ipc: int, seed: int) -> SyntheticSet:
    x, y = random_subset(train, ipc, seed)
    return SyntheticSet(x, y, train.class_names, train.preprocessing,
                        meta={"method": "random", "dataset": train.name, "seed": seed})


@pytest.fixture(scope="module")
def synset(digits):
    return subset_synset(digits[0], 10, seed=1)


@pytest.fixture(scope="module")
def result(digits, synset) -> EvalResult:
    train, test = digits
    return evaluate(synset, SHORT, ["convnet", "mlp"], num_eval=2, seed=0, train=train, test=test,
                    baseline=True, **FAST)


# ------------------------------------------------------------------------------ protocols


def test_dc_lr_schedule():
    dc = get_protocol("dc")
    assert dc.epochs == 300 and dc.augment == "none"
    assert dc.lr_at(0) == pytest.approx(0.01)
    assert dc.lr_at(149) == pytest.approx(0.01)
    assert dc.lr_at(150) == pytest.approx(0.001)
    assert dc.lr_at(299) == pytest.approx(0.001)


def test_dsa_protocol_and_schedule():
    dsa = get_protocol("dsa")
    assert dsa.epochs == 1000 and dsa.augment == "dsa" and dsa.batch_size == 256
    assert (dsa.lr, dsa.momentum, dsa.weight_decay) == (0.01, 0.9, 5e-4)
    assert dsa.lr_at(499) == pytest.approx(0.01) and dsa.lr_at(500) == pytest.approx(0.001)


def test_lr_schedule_several_milestones():
    p = Protocol("x", epochs=10, lr=1.0, milestones=(0.5, 0.8), gamma=0.5)
    assert [p.lr_at(e) for e in range(10)] == pytest.approx([1.0] * 5 + [0.5] * 3 + [0.25] * 2)


@pytest.mark.parametrize(
    "changes",
    [{"epochs": 0}, {"epochs": -3}, {"batch_size": 0}, {"augment": "autoaugment"},
     {"cutmix_p": 1.5}, {"cutmix_p": -0.1}],
)
def test_protocol_validation(changes):
    with pytest.raises(ConfigError):
        Protocol("bad", **{"epochs": 10, **changes})
    with pytest.raises(ConfigError):
        get_protocol("dc").with_(**changes)


def test_with_returns_copy():
    dc = get_protocol("dc")
    short = dc.with_(epochs=5)
    assert short.epochs == 5 and dc.epochs == 300 and short.name == "dc"
    assert short.to_dict()["epochs"] == 5


def test_get_protocol():
    assert get_protocol("DC") is PROTOCOLS.get("dc")
    p = Protocol("mine", epochs=3)
    assert get_protocol(p) is p
    with pytest.raises(UnknownNameError, match="dc, dsa"):
        get_protocol("dsaa")


# ------------------------------------------------------------------------------ training loop


def test_train_network_applies_lr_schedule(monkeypatch, digits):
    train, _ = digits
    x, y = random_subset(train, 3, 0)
    seen: list[float] = []
    real_step = torch.optim.SGD.step

    def step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    proto = get_protocol("dc").with_(epochs=4)
    train_network("mlp", x, y, 10, proto, seed=0, dsa_strategy="none", device=torch.device("cpu"),
                  precision="fp32", compile=False)
    assert seen == pytest.approx([0.01, 0.01, 0.001, 0.001])
    seen.clear()
    # a learned lr stored in a synthetic set replaces the protocol's, same decay
    train_network("mlp", x, y, 10, proto, seed=0, dsa_strategy="none", device=torch.device("cpu"),
                  precision="fp32", compile=False, lr=0.5)
    assert seen == pytest.approx([0.5, 0.5, 0.05, 0.05])
    seen.clear()
    # batch 256 over 30 images: one step per epoch; batch 8: 4 steps per epoch
    train_network("mlp", x, y, 10, proto.with_(batch_size=8), seed=0, dsa_strategy="none",
                  device=torch.device("cpu"), precision="fp32", compile=False)
    assert len(seen) == 16


def test_train_network_deterministic_and_soft_labels(digits):
    train, _ = digits
    x, y = random_subset(train, 2, 0)
    proto = get_protocol("dsa").with_(epochs=3)
    kw = dict(seed=5, dsa_strategy="color_crop_cutout_scale_rotate", device=torch.device("cpu"),
              precision="fp32", compile=False)
    a = train_network("mlp", x, y, 10, proto, **kw)
    b = train_network("mlp", x, y, 10, proto, **kw)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = train_network("mlp", x, y, 10, proto, **{**kw, "seed": 6})
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))
    soft = torch.nn.functional.one_hot(y, 10).float()
    d = train_network("mlp", x, soft, 10, proto, **kw)
    for pa, pd in zip(a.parameters(), d.parameters(), strict=True):  # one-hot soft == hard
        torch.testing.assert_close(pa, pd)


# ------------------------------------------------------------------------------ evaluate


def test_evaluate_accuracy_well_above_chance(result):
    conv = result.scores["convnet"]
    assert conv.mean > 40.0  # chance is 10%
    assert result.scores["mlp"].mean > 30.0
    assert all(0.0 <= a <= 100.0 for a in conv.accuracies + result.scores["mlp"].accuracies)
    assert result.baseline["convnet"].mean > 40.0


def test_eval_result_structure(result, synset):
    assert list(result.scores) == ["convnet", "mlp"]
    assert list(result.baseline) == ["convnet", "mlp"]
    for part in (result.scores, result.baseline):
        for s in part.values():
            assert len(s.accuracies) == 2 and len(s.seconds) == 2
            assert s.mean == pytest.approx(np.mean(s.accuracies))
            assert s.std == pytest.approx(np.std(s.accuracies))
            assert all(t > 0 for t in s.seconds)
    assert result.dataset == "digits" and result.ipc == 10 and result.method == "random"
    assert result.protocol["name"] == "dc" and result.protocol["epochs"] == 40
    assert result.settings["num_eval"] == 2 and result.settings["compile"] is False
    assert result.settings["dsa_strategy"] == "color_crop_cutout_scale_rotate"  # no flip on digits
    assert result.wall_seconds > 0
    d = result.to_dict()
    assert d["scores"]["convnet"]["mean"] == pytest.approx(result.scores["convnet"].mean)
    assert d["baseline"]["mlp"]["std"] == pytest.approx(result.baseline["mlp"].std)
    assert d["scores"]["convnet"]["accuracies"] == result.scores["convnet"].accuracies


def test_eval_result_table(result):
    table = result.table()
    for name in ("convnet", "mlp"):
        s, b = result.scores[name], result.baseline[name]
        assert f"{s.mean:.2f} ± {s.std:.2f}" in table
        assert f"{b.mean:.2f} ± {b.std:.2f}" in table
    assert "random subset" in table and "IPC 10" in table and "over 2 networks" in table


def test_evaluate_is_deterministic(result, digits, synset):
    # network i uses seed + i whatever num_eval is: one network reproduces the first of two
    train, test = digits
    again = evaluate(synset, SHORT, ["convnet", "mlp"], num_eval=1, seed=0, train=train, test=test,
                     baseline=False, **FAST)
    assert again.baseline is None
    for m in ("convnet", "mlp"):
        assert again.scores[m].accuracies == [result.scores[m].accuracies[0]]
    assert "random subset" not in again.table()


def test_evaluate_seed_changes_result(digits, synset):
    train, test = digits
    a = evaluate(synset, SHORT, ["mlp"], num_eval=2, seed=0, train=train, test=test, baseline=False,
                 **FAST)
    b = evaluate(synset, SHORT, ["mlp"], num_eval=2, seed=1, train=train, test=test, baseline=False,
                 **FAST)
    assert b.scores["mlp"].accuracies[0] == a.scores["mlp"].accuracies[1]
    assert a.scores["mlp"].accuracies != b.scores["mlp"].accuracies


def test_evaluate_baseline_same_ipc(digits):
    # the baseline of a random subset drawn with the evaluation seed IS that subset
    train, test = digits
    s = subset_synset(train, 3, seed=0)
    r = evaluate(s, SHORT.with_(epochs=5), ["mlp"], num_eval=1, seed=0, train=train, test=test, **FAST)
    assert r.ipc == 3
    assert r.baseline["mlp"].accuracies == r.scores["mlp"].accuracies


def test_evaluate_mismatching_test_set(synset):
    fake = RealDataset(torch.zeros(20, 1, 28, 28), torch.arange(20) % 10, [str(i) for i in range(10)],
                       Preprocessing((0.5,), (0.5,)), "fake", "test")
    with pytest.raises(ConfigError, match="does not fit"):
        evaluate(synset, SHORT, ["mlp"], num_eval=1, test=fake, baseline=False, **FAST)
    five = RealDataset(torch.zeros(5, 1, 8, 8), torch.arange(5), [str(i) for i in range(5)],
                       Preprocessing((0.5,), (0.5,)), "five", "test")
    with pytest.raises(ConfigError, match="5 classes"):
        evaluate(synset, SHORT, ["mlp"], num_eval=1, test=five, baseline=False, **FAST)


def test_evaluate_argument_errors(synset, digits):
    train, test = digits
    with pytest.raises(ConfigError, match="num_eval"):
        evaluate(synset, SHORT, ["mlp"], num_eval=0, train=train, test=test, **FAST)
    with pytest.raises(UnknownNameError, match="convnet"):
        evaluate(synset, SHORT, ["convnet9"], num_eval=1, train=train, test=test, **FAST)
    with pytest.raises(UnknownNameError, match="dc, dsa"):
        evaluate(synset, "nope", ["mlp"], num_eval=1, train=train, test=test, **FAST)
    anonymous = SyntheticSet(synset.images, synset.labels, synset.class_names, synset.preprocessing)
    with pytest.raises(ConfigError, match="does not name its dataset"):
        evaluate(anonymous, SHORT, ["mlp"], num_eval=1, **FAST)


def test_evaluate_subpackage_is_not_shadowed():
    import datadistill
    import datadistill.evaluate
    import datadistill.methods

    assert datadistill.evaluate.Protocol is Protocol  # the subpackage, not a function
    assert callable(datadistill.evaluate.evaluate)
    assert callable(datadistill.methods.distill)


def test_evaluate_refuses_other_preprocessing(synset, digits):
    train, test = digits
    other = RealDataset(test.images, test.labels, test.class_names,
                        Preprocessing((0.5,), (0.25,)), test.name, "test")
    with pytest.raises(ConfigError, match="preprocessing"):
        evaluate(synset, SHORT, ["mlp"], num_eval=1, test=other, baseline=False, **FAST)


def test_precision_auto_resolves_by_hardware(monkeypatch):
    import datadistill.utils as utils
    from datadistill.evaluate.train import autocast

    cpu = torch.device("cpu")
    assert utils.resolve_precision("fp32", cpu) == "fp32"
    assert utils.resolve_precision("bf16", cpu) == "bf16"  # explicit requests are honoured
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(utils, "_NATIVE_BF16_CPU", native)
        assert utils.resolve_precision("auto", cpu) == expected
        with autocast(cpu, "auto"):
            out = torch.ones(2, 2) @ torch.ones(2, 2)
        assert out.dtype == (torch.bfloat16 if native else torch.float32)
    with pytest.raises(ConfigError, match="auto"):
        utils.resolve_precision("fp16", cpu)


def test_tune_allocator_is_safe_to_call_twice():
    import sys

    from datadistill.utils import tune_allocator

    first, second = tune_allocator(), tune_allocator()
    assert first == second
    if not sys.platform.startswith("linux"):
        assert first is False


# ------------------------------------------------------------------------------ resumable


@pytest.fixture
def trained(monkeypatch) -> list[int]:
    """The seeds of the networks ``evaluate`` trains (rather than takes from a checkpoint)."""
    import datadistill.evaluate.api as api

    seeds: list[int] = []
    real_train = api.train_and_test

    def counting(*args, **kwargs):
        seeds.append(kwargs["seed"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(api, "train_and_test", counting)
    return seeds


def test_evaluate_checkpoint_resumes_without_retraining(digits, synset, tmp_path, trained):
    train, test = digits
    ckpt = tmp_path / "eval.json"
    first = evaluate(synset, SHORT, ["mlp"], num_eval=2, seed=0, train=train, test=test,
                     baseline=True, checkpoint=ckpt, **FAST)
    assert set(json.loads(ckpt.read_text())["networks"]) == {
        "scores/mlp/0", "scores/mlp/1", "baseline/mlp/0", "baseline/mlp/1"}
    trained.clear()
    again = evaluate(synset, SHORT, ["mlp"], num_eval=2, seed=0, train=train, test=test,
                     baseline=True, checkpoint=ckpt, **FAST)
    assert trained == []  # everything came from the file
    # the wall time covers the recorded networks' training, not only this call's reading
    recorded = sum(first.scores["mlp"].seconds) + sum(first.baseline["mlp"].seconds)
    assert recorded <= again.wall_seconds < recorded + 5.0
    assert again.scores["mlp"].accuracies == first.scores["mlp"].accuracies
    assert again.baseline["mlp"].accuracies == first.baseline["mlp"].accuracies
    # one more network per set: only the two new ones train, and they match a fresh run
    more = evaluate(synset, SHORT, ["mlp"], num_eval=3, seed=0, train=train, test=test,
                    baseline=True, checkpoint=ckpt, **FAST)
    assert trained == [2, 2]
    fresh = evaluate(synset, SHORT, ["mlp"], num_eval=3, seed=0, train=train, test=test,
                     baseline=True, **FAST)
    assert more.scores["mlp"].accuracies == fresh.scores["mlp"].accuracies
    assert more.baseline["mlp"].accuracies == fresh.baseline["mlp"].accuracies


def test_evaluate_checkpoint_adds_the_baseline_later(digits, synset, tmp_path, trained):
    """An evaluation recorded without the random-subset baseline is finished with it by training
    only the baseline networks; a baseline from another training set is refused."""
    train, test = digits
    ckpt = tmp_path / "eval.json"
    kw = dict(models=["mlp"], num_eval=2, seed=0, test=test, checkpoint=ckpt, **FAST)
    alone = evaluate(synset, SHORT.with_(epochs=3), train=train, baseline=False, **kw)
    trained.clear()
    both = evaluate(synset, SHORT.with_(epochs=3), train=train, baseline=True, **kw)
    assert trained == [0, 1]  # the baseline's two networks; the synthetic set's came from the file
    assert len(both.baseline["mlp"].accuracies) == 2
    assert both.scores["mlp"].accuracies == alone.scores["mlp"].accuracies
    fp = json.loads(ckpt.read_text())["fingerprint"]
    assert fp["baseline"] is not None
    evaluate(synset, SHORT.with_(epochs=3), train=train, baseline=False, **kw)  # still fits
    assert json.loads(ckpt.read_text())["fingerprint"] == fp
    other = RealDataset(train.images[:-10], train.labels[:-10], train.class_names,
                        train.preprocessing, train.name, train.split)
    with pytest.raises(ConfigError, match="different evaluation.*baseline"):
        evaluate(synset, SHORT.with_(epochs=3), train=other, baseline=True, **kw)


def test_evaluate_krr_uses_the_same_networks(digits, synset, tmp_path, trained):
    """krr=True reports the KRR predictor of the very networks the protocol trained: equal to
    the frepo-krr protocol's accuracies (which train them again), network accuracies unchanged;
    a checkpointed network without its KRR accuracy is trained again only when KRR is asked."""
    train, test = digits
    proto = get_protocol("frepo").with_(steps=15)
    kw = dict(models=["mlp"], num_eval=2, seed=0, train=train, test=test, **FAST)
    ckpt = tmp_path / "eval.json"
    plain = evaluate(synset, proto, baseline=True, checkpoint=ckpt, **kw)
    assert plain.krr_scores is None and plain.krr_baseline is None
    trained.clear()
    both = evaluate(synset, proto, baseline=True, krr=True, checkpoint=ckpt, **kw)
    assert trained == [0, 1, 0, 1]  # every recorded network lacked its KRR accuracy
    assert both.scores["mlp"].accuracies == plain.scores["mlp"].accuracies
    assert both.baseline["mlp"].accuracies == plain.baseline["mlp"].accuracies
    alone = evaluate(synset, get_protocol("frepo-krr").with_(steps=15), baseline=True, **kw)
    assert both.krr_scores["mlp"].accuracies == alone.scores["mlp"].accuracies
    assert both.krr_baseline["mlp"].accuracies == alone.baseline["mlp"].accuracies
    trained.clear()
    again = evaluate(synset, proto, baseline=True, krr=True, checkpoint=ckpt, **kw)
    assert trained == [] and again.to_dict()["krr_scores"] == both.to_dict()["krr_scores"]
    assert "+ KRR" in again.table()


def test_evaluate_checkpoint_refuses_another_evaluation(digits, synset, tmp_path):
    train, test = digits
    ckpt = tmp_path / "eval.json"
    evaluate(synset, SHORT.with_(epochs=2), ["mlp"], num_eval=1, seed=0, train=train, test=test,
             baseline=False, checkpoint=ckpt, **FAST)
    before = ckpt.read_text()
    with pytest.raises(ConfigError, match="different evaluation.*seed"):
        evaluate(synset, SHORT.with_(epochs=2), ["mlp"], num_eval=1, seed=1, train=train,
                 test=test, baseline=False, checkpoint=ckpt, **FAST)
    with pytest.raises(ConfigError, match="different evaluation.*protocol"):
        evaluate(synset, SHORT.with_(epochs=3), ["mlp"], num_eval=1, seed=0, train=train,
                 test=test, baseline=False, checkpoint=ckpt, **FAST)
    other = subset_synset(train, 10, seed=2)
    with pytest.raises(ConfigError, match="different evaluation.*synset"):
        evaluate(other, SHORT.with_(epochs=2), ["mlp"], num_eval=1, seed=0, train=train,
                 test=test, baseline=False, checkpoint=ckpt, **FAST)
    assert ckpt.read_text() == before  # a refused run leaves the file alone
    ckpt.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable evaluation checkpoint.*delete it"):
        evaluate(synset, SHORT.with_(epochs=2), ["mlp"], num_eval=1, seed=0, train=train,
                 test=test, baseline=False, checkpoint=ckpt, **FAST)
