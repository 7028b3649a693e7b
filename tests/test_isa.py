"""Tests of crucial-sample selection + infinite semantic augmentation (strategies/isa.py), its
use around FRePo and DM, and the hard-predicts-easy diagnostic (analysis/isa.py)."""

from __future__ import annotations

import pytest
import torch
import yaml

from datadistill.cli import main
from datadistill.errors import ArtifactError, ConfigError
from datadistill.methods import make_distiller
from datadistill.methods.dm import dm_loss
from datadistill.methods.frepo import mse_loss
from datadistill.strategies import STRATEGIES
from datadistill.strategies.isa import (
    CrucialSamplePolicy,
    cosine_partners,
    isa_closed_form,
    keep_indices,
)
from datadistill.utils import make_generator

DM_TINY = {"batch_real": 16, "precision": "fp32", "compile": False}
FREPO_TINY = {"batch_real": 64, "precision": "fp32", "compile": False}


def quadrature(f, eps: float, n: int = 2001):
    """(1/eps) * integral_0^eps f(alpha) d alpha by Simpson's rule (f(0) when eps = 0)."""
    if eps == 0:
        return f(0.0)
    h = eps / (n - 1)
    total = f(0.0) + f(eps)
    for i in range(1, n - 1):
        total = total + (4 if i % 2 else 2) * f(i * h)
    return total * h / 3 / eps


# ------------------------------------------------------------------------------ closed form


@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0, 2.5])
def test_closed_form_matches_quadrature(eps):
    g = make_generator(0)
    a = torch.randn(50, 4, generator=g, dtype=torch.float64)
    b = torch.randn(50, 4, generator=g, dtype=torch.float64)
    numeric = quadrature(lambda t: (a + t * b) ** 2, eps)
    torch.testing.assert_close(isa_closed_form(a, b, eps), numeric, rtol=1e-9, atol=1e-10)


def test_regression_loss_is_the_average_over_virtual_samples():
    # explicit features, labels and a linear predictor W: the hook's loss equals the quadrature
    # over alpha of the loss of the virtual samples z + alpha (z' - z), y + alpha (y' - y)
    g = make_generator(1)
    n, d, k, eps = 20, 6, 3, 0.8
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, k, generator=g, dtype=torch.float64)
    w = torch.randn(d, k, generator=g, dtype=torch.float64)
    policy = CrucialSamplePolicy(discard=0.25, eps=eps)
    got = policy.regression_loss(z @ w - y, z)
    per = 0.5 * (z @ w - y).pow(2).sum(1)
    keep = per.argsort()[5:]  # 25 % of 20 = 5 easiest dropped
    zk, yk = z[keep], y[keep]
    sim = torch.nn.functional.normalize(zk, dim=1) @ torch.nn.functional.normalize(zk, dim=1).T
    sim.fill_diagonal_(-2.0)
    p = sim.argmax(1)

    def loss_at(alpha):
        zv, yv = zk + alpha * (zk[p] - zk), yk + alpha * (yk[p] - yk)
        return 0.5 * (zv @ w - yv).pow(2).sum(1).mean()

    torch.testing.assert_close(got, quadrature(loss_at, eps), rtol=1e-9, atol=1e-10)


def test_plain_settings_reproduce_the_base_losses():
    g = make_generator(2)
    r = torch.randn(30, 10, generator=g)
    f = torch.randn(30, 16, generator=g)
    torch.testing.assert_close(CrucialSamplePolicy(0.0, eps=0.0).regression_loss(r, f), mse_loss(r))
    er = torch.randn(10 * 8, 32, generator=g)
    es = torch.randn(10 * 3, 32, generator=g)
    torch.testing.assert_close(CrucialSamplePolicy(0.0, eps=0.0).matching_loss(er, es, 10),
                               dm_loss(er, es, 10))


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_matching_loss_is_the_average_over_interpolated_features(eps):
    g = make_generator(3)
    kcls, n, ipc, d = 3, 10, 2, 8
    er = torch.randn(kcls * n, d, generator=g, dtype=torch.float64)
    es = torch.randn(kcls * ipc, d, generator=g, dtype=torch.float64)
    got = CrucialSamplePolicy(0.2, eps=eps).matching_loss(er, es, kcls)
    real, ms = er.view(kcls, n, d), es.view(kcls, ipc, d).mean(1)
    hard = (real - ms[:, None]).pow(2).sum(2)
    total = 0.0
    for c in range(kcls):
        kept = real[c, hard[c].argsort()[2:]]  # 20 % of 10 easiest dropped, per class
        nk = torch.nn.functional.normalize(kept, dim=1)
        sim = nk @ nk.T
        sim.fill_diagonal_(-2.0)
        partner = kept[sim.argmax(1)]
        total = total + quadrature(
            lambda t, kept=kept, partner=partner, c=c:
            ((kept + t * (partner - kept)).mean(0) - ms[c]).pow(2).sum(), eps)
    torch.testing.assert_close(got, total, rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------ selection


def test_keep_indices_keeps_exactly_the_hardest_fraction():
    losses = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])
    keep = keep_indices(losses, 0.2)  # drop the 2 easiest: indices 9 (0.0) and 1 (0.1)
    assert keep.tolist() == [0, 2, 3, 4, 5, 6, 7, 8]
    assert set(keep.tolist()) == set(losses.argsort(descending=True)[:8].tolist())
    hardest = keep_indices(losses, 0.2, drop="hardest")  # drop 2 (0.9) and 6 (0.8)
    assert hardest.tolist() == [0, 1, 3, 4, 5, 7, 8, 9]
    assert keep_indices(losses, 0.0).tolist() == list(range(10))
    assert keep_indices(losses, 0.25).numel() == 8  # floor(2.5) = 2 dropped
    big = torch.rand(1024, generator=make_generator(0))
    kept = keep_indices(big, 0.2)
    assert kept.numel() == 1024 - 204
    assert big[kept].min() >= big.sort().values[204]
    # per row (DM: per class)
    rows = torch.tensor([[3.0, 1.0, 2.0, 0.0, 4.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    assert keep_indices(rows, 0.4).tolist() == [[0, 2, 4], [2, 3, 4]]
    assert keep_indices(rows, 0.4, drop="hardest").tolist() == [[1, 2, 3], [0, 1, 2]]


def test_cosine_partners_exclude_self():
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.0]])
    assert cosine_partners(f).tolist() == [1, 0, 3, 2, 2]
    assert cosine_partners(torch.stack([f, -f])).shape == (2, 5)
    # identical rows: the partner is the other copy, never itself
    same = torch.ones(3, 4)
    p = cosine_partners(same)
    assert all(p[i] != i for i in range(3))


def test_policy_validation():
    for bad in ({"discard": 1.0}, {"discard": -0.1}, {"drop": "middle"}, {"eps": -1.0},
                {"eps": float("nan")}):
        with pytest.raises(ConfigError):
            CrucialSamplePolicy(**bad)


def test_strategy_options():
    cls = STRATEGIES.get("isa")
    s = cls()
    assert s.options == {"discard_easy": 0.2, "drop": "easiest", "isa_eps": 1.0}
    h = cls({"discard_easy": -0.3})
    assert h.policy.discard == 0.3 and h.policy.drop == "hardest"
    assert cls({"drop": "hardest"}).policy.drop == "hardest"
    assert cls({"isa_eps": 0}).policy.eps == 0.0
    with pytest.raises(ConfigError, match="unknown option"):
        cls({"segments": 3})
    with pytest.raises(ConfigError):
        cls({"discard_easy": "lots"})
    with pytest.raises(ConfigError):
        cls({"discard_easy": 1.5})


# ------------------------------------------------------------------------------ wrapping


def test_isa_wraps_dm(digits):
    train, _ = digits
    d = make_distiller("dm", dataset="digits", ipc=2, overrides={"steps": 3, **DM_TINY})
    isa = STRATEGIES.get("isa")({"discard_easy": 0.25, "isa_eps": 1.0})
    s = isa.run(d, train, 2, seed=0, progress=False)
    assert s.meta["strategy"] == {"name": "isa", "discard_easy": 0.25, "drop": "easiest",
                                  "isa_eps": 1.0}
    assert s.meta["config"]["strategy"]["name"] == "isa"
    assert d.sample_policy is None and "strategy" not in d.config  # restored after the run
    plain = d.distill(train, 2, seed=0, progress=False)
    assert s.images.shape == plain.images.shape and torch.isfinite(s.images).all()
    assert not torch.equal(s.images, plain.images)
    # discard 0 and eps 0: exactly DM
    same = STRATEGIES.get("isa")({"discard_easy": 0.0, "isa_eps": 0.0}).run(
        d, train, 2, seed=0, progress=False)
    torch.testing.assert_close(same.images, plain.images)


def test_isa_wraps_frepo_and_plain_settings_are_frepo(digits):
    train, _ = digits
    d = make_distiller("frepo", dataset="digits", ipc=1, overrides={"steps": 2, **FREPO_TINY})
    plain = d.distill(train, 1, seed=0, progress=False)
    same = STRATEGIES.get("isa")({"discard_easy": 0.0, "isa_eps": 0.0}).run(
        d, train, 1, seed=0, progress=False)
    torch.testing.assert_close(same.images, plain.images)
    torch.testing.assert_close(same.labels, plain.labels)
    s = STRATEGIES.get("isa")().run(d, train, 1, seed=0, progress=False)
    assert not torch.equal(s.images, plain.images) and s.soft_labels


def test_isa_refuses_methods_without_a_hook(digits):
    train, _ = digits
    d = make_distiller("random", dataset="digits", ipc=1)
    with pytest.raises(ConfigError, match="dm, frepo"):
        STRATEGIES.get("isa")().run(d, train, 1, progress=False)


def test_isa_checkpoint_never_mixes_with_plain_runs(digits, tmp_path):
    train, _ = digits
    ck = tmp_path / "ck.pt"
    d = make_distiller("dm", dataset="digits", ipc=1,
                       overrides={"steps": 2, "checkpoint_every": 1, **DM_TINY})
    STRATEGIES.get("isa")().run(d, train, 1, checkpoint=ck, progress=False)
    with pytest.raises(ArtifactError, match="another run"):
        d.distill(train, 1, checkpoint=ck, resume=True, progress=False)


def test_cli_isa_frepo(tmp_path):
    out = tmp_path / "run"
    rc = main(["distill", "--dataset", "digits", "--method", "frepo", "--ipc", "1",
               "--steps", "2", "--set", "batch_real=64", "--set", "compile=false",
               "--set", "precision=fp32", "--strategy", "isa", "--discard-easy", "0.2",
               "--isa-eps", "1.0", "--no-eval", "--quiet", "--out", str(out)])
    assert rc == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["strategy"] == {"name": "isa", "options": {"discard_easy": 0.2,
                                                          "drop": "easiest", "isa_eps": 1.0}}
    from datadistill.synthetic import SyntheticSet

    assert SyntheticSet.load(out / "synset.pt").meta["strategy"]["name"] == "isa"
    # the Figure-1 ablation: drop the hardest
    rc = main(["distill", "--dataset", "digits", "--method", "dm", "--ipc", "1", "--steps", "1",
               "--set", "batch_real=16", "--set", "compile=false", "--strategy", "isa",
               "--strategy-set", "drop=hardest", "--no-eval", "--quiet",
               "--out", str(tmp_path / "dm")])
    assert rc == 0


# ------------------------------------------------------------------------------ diagnostics


def test_hard_easy_losses_on_features():
    from datadistill.analysis.isa import hard_easy_losses

    g = make_generator(4)
    f_real = torch.randn(100, 20, generator=g)
    y_real = torch.nn.functional.one_hot(torch.arange(100) % 5, 5).float() - 0.2
    f_syn = torch.randn(10, 20, generator=g)
    y_syn = torch.nn.functional.one_hot(torch.arange(10) % 5, 5).float() - 0.2
    r = hard_easy_losses(f_real, y_real, f_syn, y_syn, frac=0.2)
    assert r.batch == 100 and r.frac == 0.2
    assert r.hard_to_easy >= 0 and r.easy_to_hard >= 0 and r.threshold >= 0
    assert set(r.to_dict()) == {"hard_to_easy", "easy_to_hard", "threshold", "frac", "batch"}
    with pytest.raises(ConfigError):
        hard_easy_losses(f_real, y_real, f_syn, y_syn, frac=0.0)


def test_hard_predicts_easy_on_digits(digits):
    from datadistill.analysis.isa import hard_predicts_easy
    from datadistill.methods.coreset import random_subset
    from datadistill.synthetic import SyntheticSet

    train, _ = digits
    x, y = random_subset(train, 2, 0)
    s = SyntheticSet(x, y, train.class_names, train.preprocessing, meta={"dataset": "digits"})
    r = hard_predicts_easy(s, train, net="frepo-convnet", batch=200, seed=0)
    assert r.batch == 200 and r.hard_to_easy > 0 and r.easy_to_hard > 0
    # the hard samples carry the easy ones better than the reverse (the paper's observation)
    assert r.hard_to_easy < r.easy_to_hard


def test_hard_easy_summary_draws(digits):
    """Each draw is its own (batch, network) seed; the summary is their mean and std."""
    from datadistill.analysis import hard_easy_summary, hard_predicts_easy
    from datadistill.methods.coreset import random_subset
    from datadistill.synthetic import SyntheticSet

    train, _ = digits
    x, y = random_subset(train, 2, 0)
    s = SyntheticSet(x, y, train.class_names, train.preprocessing, meta={"dataset": "digits"})
    r = hard_easy_summary(s, train, draws=2, net="frepo-convnet", batch=100, seed=3)
    one = hard_predicts_easy(s, train, net="frepo-convnet", batch=100, seed=4)
    assert r["draws"][1] == pytest.approx(one.to_dict())
    assert r["hard_to_easy"] == pytest.approx((r["draws"][0]["hard_to_easy"] + one.hard_to_easy) / 2)
    assert r["easy_to_hard_std"] > 0 and r["batch"] == 100 and r["net"] == "frepo-convnet"
    with pytest.raises(ConfigError, match="draws"):
        hard_easy_summary(s, train, draws=0)
