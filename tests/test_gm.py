"""Tests of gradient matching (DC, DSA) and IDC: distances, vmapped per-class gradients, the
multi-formation parameterisation and its pixel convention, the IDC protocol, short runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from datadistill.augment import ComposedDSA
from datadistill.errors import ConfigError
from datadistill.evaluate import evaluate, get_protocol
from datadistill.evaluate.train import build_network
from datadistill.methods import SegmentContext, distill
from datadistill.methods.gm import (
    get_loops,
    gradient_match_loss,
    layer_distance,
    match_distance,
    matched_parameter_names,
    per_class_gradients,
    train_on_batches,
)
from datadistill.methods.idc import init_pixels, mixed_tile_init, model_input, scaled_lr_img
from datadistill.synthetic import SyntheticSet, multi_formation_decode
from datadistill.utils import make_generator

CPU = torch.device("cpu")
SMALL = dict(progress=False, net="convnet-w32")


# ------------------------------------------------------------------------------ parameterisation


def test_multi_formation_decode_shapes_and_patches():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    out = multi_formation_decode(x, 2)
    assert out.shape == (8, 1, 4, 4)
    # patch (0, 1) of image 0 is rows 0-1, cols 2-3; a constant patch upsamples to a constant
    const = torch.zeros(1, 1, 4, 4)
    const[..., 2:, :2] = 5.0  # patch (1, 0)
    dec = multi_formation_decode(const, 2)
    assert torch.allclose(dec[2], torch.full((1, 4, 4), 5.0)) and dec[[0, 1, 3]].abs().max() == 0
    # bilinear upsampling of patch (0, 1) of image 1 keeps its corner values
    assert torch.equal(out[5][0, 0, 0], x[1, 0, 0, 2]) and torch.equal(out[5][0, -1, -1], x[1, 0, 1, 3])
    with pytest.raises(Exception, match="divisible"):
        multi_formation_decode(torch.zeros(1, 1, 5, 5), 2)


def test_mixed_tile_init_places_downsized_images():
    k, ipc, f = 2, 3, 2
    pix = torch.rand(k, ipc * f * f, 1, 8, 8, generator=make_generator(0))
    out = mixed_tile_init(pix, f)
    assert out.shape == (k * ipc, 1, 8, 8)
    for c in range(k):
        for i in range(ipc):
            for t in range(f * f):
                r, q = divmod(t, f)
                small = F.interpolate(pix[c, t * ipc + i][None], size=(4, 4))[0]
                assert torch.equal(out[c * ipc + i, :, 4 * r: 4 * r + 4, 4 * q: 4 * q + 4], small)
    with pytest.raises(ConfigError):
        mixed_tile_init(torch.rand(1, 4, 1, 7, 7), 2)


def test_init_pixels_in_unit_range(digits):
    train, _ = digits
    for init in ("mix", "random", "noise"):
        x, y = init_pixels(train, 2, 2, init, make_generator(0))
        assert x.shape == (20, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
        assert torch.equal(y, torch.arange(10).repeat_interleave(2))
    a, _ = init_pixels(train, 2, 2, "mix", make_generator(1))
    b, _ = init_pixels(train, 2, 2, "mix", make_generator(1))
    assert torch.equal(a, b)


def test_pixel_convention_decodes_to_what_the_network_sees(digits):
    train, _ = digits
    prep = train.preprocessing
    pix, y = init_pixels(train, 2, 2, "mix", make_generator(0))
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (prep.mean, prep.std))
    s = SyntheticSet((pix - mean) / std, y, train.class_names, prep,
                     parameterization="multi-formation", factor=2)
    seen = model_input(pix, mean, std, 2)
    assert torch.equal(s.decode()[0], seen)  # bit for bit
    assert len(s) == 80 and s.pixels().min() > -1e-5 and s.pixels().max() < 1 + 1e-5


def test_scaled_lr_img():
    assert scaled_lr_img(1e-4, 10, 28, 28) == pytest.approx(1e-4)
    assert scaled_lr_img(1e-4, 10, 28, 32) == pytest.approx(1e-4 * 0.765625)
    assert scaled_lr_img(5e-3, 50, 32, 32) == pytest.approx(2.5e-2)


# ------------------------------------------------------------------------------ distances


def test_cosine_row_distance_on_known_inputs():
    gr = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    gs = torch.tensor([[3.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    # rows: cos 1 -> 0, cos 0 -> 1, cos -1 -> 2
    assert layer_distance(gr, gs, "cos").item() == pytest.approx(3.0, abs=1e-5)
    conv_r, conv_s = gr.view(3, 2, 1, 1), gs.view(3, 2, 1, 1)
    assert layer_distance(conv_r, conv_s, "cos").item() == pytest.approx(3.0, abs=1e-5)
    # batched over 2 classes = the sum of the two
    b = layer_distance(torch.stack([gr, gr]), torch.stack([gs, gr]), "cos", batched=True)
    assert b.item() == pytest.approx(3.0, abs=1e-5)
    # 1-D parameters give nothing
    assert layer_distance(torch.ones(4), -torch.ones(4), "cos").item() == 0.0


def test_l1_mse_and_ignored_parameters():
    conv_r, conv_s = torch.zeros(2, 1, 3, 3), torch.ones(2, 1, 3, 3)
    lin_r, lin_s = torch.zeros(3, 4), torch.full((3, 4), 2.0)
    bias_r, bias_s = torch.zeros(3), torch.full((3,), 100.0)
    assert layer_distance(conv_r, conv_s, "l1").item() == 18.0
    assert layer_distance(lin_r, lin_s, "mse").item() == 48.0
    real, syn = [conv_r, bias_r, lin_r], [conv_s, bias_s, lin_s]
    assert match_distance(real, syn, "l1").item() == 18.0 + 24.0  # bias ignored
    assert match_distance(real, syn, "l1", conv_only=True).item() == 18.0  # linear ignored too
    assert match_distance(real, syn, "mse", conv_only=True).item() == 18.0
    with pytest.raises(ConfigError):
        layer_distance(conv_r, conv_s, "l2")
    with pytest.raises(ConfigError):
        layer_distance(conv_r, lin_s, "l1")


def test_get_loops():
    assert get_loops(1) == (1, 1) and get_loops(10) == (10, 50) and get_loops(50) == (50, 10)
    assert get_loops(2) == (1, 1) and get_loops(8) == (10, 50) and get_loops(100) == (50, 10)


# ------------------------------------------------------------------------------ vmapped gradients


@pytest.mark.parametrize("create_graph", [False, True])
def test_vmapped_per_class_gradients_equal_the_loop(create_graph):
    # float64: some CPUs run fp32 convolutions with reduced internal precision (oneDNN)
    net = build_network("convnet-w32", 1, 4, (8, 8), 0, CPU).double()
    x = torch.randn(4, 3, 1, 8, 8, dtype=torch.float64, generator=make_generator(0))
    classes = torch.tensor([2, 0, 3, 1])
    a = per_class_gradients(net, x, classes, create_graph=create_graph, vectorize=True)
    b = per_class_gradients(net, x, classes, create_graph=create_graph, vectorize=False)
    assert len(a) == len(list(net.parameters()))
    for ga, gb, p in zip(a, b, net.parameters(), strict=True):
        assert ga.shape == (4, *p.shape)
        torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-11)
    # class 2 alone, by plain autograd
    loss = F.cross_entropy(net(x[0]), torch.full((3,), 2))
    g0 = torch.autograd.grad(loss, list(net.parameters()))
    for ga, g in zip(a, g0, strict=True):
        torch.testing.assert_close(ga[0], g, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("conv_only", [False, True])
@pytest.mark.parametrize("vectorize", [False, True])
def test_match_loss_differentiates_only_the_matched_weights(conv_only, vectorize):
    """Restricting the gradients to the compared weights leaves the loss and its gradient
    w.r.t. the synthetic images unchanged (float64: exact up to rounding)."""
    net = build_network("convnet-w32", 1, 3, (8, 8), 0, CPU).double()
    names = matched_parameter_names(net, conv_only)
    shapes = dict((n, p.dim()) for n, p in net.named_parameters())
    assert names and all(shapes[n] == 4 if conv_only else shapes[n] > 1 for n in names)
    assert conv_only or any(shapes[n] == 2 for n in names)  # the classifier's weight
    x_real = torch.randn(3, 4, 1, 8, 8, dtype=torch.float64, generator=make_generator(0))
    x_syn = torch.randn(3, 2, 1, 8, 8, dtype=torch.float64, generator=make_generator(1))
    classes = torch.arange(3)

    def full_loss(xs):  # every parameter differentiated, then the distance's own filter
        g_real = per_class_gradients(net, x_real, classes, create_graph=False, vectorize=False)
        g_syn = per_class_gradients(net, xs, classes, create_graph=True, vectorize=vectorize)
        return match_distance(g_real, g_syn, "l1", conv_only=conv_only, batched=True)

    a_x, b_x = x_syn.clone().requires_grad_(), x_syn.clone().requires_grad_()
    a = gradient_match_loss(net, x_real, a_x, classes, metric="l1", conv_only=conv_only,
                            vectorize=vectorize)
    b = full_loss(b_x)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    (ga,), (gb,) = torch.autograd.grad(a, [a_x]), torch.autograd.grad(b, [b_x])
    torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-11)
    with pytest.raises(ConfigError, match="no parameter"):
        per_class_gradients(net, x_real, classes, create_graph=False, names=["nope.weight"])


def test_compiled_real_side_gradients_equal_eager():
    from torch._dynamo.utils import counters

    from datadistill import utils

    net = build_network("convnet-w32", 1, 3, (8, 8), 0, CPU)
    x = torch.randn(3, 4, 1, 8, 8, generator=make_generator(0))
    classes = torch.arange(3)
    before = counters["stats"]["unique_graphs"]
    a = per_class_gradients(net, x, classes, create_graph=False, vectorize=False, compile=True)
    b = per_class_gradients(net, x, classes, create_graph=False, vectorize=False)
    assert not utils._COMPILE_BROKEN and counters["stats"]["unique_graphs"] > before  # compiled
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)  # float rounding
    with pytest.raises(ConfigError, match="double backward"):
        per_class_gradients(net, x, classes, create_graph=True, vectorize=False, compile=True)


def test_compiled_inner_loop_trains_as_eager(monkeypatch):
    """The network training between outer steps (``compile`` option) matches the eager loop."""
    from datadistill.methods import gm

    asked = []

    def spy(device, precision, compile):
        asked.append((precision, compile))
        return loss_function(device, precision, compile)

    loss_function = gm.loss_function
    monkeypatch.setattr(gm, "loss_function", spy)
    x = torch.randn(6, 1, 8, 8, generator=make_generator(0))
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    weights = []
    for comp in (True, False):
        net = build_network("convnet-w32", 1, 3, (8, 8), 0, CPU)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.5)
        train_on_batches(net, opt, x, y, 3, 4, make_generator(1), None, "fp32", compile=comp)
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert asked == [("fp32", True), ("fp32", False)]
    start = torch.cat([p.detach().flatten() for p in
                       build_network("convnet-w32", 1, 3, (8, 8), 0, CPU).parameters()])
    assert not torch.equal(weights[1], start)  # the loop trained
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)  # float rounding


def test_match_loss_image_gradient_vmap_equals_loop():
    net = build_network("convnet-w32", 1, 3, (8, 8), 1, CPU).double()
    g = make_generator(1)
    xr = torch.randn(3, 5, 1, 8, 8, dtype=torch.float64, generator=g)
    grads = []
    for vec in (True, False):
        xs = torch.randn(3, 2, 1, 8, 8, dtype=torch.float64, generator=make_generator(2))
        xs.requires_grad_(True)
        loss = gradient_match_loss(net, xr, xs, torch.arange(3), metric="cos", vectorize=vec)
        loss.backward()
        grads.append(xs.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-10)


def test_bf16_synthetic_side_runs_in_bf16_and_keeps_the_image_gradient_direction():
    net = build_network("convnet-w32", 1, 3, (8, 8), 1, CPU)
    g = make_generator(1)
    xr = torch.randn(3, 5, 1, 8, 8, generator=g)
    grads = []
    for prec, vectorize in (("fp32", False), ("bf16", False), ("bf16", True)):
        xs = torch.randn(3, 2, 1, 8, 8, generator=make_generator(2)).requires_grad_(True)
        loss = gradient_match_loss(net, xr, xs, torch.arange(3), metric="l1", conv_only=True,
                                   vectorize=vectorize, syn_precision=prec)
        assert loss.dtype == torch.float32
        loss.backward()
        grads.append(xs.grad)
    for g16 in grads[1:]:  # the loop and the vmapped path
        diff = float((g16 - grads[0]).norm() / grads[0].norm())
        assert 0 < diff < 0.2  # bf16 rounding, not the fp32 computation (diff 0) nor a broken one


def test_batchnorm_net_uses_the_loop():
    net = build_network("convnet-bn", 1, 2, (8, 8), 0, CPU)
    x = torch.randn(2, 4, 1, 8, 8, generator=make_generator(0))
    g = per_class_gradients(net, x, torch.arange(2), create_graph=False, vectorize=True)
    assert g[0].shape[0] == 2 and all(torch.isfinite(t).all() for t in g)


def test_composed_dsa_grouped_shares_draws_per_class():
    aug = ComposedDSA("color_crop_cutout")
    assert [s.strategy for s in aug.stages] == ["color", "crop", "cutout"]
    x = torch.randn(6, 1, 8, 8, generator=make_generator(0))
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    a, b = aug.grouped((x, x.clone()), (groups, groups), 3, make_generator(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    flip = ComposedDSA("color_crop_flip_scale_rotate")
    assert [s.strategy for s in flip.stages] == ["flip", "color", "crop_scale_rotate"]


# ------------------------------------------------------------------------------ runs


@pytest.mark.parametrize("method", ["dc", "dsa"])
def test_dc_dsa_change_images_and_are_deterministic(digits, method):
    train, _ = digits
    kw = dict(SMALL, batch_real=8, outer_loop=2, inner_loop=2)
    init = distill(method, train, 2, steps=1, lr_img=0.0, **kw)  # lr 0: images stay the init
    s1 = distill(method, train, 2, steps=2, **kw)
    s2 = distill(method, train, 2, steps=2, **kw)
    assert torch.equal(s1.images, s2.images)
    assert not torch.equal(s1.images, init.images)
    assert s1.images.shape == (20, 1, 8, 8) and torch.isfinite(s1.images).all()
    fx, fy = s1.images[:10], s1.labels[:10]  # frozen images of an earlier segment
    s3 = distill(method, train, 2, steps=1, segment=SegmentContext(1, fx, fy), **kw)
    assert s3.images.shape == (20, 1, 8, 8)  # only the new segment comes back
    assert not torch.equal(s3.images, distill(method, train, 2, steps=1, **kw).images)  # net trains on fx
    with pytest.raises(ConfigError):
        distill(method, train, 2, steps=1, segment=SegmentContext(1, fx[:, :, :4], fy), **kw)
    with pytest.raises(ConfigError, match="cannot distil sequential segments"):
        distill("random", train, 2, segment=SegmentContext(1, fx, fy), progress=False)


@pytest.mark.parametrize("method", ["dc", "idc"])
def test_syn_precision_option(digits, method):
    train, _ = digits
    kw = dict(SMALL, batch_real=8, inner_loop=2, steps=1)
    if method == "idc":
        kw.update(n_data=64, lr_img=1.0)
    else:
        kw.update(outer_loop=2)
    fp32 = distill(method, train, 2, syn_precision="fp32", **kw).images
    bf16 = distill(method, train, 2, syn_precision="bf16", **kw).images
    assert torch.isfinite(bf16).all() and not torch.equal(bf16, fp32)  # the option reaches the loss
    with pytest.raises(ConfigError, match="precision"):
        distill(method, train, 2, syn_precision="fp16", **kw)


def test_idc_changes_images_saves_loads_evaluates(digits, tmp_path):
    train, test = digits
    kw = dict(SMALL, inner_loop=2, n_data=64, batch_real=8)
    init = distill("idc", train, 2, steps=1, lr_img=0.0, **kw)
    s = distill("idc", train, 2, steps=2, lr_img=1.0, **kw)
    assert s.parameterization == "multi-formation" and s.factor == 2
    assert s.images.shape == (20, 1, 8, 8) and len(s) == 80 and s.ipc == 8
    assert not torch.equal(s.images, init.images)
    pix = s.preprocessing.invert(s.images)
    assert pix.min() > -1e-5 and pix.max() < 1 + 1e-5  # stored pixels are clamped to [0, 1]
    path = s.save(tmp_path / "synset.pt")
    back = SyntheticSet.load(path)
    assert torch.equal(back.images, s.images) and back.factor == 2
    x, y = back.decode()
    assert x.shape == (80, 1, 8, 8) and torch.equal(y, torch.arange(10).repeat_interleave(8))
    proto = get_protocol("idc").with_(epochs=2)
    res = evaluate(back, proto, num_eval=1, train=train, test=test, baseline=False,
                   compile=False, precision="fp32", progress=False)
    assert 0 <= res.scores["convnet"].mean <= 100 and res.protocol["batch_size"] == 64
    with pytest.raises(ConfigError, match="factor"):
        distill("idc", train, 2, steps=1, factor=3, **kw)
    with pytest.raises(ConfigError, match="lr_final"):
        distill("idc", train, 2, steps=1, lr_final=2.0, **kw)


# ------------------------------------------------------------------------------ protocol


def test_idc_protocol_schedule_and_dataset_rules():
    p = get_protocol("idc")
    assert (p.epochs, p.batch_size, p.lr, p.gamma, p.cutmix_p) == (1000, 64, 0.01, 0.2, 0.5)
    assert not p.reset_momentum
    lr = [p.lr_at(e) for e in (0, 665, 666, 832, 833, 999)]
    assert lr == pytest.approx([0.01, 0.01, 0.002, 0.002, 0.0004, 0.0004])
    q = p.with_(epochs=300)  # MultiStepLR milestones 2*300//3 = 200, 5*300//6 = 250
    assert [q.lr_at(e) for e in (199, 200, 249, 250)] == pytest.approx([0.01, 0.002, 0.002, 0.0004])
    assert p.for_dataset("mnist").cutmix_p == 0.0
    assert p.for_dataset("fashion-mnist").cutmix_p == 0.5
    assert p.strategy_for("fashion-mnist") == "color_crop_flip_scale_rotate"
    assert p.strategy_for("mnist") == "color_crop_scale_rotate"
    assert get_protocol("dsa").strategy_for("cifar10") == "color_crop_cutout_flip_scale_rotate"


def test_cli_idc_run(tmp_path):
    from datadistill.cli import main

    out = tmp_path / "run"
    rc = main(["distill", "--dataset", "digits", "--method", "idc", "--ipc", "2", "--steps", "3",
               "--num-eval", "1", "--epochs", "20", "--protocol", "idc", "--out", str(out),
               "--quiet", "--no-compile", "--set", "inner_loop=2", "--set", "n_data=64",
               "--set", "batch_real=8", "--set", "net=convnet-w32"])
    assert rc == 0
    s = SyntheticSet.load(out / "synset.pt")
    assert s.meta["method"] == "idc" and len(s) == 80
    assert (out / "metrics.json").exists() and (out / "grid.png").exists()


def test_vectorize_auto_follows_hardware(monkeypatch):
    import datadistill.utils as utils
    from datadistill.config import _coerce
    from datadistill.methods.gm import resolve_vectorize

    cpu = torch.device("cpu")
    assert resolve_vectorize(True, cpu) is True and resolve_vectorize(False, cpu) is False
    for native in (True, False):  # the loop measured no slower on every quiet CPU
        monkeypatch.setattr(utils, "_NATIVE_BF16_CPU", native)
        assert resolve_vectorize("auto", cpu) is False
    assert resolve_vectorize("auto", torch.device("cuda")) is True
    with pytest.raises(ConfigError):
        resolve_vectorize("yes", cpu)
    assert _coerce("vectorize", "false", "auto") is False
    assert _coerce("vectorize", True, "auto") is True
    assert _coerce("vectorize", "auto", True) == "auto"
    with pytest.raises(ConfigError, match="true, false or auto"):
        _coerce("vectorize", 3, "auto")


@pytest.mark.parametrize("method,extra", [
    ("dsa", dict(batch_real=8, outer_loop=2, inner_loop=2)),
    ("idc", dict(inner_loop=2, n_data=64, batch_real=8)),
])
def test_gm_checkpoint_resume_equals_uninterrupted(digits, tmp_path, method, extra):
    """A run killed after its step-2 checkpoint and resumed ends where an uninterrupted run
    ends (images, optimiser and generator state all restored)."""
    train, _ = digits
    kw = dict(SMALL, steps=4, checkpoint_every=2, seed=1, **extra)
    a = distill(method, train, 2, **kw)
    ckpt = tmp_path / "checkpoint.pt"

    def stop_at_3(step, synset_fn):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(method, train, 2, checkpoint=ckpt, callbacks=(stop_at_3,), **kw)
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    resumed = []
    b = distill(method, train, 2, checkpoint=ckpt, resume=True,
                callbacks=(lambda s, _: resumed.append(s),), **kw)
    assert resumed == [3, 4]  # continued, not restarted
    torch.testing.assert_close(b.images, a.images, rtol=0, atol=1e-6)
