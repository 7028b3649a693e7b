"""Tests of FRePo (methods/frepo.py), its KRR (evaluate/krr.py), the step-based frepo protocol
(evaluate/frepo_train.py) and the frepo CLI paths."""

from __future__ import annotations

import json
import math

import pytest
import torch

from datadistill.cli import main
from datadistill.data import RealDataset
from datadistill.errors import ArtifactError, ConfigError
from datadistill.evaluate import evaluate, get_protocol, krr_predict, krr_solve
from datadistill.evaluate.frepo_train import (
    frepo_strategy,
    regression_targets,
    train_network_steps,
)
from datadistill.evaluate.krr import krr_accuracy
from datadistill.evaluate.protocols import Protocol
from datadistill.evaluate.train import build_network
from datadistill.evaluate.train import test_accuracy as accuracy_of
from datadistill.methods import METHODS, distill, make_distiller
from datadistill.methods.coreset import random_subset
from datadistill.methods.frepo import (
    Lamb,
    ModelPool,
    centred_onehot,
    cosine_lr,
    init_labels,
    krr_residual,
    label_margin_loss,
    mse_loss,
)
from datadistill.synthetic import SyntheticSet
from datadistill.utils import make_generator

CPU = torch.device("cpu")
# tiny FRePo runs: small real batch, fp32, eager
FAST = dict(progress=False, compile=False, precision="fp32", batch_real=64)


# ------------------------------------------------------------------------------ KRR


def test_krr_solve_matches_direct_solve():
    g = make_generator(0)
    for n, d, k in ((5, 3, 2), (12, 40, 4), (30, 200, 10)):
        f = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.randn(n, k, generator=g, dtype=torch.float64)
        kss = f @ f.T
        lam = 1e-6 * torch.trace(kss) / n
        direct = torch.linalg.inv(kss + lam * torch.eye(n, dtype=torch.float64)) @ y
        torch.testing.assert_close(krr_solve(kss, y), direct, rtol=1e-6, atol=1e-8)
        # float32 inputs: solved in float64, returned in float32
        out32 = krr_solve(kss.float(), y.float())
        assert out32.dtype == torch.float32
        if n <= d:  # well-conditioned (full rank) kernels agree to float32 precision
            torch.testing.assert_close(out32.double(), direct, rtol=1e-3, atol=1e-4)
    # another ridge
    f = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64)
    kss = f @ f.T
    lam = 0.5 * torch.trace(kss) / 6
    torch.testing.assert_close(krr_solve(kss, y, reg=0.5),
                               torch.linalg.solve(kss + lam * torch.eye(6, dtype=torch.float64), y))


def test_krr_solve_rank_deficient_kernel_is_finite():
    # 20 points in 5 dimensions: K_ss has rank 5; the ridge keeps the float64 solve finite
    g = make_generator(1)
    f = torch.randn(20, 5, generator=g)
    y = torch.randn(20, 3, generator=g)
    w = krr_solve(f @ f.T, y)
    assert torch.isfinite(w).all()
    # duplicate rows too
    f2 = torch.cat([f, f])
    assert torch.isfinite(krr_solve(f2 @ f2.T, torch.cat([y, y]))).all()


def test_krr_predict_and_residual_gradients():
    g = make_generator(2)
    ft = torch.randn(7, 6, generator=g, dtype=torch.float64)
    yt = torch.randn(7, 3, generator=g, dtype=torch.float64)
    fs = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ys = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kss = fs @ fs.T
    lam = 1e-6 * torch.trace(kss) / 4
    expected = ft @ fs.T @ torch.linalg.inv(kss + lam * torch.eye(4, dtype=torch.float64)) @ ys
    torch.testing.assert_close(krr_predict(ft, fs, ys), expected)
    torch.testing.assert_close(krr_residual(ft, yt, fs, ys), expected - yt)
    # gradient of FRePo's loss w.r.t. the synthetic features and labels
    assert torch.autograd.gradcheck(lambda a, b: mse_loss(krr_residual(ft, yt, a, b, 1e-2)),
                                    (fs, ys))


def test_krr_accuracy_perfect_on_support_set(digits):
    # a linear "network": predicting the support set itself is exact up to the tiny ridge
    train, _ = digits
    x, y = random_subset(train, 3, 0)
    net = build_network("mlp", 1, 10, (8, 8), 0, CPU)
    test = RealDataset(x, y, train.class_names, train.preprocessing, "digits", "test")
    assert krr_accuracy(net, x, y, test) == 100.0


# ------------------------------------------------------------------------------ pieces


def test_labels_and_margin():
    y = torch.tensor([0, 2])
    torch.testing.assert_close(centred_onehot(y, 4), torch.tensor(
        [[0.75, -0.25, -0.25, -0.25], [-0.25, -0.25, 0.75, -0.25]]))
    torch.testing.assert_close(init_labels(y, 10), centred_onehot(y, 10))
    torch.testing.assert_close(init_labels(y, 40), centred_onehot(y, 40) / 2.0)  # / sqrt(40/10)
    # margin: -min(top1 - top2, 1/K), averaged
    lab = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.3, 0.2, 0.0, 0.0]], requires_grad=True)
    loss = label_margin_loss(lab)
    assert loss.item() == pytest.approx(-(0.25 + 0.1) / 2)
    loss.backward()
    # only the second label (margin 0.1 < 1/4) gets a gradient: it widens its margin
    assert torch.equal(lab.grad[0], torch.zeros(4))
    assert lab.grad[1, 0] < 0 < lab.grad[1, 1]


def test_lamb_matches_the_formula():
    p = torch.tensor([3.0, 4.0], requires_grad=True)  # ||p|| = 5
    opt = Lamb([p], lr=0.1, betas=(0.9, 0.999), eps=1e-6)
    grads = [torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5])]
    ref = torch.tensor([3.0, 4.0], dtype=torch.float64)
    m = torch.zeros(2, dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    for t, g in enumerate(grads, 1):
        p.grad = g.clone()
        opt.step()
        g = g.double()
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        u = (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-6)
        ref = ref - 0.1 * (ref.norm() / u.norm()) * u
        torch.testing.assert_close(p.detach().double(), ref, rtol=1e-5, atol=1e-6)
    # the trust ratio makes the step size relative to ||p||: the first step moves by lr * ||p||
    q = torch.full((100,), 2.0, requires_grad=True)
    opt = Lamb([q], lr=0.01)
    q.grad = torch.randn(100, generator=make_generator(0))
    before = q.detach().clone()
    opt.step()
    assert (q.detach() - before).norm().item() == pytest.approx(0.01 * before.norm().item(), rel=1e-4)
    with pytest.raises(ConfigError):
        Lamb([q], lr=-1.0)


def test_cosine_lr():
    assert cosine_lr(1.0, 0, 100, 0.1) == pytest.approx(1.0)
    assert cosine_lr(1.0, 50, 100, 0.1) == pytest.approx(0.55)
    assert cosine_lr(1.0, 100, 100, 0.1) == pytest.approx(0.1)


def _pool(size=2, max_age=3, seed=0):
    loss_fn = lambda net, x, y: 0.5 * (net(x) - y).pow(2).sum(1).mean()  # noqa: E731
    seeds: list[int] = []

    def make(s):
        seeds.append(s)
        return build_network("frepo-convnet", 1, 10, (8, 8), s, CPU)

    pool = ModelPool(make, size, max_age, 3e-4, 8, loss_fn, make_generator(seed))
    return pool, seeds


def test_model_pool_reinitialises_after_k_steps():
    pool, seeds = _pool(size=3, max_age=4)
    assert len(pool) == 3 and len(seeds) == 3
    assert pool.ages == [0, 1, 2]  # staggered: (K // size) * i
    gen = make_generator(1)
    x, y = torch.randn(12, 1, 8, 8, generator=gen), torch.randn(12, 10, generator=gen)
    w0 = pool.nets[0].classifier.weight.detach().clone()
    for age in range(4):  # four online steps: trained, not re-initialised
        assert pool.advance(0, x, y, gen) is False
        assert pool.ages[0] == age + 1
    w4 = pool.nets[0].classifier.weight.detach().clone()
    assert not torch.equal(w0, w4)
    old_net = pool.nets[0]
    assert pool.advance(0, x, y, gen) is True  # K = 4 steps taken: re-initialised
    assert pool.nets[0] is not old_net and pool.ages[0] == 0 and pool.resets == 1
    assert len(seeds) == 4 and seeds[-1] not in seeds[:3]
    fresh = build_network("frepo-convnet", 1, 10, (8, 8), seeds[-1], CPU)
    for a, b in zip(pool.nets[0].parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    # the network that started at age 2 is re-initialised after 2 more steps
    pool.advance(2, x, y, gen)
    pool.advance(2, x, y, gen)
    assert pool.advance(2, x, y, gen) is True and pool.resets == 2
    # online steps use at most `batch` images (8 of 12) and leave x, y without gradient
    assert not x.requires_grad


def test_model_pool_state_round_trip():
    pool, _ = _pool()
    gen = make_generator(3)
    x, y = torch.randn(4, 1, 8, 8, generator=gen), torch.randn(4, 10, generator=gen)
    pool.advance(1, x, y, gen)
    state = pool.state_dict()
    other, _ = _pool(seed=9)
    other.load_state_dict(state)
    assert other.ages == pool.ages
    for a, b in zip(pool.nets[1].parameters(), other.nets[1].parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError):
        ModelPool(lambda s: None, 0, 3, 1e-3, 8, None, gen)


# ------------------------------------------------------------------------------ protocol


def test_frepo_protocol_fields():
    p = get_protocol("frepo")
    assert p.step_based and p.optimizer == "adam" and p.lr == 3e-4 and p.weight_decay == 0.0
    assert p.loss == "mse" and p.augment == "frepo" and p.model == "frepo-convnet"
    assert p.batch_size == 500 and p.warmup == 500 and p.final_lr == 0.01
    assert [p.train_steps(n) for n in (10, 100, 500)] == [1000, 2000, 5000]  # IPC 1/10/50, K=10
    assert p.train_steps(20) == 2000 and p.train_steps(10**6) == 40000
    assert p.with_(steps=7).train_steps(100) == 7
    assert get_protocol("frepo-krr").predictor == "krr"
    assert get_protocol("dsa").train_steps(100) == 1000 and not get_protocol("dsa").step_based
    # schedule: linear warm-up from 0, cosine to 0.01x
    assert p.lr_at_step(0, 1000) == 0.0
    assert p.lr_at_step(250, 1000) == pytest.approx(1.5e-4)
    assert p.lr_at_step(500, 1000) == pytest.approx(3e-4)
    assert p.lr_at_step(750, 1000) == pytest.approx(3e-4 * (0.01 + 0.99 * 0.5))
    assert p.lr_at_step(1000, 1000) == pytest.approx(3e-6)
    # a shortened run reaches the peak lr: warm-up capped at half the steps
    assert p.lr_at_step(50, 100) == pytest.approx(3e-4)
    assert frepo_strategy("fashion-mnist") == "color_crop_cutout_scale_rotate"
    assert frepo_strategy("cifar10") == "color_crop_cutout_flip_scale_rotate"


@pytest.mark.parametrize("changes", [
    {"epochs": 5}, {"steps": 0}, {"optimizer": "rmsprop"}, {"loss": "hinge"},
    {"predictor": "svm"}, {"warmup": -1}, {"final_lr": 2.0}, {"steps_by_images": ((0, 5),)},
])
def test_frepo_protocol_validation(changes):
    with pytest.raises(ConfigError):
        get_protocol("frepo").with_(**changes)


def test_epoch_protocols_refuse_step_options():
    for bad in ({"optimizer": "adam"}, {"loss": "mse"}, {"warmup": 10}):
        with pytest.raises(ConfigError, match="step-based"):
            Protocol("x", epochs=3, **bad)
    with pytest.raises(ConfigError, match="epochs"):
        Protocol("x")


def test_regression_targets():
    hard = torch.tensor([1, 0])
    torch.testing.assert_close(regression_targets(hard, 3), torch.tensor(
        [[-1 / 3, 2 / 3, -1 / 3], [2 / 3, -1 / 3, -1 / 3]]))
    soft = torch.randn(2, 3)
    assert torch.equal(regression_targets(soft, 3), soft)


def test_frepo_protocol_trains_and_beats_chance(digits):
    train, test = digits
    x, y = random_subset(train, 5, 0)
    proto = get_protocol("frepo").with_(steps=40)
    kw = dict(seed=0, dsa_strategy=frepo_strategy("digits"), device=CPU, precision="fp32",
              compile=False)
    net = train_network_steps("frepo-convnet", x, y, 10, proto, **kw)
    acc = accuracy_of(net, test, precision="fp32")
    assert acc > 50.0  # chance: 10 % (measured: 80 %)
    # the KRR predictor on the trained network's features also beats chance
    assert krr_accuracy(net, x, y, test) > 50.0
    # deterministic given the seed; the same through the generic entry point
    from datadistill.evaluate import train_network

    a = train_network_steps("mlp", x, y, 10, proto.with_(steps=5), **kw)
    b = train_network("mlp", x, y, 10, proto.with_(steps=5), **kw)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_frepo_protocol_adam_schedule(monkeypatch, digits):
    train, _ = digits
    x, y = random_subset(train, 2, 0)
    seen: list[float] = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    proto = get_protocol("frepo").with_(steps=10, augment="none")
    train_network_steps("mlp", x, y, 10, proto, seed=0, dsa_strategy="none", device=CPU,
                        precision="fp32", compile=False)
    assert seen == pytest.approx([proto.lr_at_step(s, 10) for s in range(10)])
    assert seen[0] == 0.0 and max(seen) == pytest.approx(3e-4)


def test_evaluate_frepo_default_model_and_ce_guard(digits):
    train, test = digits
    x, y = random_subset(train, 2, 0)
    soft = init_labels(y, 10)  # centred: negative entries
    s = SyntheticSet(x, soft, train.class_names, train.preprocessing,
                     meta={"dataset": "digits", "method": "frepo"})
    r = evaluate(s, get_protocol("frepo").with_(steps=20), num_eval=1, train=train, test=test,
                 baseline=False, precision="fp32", compile=False, progress=False)
    assert list(r.scores) == ["frepo-convnet"]
    assert r.settings["dsa_strategy"] == "color_crop_cutout_scale_rotate"
    with pytest.raises(ConfigError, match="--protocol frepo"):
        evaluate(s, get_protocol("dc").with_(epochs=1), ["mlp"], num_eval=1, train=train,
                 test=test, baseline=False, precision="fp32", compile=False, progress=False)


# ------------------------------------------------------------------------------ the method


def test_frepo_registered_with_presets():
    cls = METHODS.get("frepo")
    assert cls.default_protocol == "frepo" and cls.supports_sample_policy
    paper = make_distiller("frepo", dataset="fashion-mnist", ipc=10, preset="paper").config
    assert paper["steps"] == 500000 and paper["lr"] == 3e-4 and paper["optimizer"] == "lamb"
    assert paper["batch_real"] == 1024 and paper["pool_size"] == 10
    assert paper["online_steps"] == 100 and paper["net"] == "frepo-convnet-bn"
    assert paper["zca"] is False and paper["flip"] is False
    c10 = make_distiller("frepo", dataset="cifar10", ipc=10, preset="paper").config
    assert c10["zca"] is True and c10["flip"] is True
    fast = make_distiller("frepo", dataset="fashion-mnist", ipc=10, preset="fast").config
    assert fast["precision"] == "auto" and fast["steps"] < paper["steps"]
    assert fast["net"] == paper["net"]  # same network: no narrower net in the fast preset


def test_frepo_distill_learns_images_and_labels(digits):
    train, _ = digits
    s = distill("frepo", train, 2, steps=4, seed=0, **FAST)
    assert s.soft_labels and s.labels.shape == (20, 10) and s.images.shape == (20, 1, 8, 8)
    assert s.meta["method"] == "frepo" and s.meta["config"]["batch_real"] == 64
    init = init_labels(torch.arange(10).repeat_interleave(2), 10)
    assert not torch.equal(s.labels, init)  # labels were learned
    assert torch.equal(s.hard_labels, torch.arange(10).repeat_interleave(2))
    again = distill("frepo", train, 2, steps=4, seed=0, **FAST)
    assert torch.equal(s.images, again.images) and torch.equal(s.labels, again.labels)
    fixed = distill("frepo", train, 2, steps=2, seed=0, learn_labels=False, **FAST)
    assert torch.equal(fixed.labels, init)
    adam = distill("frepo", train, 2, steps=2, seed=0, optimizer="adam", **FAST)
    assert torch.isfinite(adam.images).all()
    with pytest.raises(ConfigError, match="lamb"):
        distill("frepo", train, 2, steps=1, optimizer="sgd", **FAST)


def test_frepo_refuses_unwhitened_colour_data(digits):
    train, _ = digits
    with pytest.raises(ConfigError, match="zca"):
        distill("frepo", train, 1, steps=1, zca=True, **FAST)


def test_frepo_checkpoint_resume(digits, tmp_path):
    train, _ = digits
    ck = tmp_path / "ck.pt"
    full = distill("frepo", train, 1, steps=4, seed=1, checkpoint=ck, checkpoint_every=2, **FAST)
    ck.unlink()

    def interrupt(step, _):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the run stops after its step-2 checkpoint
        distill("frepo", train, 1, steps=4, seed=1, checkpoint=ck, checkpoint_every=2,
                callbacks=(interrupt,), **FAST)
    resumed = distill("frepo", train, 1, steps=4, seed=1, checkpoint=ck, resume=True,
                      checkpoint_every=2, **FAST)
    torch.testing.assert_close(resumed.images, full.images)
    torch.testing.assert_close(resumed.labels, full.labels)
    with pytest.raises(ArtifactError, match="another run"):
        distill("frepo", train, 1, steps=4, seed=2, checkpoint=ck, resume=True, **FAST)


# ------------------------------------------------------------------------------ CLI


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_cli_frepo_end_to_end_beats_random(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["distill", "--dataset", "digits", "--method", "frepo", "--ipc", "2",
               "--steps", "30", "--set", "batch_real=128", "--set", "compile=false",
               "--protocol", "frepo", "--num-eval", "1", "--eval-steps", "300",
               "--precision", "fp32", "--no-compile", "--quiet", "--out", str(out)])
    assert rc == 0
    m = _metrics(out)["evaluation"]
    assert m["protocol"]["name"] == "frepo" and m["protocol"]["steps"] == 300
    syn = m["scores"]["frepo-convnet"]["mean"]
    base = m["baseline"]["frepo-convnet"]["mean"]
    assert syn > base, (syn, base)
    s = SyntheticSet.load(out / "synset.pt")
    assert s.soft_labels and s.meta["method"] == "frepo"
    # evaluate picks the method's protocol and network by default; --krr adds the KRR predictor
    # on the same networks
    capsys.readouterr()
    rc = main(["evaluate", str(out), "--num-eval", "1", "--eval-steps", "20", "--no-baseline",
               "--krr", "--precision", "fp32", "--no-compile", "--quiet",
               "--out", str(tmp_path / "krr.json")])
    assert rc == 0
    r = json.loads((tmp_path / "krr.json").read_text())
    assert r["protocol"]["name"] == "frepo" and r["protocol"]["predictor"] == "network"
    assert list(r["scores"]) == list(r["krr_scores"]) == ["frepo-convnet"]
    assert 0.0 <= r["krr_scores"]["frepo-convnet"]["mean"] <= 100.0
    assert r["krr_baseline"] is None
    assert "+ KRR" in capsys.readouterr().out


def test_cli_eval_flag_errors(tmp_path, capsys):
    base = ["distill", "--dataset", "digits", "--method", "frepo", "--ipc", "1", "--steps", "1",
            "--quiet", "--out", str(tmp_path / "r")]
    assert main([*base, "--protocol", "dsa", "--eval-steps", "5"]) == 2
    assert "--eval-steps applies to step-based" in capsys.readouterr().err
    assert main([*base, "--protocol", "frepo", "--epochs", "5"]) == 2
    assert "optimizer steps" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before any work


def test_frepo_steps_table_matches_published_ipcs():
    p = get_protocol("frepo")
    for ipc, steps in ((1, 1000), (10, 2000), (50, 5000)):
        assert p.train_steps(10 * ipc) == steps
    assert math.isclose(p.lr, 3e-4)
