"""Tests of datadistill.methods: IPC checks, coresets (random, herding, k-center), DM with
checkpoints and resume, and preset resolution."""

from __future__ import annotations

import pytest
import torch

from datadistill.config import parse_override, preset_names, resolve_config
from datadistill.errors import ArtifactError, ConfigError, UnknownNameError
from datadistill.methods import METHODS, Checkpointer, check_ipc, distill, make_distiller
from datadistill.methods.coreset import herding, k_center, random_subset
from datadistill.methods.dm import dm_loss, init_synthetic
from datadistill.synthetic import SyntheticSet
from datadistill.utils import make_generator

# tiny DM runs: few real images per class, fp32, eager
DM = dict(progress=False, compile=False, precision="fp32", batch_real=16)


def find_rows(pool: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Index in ``pool`` (N, ...) of each image of ``x`` (M, ...), -1 if absent."""
    p, q = pool.flatten(1), x.flatten(1)
    eq = (q[:, None, :] == p[None, :, :]).all(2)
    return torch.where(eq.any(1), eq.float().argmax(1), torch.full((x.shape[0],), -1))


def assert_real_class_members(synset: SyntheticSet, train, ipc: int) -> None:
    idx = find_rows(train.images, synset.images)
    assert (idx >= 0).all(), "selected images are not real training images"
    assert idx.unique().numel() == idx.numel(), "duplicates"
    assert torch.equal(train.labels[idx], synset.labels)
    assert torch.equal(synset.labels, torch.arange(10).repeat_interleave(ipc))


# ------------------------------------------------------------------------------ check_ipc


def test_check_ipc(digits):
    train, _ = digits
    smallest = int(train.class_counts().min())
    assert smallest == 122
    check_ipc(train, 1)
    check_ipc(train, smallest)
    for bad in (0, -1, smallest + 1, 1000):
        with pytest.raises(ConfigError):
            check_ipc(train, bad)
    with pytest.raises(ConfigError, match=f"--ipc <= {smallest}"):
        check_ipc(train, smallest + 1)
    for bad in (True, 2.0, "3"):
        with pytest.raises(ConfigError, match="positive integer"):
            check_ipc(train, bad)


@pytest.mark.parametrize("method", ["random", "dm", "herding", "k-center"])
def test_distill_rejects_bad_ipc(digits, method):
    train, _ = digits
    for bad in (0, -2, 123):
        with pytest.raises(ConfigError):
            distill(method, train, bad, progress=False)


# ------------------------------------------------------------------------------ coresets


def test_random_subset_deterministic_and_balanced(digits):
    train, _ = digits
    x1, y1 = random_subset(train, 4, seed=3)
    x2, y2 = random_subset(train, 4, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (40, 1, 8, 8)
    assert torch.equal(y1, torch.arange(10).repeat_interleave(4))
    idx = find_rows(train.images, x1)
    assert (idx >= 0).all() and idx.unique().numel() == 40
    assert torch.equal(train.labels[idx], y1)
    x3, _ = random_subset(train, 4, seed=4)
    assert not torch.equal(x1, x3)
    with pytest.raises(ConfigError):
        random_subset(train, 0, seed=0)


def test_random_method(digits):
    train, _ = digits
    s = distill("random", train, 3, seed=2, progress=False)
    assert_real_class_members(s, train, 3)
    assert s.meta["method"] == "random" and s.meta["dataset"] == "digits" and s.meta["seed"] == 2
    assert s.meta["dataset_checksum"] == train.checksum()
    assert torch.equal(s.images, random_subset(train, 3, 2)[0])


def test_herding_hand_made():
    # 1-D, mean 1.9: step t picks argmin |mu - (sum + f_i) / t|
    f = torch.tensor([[0.0], [9.0], [4.0], [-6.0], [2.5]])
    idx = herding(f, 5)
    assert idx.dtype == torch.int64
    assert idx.tolist() == [4, 0, 2, 3, 1]
    assert herding(f, 2).tolist() == [4, 0]
    # first pick = the point nearest the mean, in any dimension
    g = torch.randn(50, 7, generator=make_generator(0))
    assert int(herding(g, 1)[0]) == int(((g - g.mean(0)) ** 2).sum(1).argmin())


def test_herding_balances_clusters():
    # two clusters, 80 points at -1 and 20 at +4 (mean 0): herding 5 points picks 4:1
    g = make_generator(0)
    f = torch.cat([torch.randn(80, 2, generator=g) * 0.01 - 1, torch.randn(20, 2, generator=g) * 0.01 + 4])
    idx = herding(f, 5)
    assert int((idx < 80).sum()) == 4


def test_k_center_hand_made_line():
    f = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [8.0], [10.0]])
    idx = k_center(f, 3)
    assert int(idx[0]) == 5  # nearest the mean 4.6
    assert sorted(idx[1:].tolist()) == [0, 9]  # then the extremes


def test_k_center_first_is_nearest_mean_then_farthest():
    f = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [5.0, 5.0], [0.1, 0.0]])
    idx = k_center(f, 3)
    mean = f.mean(0)
    assert int(idx[0]) == int(((f - mean) ** 2).sum(1).argmin())
    assert int(idx[1]) == 3  # farthest from the first
    assert idx.unique().numel() == 3


@pytest.mark.parametrize("method", ["herding", "k-center"])
def test_coreset_methods_on_digits(digits, method):
    train, _ = digits
    s = distill(method, train, 2, seed=0, progress=False, embed_steps=5, precision="fp32")
    assert_real_class_members(s, train, 2)
    assert s.meta["method"] == method and s.meta["config"]["embed_steps"] == 5
    again = distill(method, train, 2, seed=0, progress=False, embed_steps=5, precision="fp32")
    assert torch.equal(s.images, again.images)


# ------------------------------------------------------------------------------ DM


def test_dm_loss_hand_made():
    real = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])  # class means (2,0), (0,3)
    syn = torch.tensor([[2.0, 1.0], [0.0, 0.0]])
    assert float(dm_loss(real, syn, 2)) == pytest.approx(1.0 + 9.0)
    assert float(dm_loss(real, torch.tensor([[2.0, 0.0], [0.0, 3.0]]), 2)) == 0.0


@pytest.fixture(scope="module")
def dm_run(digits):
    train, _ = digits
    return distill("dm", train, 2, steps=5, seed=0, **DM)


def test_dm_shapes_labels_meta(dm_run, digits):
    train, _ = digits
    s = dm_run
    assert s.images.shape == (20, 1, 8, 8) and s.images.dtype == torch.float32
    assert torch.equal(s.labels, torch.arange(10).repeat_interleave(2))
    assert torch.isfinite(s.images).all()
    assert s.meta["method"] == "dm" and s.meta["ipc"] == 2 and s.meta["seed"] == 0
    assert s.meta["machine"].startswith(("cpu: ", "cuda: "))  # where its distill_seconds were measured
    assert s.meta["config"]["steps"] == 5 and s.meta["config"]["batch_real"] == 16
    assert s.preprocessing == train.preprocessing and s.class_names == train.class_names


def test_dm_images_move_from_init_and_loss_drops(dm_run, digits):
    train, _ = digits
    init, _ = init_synthetic(train, 2, "real", make_generator(0))
    diff = (dm_run.images - init).abs()
    assert float(diff.max()) > 1e-3  # every step changed the images
    assert (diff.flatten(1).amax(1) > 0).all()  # every synthetic image was updated
    # the matched statistic: mean embeddings of random ConvNets get closer to the real ones
    from datadistill.evaluate.train import build_network

    x_real, _ = train.sample_balanced(100, make_generator(1))
    before = after = 0.0
    with torch.no_grad():
        for seed in range(4):
            net = build_network("convnet", 1, 10, (8, 8), 1000 + seed, torch.device("cpu"))
            er = net.embed(x_real)
            before += float(dm_loss(er, net.embed(init), 10))
            after += float(dm_loss(er, net.embed(dm_run.images), 10))
    assert torch.isfinite(torch.tensor([before, after])).all()
    assert after < before


def test_dm_same_seed_same_synset_and_different_seed_differs(dm_run, digits):
    train, _ = digits
    again = distill("dm", train, 2, steps=5, seed=0, **DM)
    assert torch.equal(again.images, dm_run.images)
    other = distill("dm", train, 2, steps=5, seed=1, **DM)
    assert not torch.allclose(other.images, dm_run.images)


def test_dm_noise_init_and_callbacks(digits):
    train, _ = digits
    steps_seen = []

    def cb(step, synset_fn):
        steps_seen.append(step)
        if step == 2:
            snap = synset_fn()
            assert isinstance(snap, SyntheticSet) and snap.images.shape == (10, 1, 8, 8)

    s = distill("dm", train, 1, steps=3, seed=0, init="noise", callbacks=(cb,), **DM)
    assert steps_seen == [1, 2, 3]
    assert torch.isfinite(s.images).all()
    with pytest.raises(ConfigError, match="init"):
        distill("dm", train, 1, steps=1, init="zeros", **DM)


def test_dm_diverging_run_raises(digits):
    train, _ = digits
    with pytest.raises(ArtifactError, match="lower the image learning rate"):
        distill("dm", train, 1, steps=4, lr_img=1e30, **DM)


def test_dm_lr_final_decays_the_image_lr(digits):
    train, _ = digits
    # the first step runs at lr_img whatever the decay; later steps at the cosine's lower rate
    one = distill("dm", train, 1, steps=1, seed=0, **DM)
    assert torch.equal(distill("dm", train, 1, steps=1, seed=0, lr_final=0.0, **DM).images,
                       one.images)
    const = distill("dm", train, 1, steps=3, seed=0, **DM)
    decayed = distill("dm", train, 1, steps=3, seed=0, lr_final=0.0, **DM)
    assert not torch.allclose(decayed.images, const.images)
    assert decayed.meta["config"]["lr_final"] == 0.0
    with pytest.raises(ConfigError, match="lr_final"):
        distill("dm", train, 1, steps=1, lr_final=2.0, **DM)


class Interrupt(Exception):
    pass


def test_dm_checkpoint_resume_equals_uninterrupted(digits, tmp_path):
    train, _ = digits
    cfg = dict(steps=6, seed=3, checkpoint_every=3, **DM)
    a = distill("dm", train, 2, **cfg)

    ckpt = tmp_path / "checkpoint.pt"

    def stop_at_4(step, synset_fn):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill("dm", train, 2, checkpoint=ckpt, callbacks=(stop_at_4,), **cfg)
    assert ckpt.is_file()
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 3

    resumed_steps = []
    b = distill("dm", train, 2, checkpoint=ckpt, resume=True,
                callbacks=(lambda s, _: resumed_steps.append(s),), **cfg)
    assert resumed_steps == [4, 5, 6]  # continued, not restarted
    torch.testing.assert_close(b.images, a.images, rtol=0, atol=1e-6)
    assert torch.equal(b.labels, a.labels)
    assert torch.load(ckpt, weights_only=True)["step"] == 6  # final state saved


def test_dm_resume_without_checkpoint_starts_fresh(digits, tmp_path):
    train, _ = digits
    a = distill("dm", train, 1, steps=2, **DM)
    b = distill("dm", train, 1, steps=2, checkpoint=tmp_path / "none.pt", resume=True, **DM)
    assert torch.equal(a.images, b.images)


def test_dm_checkpoint_of_another_config(digits, tmp_path):
    train, _ = digits
    ckpt = tmp_path / "checkpoint.pt"
    distill("dm", train, 1, steps=2, checkpoint=ckpt, checkpoint_every=1, **DM)
    assert ckpt.is_file()
    with pytest.raises(ArtifactError, match="another run"):
        distill("dm", train, 1, steps=2, checkpoint=ckpt, resume=True, checkpoint_every=1,
                **{**DM, "batch_real": 8})
    with pytest.raises(ArtifactError, match="another run"):
        distill("dm", train, 1, steps=2, checkpoint=ckpt, resume=True, checkpoint_every=1, seed=9,
                **DM)
    with pytest.raises(ArtifactError, match="another run"):
        distill("dm", train, 2, steps=2, checkpoint=ckpt, resume=True, checkpoint_every=1, **DM)
    ckpt.write_bytes(b"garbage" * 10)
    with pytest.raises(ArtifactError, match="unreadable"):
        distill("dm", train, 1, steps=2, checkpoint=ckpt, resume=True, checkpoint_every=1, **DM)


def test_checkpointer_due_and_round_trip(tmp_path):
    c = Checkpointer(tmp_path / "c.pt", every=3)
    assert [s for s in range(1, 8) if c.due(s, 7)] == [3, 6, 7]
    assert not Checkpointer(None, 1).due(1, 1)
    fp = {"method": "dm", "seed": 0}
    assert c.load(fp) is None  # nothing saved yet
    c.save({"fingerprint": fp, "step": 3, "images": torch.ones(2)})
    state = c.load(fp)
    assert state["step"] == 3 and torch.equal(state["images"], torch.ones(2))
    with pytest.raises(ArtifactError, match="another run"):
        c.load({"method": "dm", "seed": 1})


def test_checkpointer_non_dict_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ArtifactError):
        Checkpointer(path, 1).load({"method": "dm"})


# ------------------------------------------------------------------------------ configuration


def test_resolve_config_unknown_preset():
    with pytest.raises(UnknownNameError, match="fast, paper"):
        resolve_config("dm", "papr", dataset="cifar10", ipc=10)
    with pytest.raises(UnknownNameError):
        make_distiller("dm", dataset="digits", ipc=1, preset="slow")


def test_resolve_config_unknown_override(digits):
    with pytest.raises(ConfigError, match="lr_imgg"):
        resolve_config("dm", "fast", dataset="digits", ipc=1, overrides={"lr_imgg": 2})
    with pytest.raises(ConfigError, match="lr_imgg"):
        distill("dm", digits[0], 1, lr_imgg=2, progress=False)


def test_resolve_config_by_ipc_rule():
    assert resolve_config("dm", "paper", dataset="cifar10", ipc=100)["lr_img"] == 10.0
    assert resolve_config("dm", "paper", dataset="cifar10", ipc=50)["lr_img"] == 1.0
    assert resolve_config("dm", "paper", dataset="fashion-mnist", ipc=100)["lr_img"] == 1.0
    # fast: the image lr 10 measured on a validation split at Fashion-MNIST IPC 50 and 100
    fast_lr = {ipc: resolve_config("dm", "fast", dataset="fashion-mnist", ipc=ipc)["lr_img"]
               for ipc in (20, 50, 100, 200)}
    assert fast_lr == {20: 1.0, 50: 10.0, 100: 10.0, 200: 1.0}
    cfg = resolve_config("dm", "paper", dataset="cifar10", ipc=100, overrides={"lr_img": 3})
    assert cfg["lr_img"] == 3  # user overrides win
    paper = resolve_config("dm", "paper", dataset="digits", ipc=1)
    assert paper["steps"] == 20000 and paper["batch_real"] == 256 and paper["momentum"] == 0.5
    assert "by_ipc" not in paper and "by_dataset" not in paper
    # the gradient-matching fast presets give IPC 1 as many image updates as IPC 10 (max rule)
    for method in ("dc", "dsa"):
        assert resolve_config(method, "fast", dataset="digits", ipc=1)["steps"] == 150
        assert resolve_config(method, "fast", dataset="digits", ipc=2)["steps"] == 15
        assert resolve_config(method, "paper", dataset="digits", ipc=1)["steps"] == 1000
    # FRePo's fast preset: 3000 meta-steps only where they were timed (Fashion-MNIST IPC 10)
    assert resolve_config("frepo", "fast", dataset="fashion-mnist", ipc=10)["steps"] == 3000
    assert resolve_config("frepo", "fast", dataset="fashion-mnist", ipc=1)["steps"] == 1000
    assert resolve_config("frepo", "fast", dataset="digits", ipc=10)["steps"] == 1000


def test_presets_listed():
    assert preset_names("dm") == ["fast", "paper"]
    assert preset_names("herding") == ["fast", "paper"]
    assert preset_names("no-such-method") == []


def test_parse_override():
    assert parse_override("lr_img=2") == ("lr_img", 2)
    assert parse_override("compile=false") == ("compile", False)
    assert parse_override(" precision = fp32") == ("precision", "fp32")
    # YAML 1.1 reads 1e-4 (no dot) as a string; a learning rate must stay a number
    assert parse_override("lr_img=1e-4") == ("lr_img", 1e-4)
    assert parse_override("lr=-2.5E+3") == ("lr", -2500.0)
    assert parse_override("init=e5") == ("init", "e5")
    with pytest.raises(ConfigError):
        parse_override("lr_img")


def test_unknown_method(digits):
    with pytest.raises(UnknownNameError, match="dm") as e:
        make_distiller("dmm", dataset="digits", ipc=1)
    for name in ("herding", "k-center", "random"):
        assert name in str(e.value)
    with pytest.raises(UnknownNameError, match="dm"):
        distill("gradient-magic", digits[0], 1)
    assert {"dm", "random", "herding", "k-center"} <= set(METHODS.names())


def test_real_embedder_chunks_give_the_same_embeddings():
    from datadistill.evaluate.train import build_network
    from datadistill.methods.dm import real_embedder

    cpu = torch.device("cpu")
    x = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for name in ("convnet", "convnet-bn"):
        net = build_network(name, 1, 10, (28, 28), 0, cpu)
        whole = real_embedder(cpu, "fp32", False, chunk=0)(net, x)
        parts = real_embedder(cpu, "fp32", False, chunk=3)(net, x)
        assert whole.shape == (10, net.embed_dim) and whole.dtype == torch.float32
        torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ herding init


def _dm_init_loss(train, x, y, seeds) -> float:
    """DM loss of (x, y) against the whole real set, averaged over fresh random ConvNets."""
    from datadistill.evaluate.train import build_network

    total = 0.0
    for s in seeds:
        net = build_network("convnet", train.channels, 10, train.im_size, s, torch.device("cpu"))
        with torch.no_grad():
            er, es = net.embed(train.images), net.embed(x)
        mr = torch.stack([er[train.labels == c].mean(0) for c in range(10)])
        ms = torch.stack([es[y == c].mean(0) for c in range(10)])
        total += float(((mr - ms) ** 2).sum())
    return total / len(seeds)


def test_dm_herding_init_picks_real_images_closer_to_the_class_means(digits):
    train, _ = digits
    kw = dict(net="convnet", candidates=1000, nets=2)
    x, y = init_synthetic(train, 3, "herding", make_generator(0), **kw)
    x2, _ = init_synthetic(train, 3, "herding", make_generator(0), **kw)
    assert torch.equal(x, x2)
    assert torch.equal(y, torch.arange(10).repeat_interleave(3))
    idx = find_rows(train.images, x)
    assert (idx >= 0).all() and idx.unique().numel() == idx.numel()
    assert torch.equal(train.labels[idx], y)
    # networks the selection never saw: herding's subset matches the class means better than
    # random real subsets (what DM's loss measures), on average over several draws
    held_out = [101, 102, 103]
    herd = _dm_init_loss(train, x, y, held_out)
    rand = [_dm_init_loss(train, *init_synthetic(train, 3, "real", make_generator(s)), held_out)
            for s in range(3)]
    assert herd < min(rand)
    with pytest.raises(ConfigError, match="init_candidates"):
        init_synthetic(train, 3, "herding", make_generator(0), net="convnet", candidates=2, nets=1)


def test_dm_runs_from_herding_init(digits):
    train, _ = digits
    s = distill("dm", train, 2, steps=2, seed=0, init="herding", init_candidates=40, init_nets=1,
                **DM)
    assert torch.isfinite(s.images).all()
    idx = find_rows(train.images, s.initial)  # the initial images: real ones of their class
    assert (idx >= 0).all() and torch.equal(train.labels[idx], s.labels)
