"""Tests of datadistill.augment: DSA (siamese / grouped / per-sample modes, every op) and
CutMix / MixUp."""

from __future__ import annotations

import math

import pytest
import torch

from datadistill.augment import DSA, cutmix, default_strategy, mixup
from datadistill.augment.dsa import DEFAULT_STRATEGY, OP_GROUPS
from datadistill.errors import ConfigError
from datadistill.utils import make_generator

SHAPES = [(3, 1, 28, 28), (3, 3, 32, 32)]
CONTINUOUS_OPS = ("color", "scale", "rotate")


def same_image_batch(n: int, shape=(1, 12, 12), seed: int = 0) -> torch.Tensor:
    """``n`` copies of one random (non-symmetric) image."""
    img = torch.rand(*shape, generator=make_generator(seed))
    return img.unsqueeze(0).repeat(n, 1, 1, 1)


def distinct_outputs(x: torch.Tensor) -> int:
    """Number of distinct images in the batch ``x``."""
    return torch.unique(x.reshape(x.shape[0], -1), dim=0).shape[0]


def params_for(dsa: DSA, n: int, im_size=(12, 12), seed: int = 0):
    return dsa.draw(n, im_size, make_generator(seed))


# ------------------------------------------------------------------------------ strategies


def test_default_strategy_no_flip_for_digits():
    # the DSA code's README: full strategy for FashionMNIST and CIFAR, no flip for MNIST/SVHN
    assert default_strategy("fashion-mnist") == DEFAULT_STRATEGY
    assert default_strategy("FASHION-MNIST") == DEFAULT_STRATEGY
    assert "flip" not in default_strategy("mnist").split("_")
    assert "flip" not in default_strategy("svhn").split("_")
    assert default_strategy("digits") == "color_crop_cutout_scale_rotate"
    assert default_strategy("cifar10") == DEFAULT_STRATEGY == "color_crop_cutout_flip_scale_rotate"
    assert "flip" in default_strategy("cifar10").split("_")
    assert default_strategy(None) == DEFAULT_STRATEGY


def test_unknown_op_raises_config_error():
    with pytest.raises(ConfigError, match="blur"):
        DSA("crop_blur")
    with pytest.raises(ConfigError):
        DSA("Crop")


def test_none_strategy_is_identity():
    x = torch.rand(4, 1, 8, 8)
    dsa = DSA("none")
    assert dsa.ops == ()
    assert dsa(x, make_generator(0)) is x
    assert dsa.siamese(x, x, generator=make_generator(0)) == (x, x)


def test_apply_rejects_wrong_number_of_params():
    dsa = DSA("crop")
    p = params_for(dsa, 3)
    with pytest.raises(ConfigError, match="3 samples"):
        dsa.apply(torch.rand(4, 1, 12, 12), p)


# ------------------------------------------------------------------------------ siamese mode


@pytest.mark.parametrize("seed", range(6))
def test_siamese_identical_batches_identical_outputs(seed):
    x = torch.rand(5, 3, 16, 16, generator=make_generator(100 + seed))
    a, b = DSA().siamese(x, x.clone(), generator=make_generator(seed))
    assert a.shape == x.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("op", OP_GROUPS)
def test_siamese_same_transform_for_every_sample_of_both_batches(op):
    # real batch of 7 and synthetic batch of 3, all copies of ONE image: with one shared draw,
    # all 10 outputs must be the same image
    dsa = DSA(op)
    for seed in range(4):
        real = same_image_batch(7, seed=seed)
        syn = same_image_batch(3, seed=seed)
        out_r, out_s = dsa.siamese(real, syn, generator=make_generator(seed))
        assert out_r.shape == real.shape and out_s.shape == syn.shape
        allout = torch.cat([out_r, out_s])
        assert distinct_outputs(allout) == 1
        torch.testing.assert_close(allout, allout[:1].expand_as(allout), rtol=0, atol=0)


def test_siamese_actually_transforms():
    x = same_image_batch(4)
    changed = 0
    for seed in range(10):
        (out,) = DSA("color_scale_rotate").siamese(x, generator=make_generator(seed))
        changed += not torch.allclose(out, x)
    assert changed == 10


# ------------------------------------------------------------------------------ grouped mode


@pytest.mark.parametrize("strategy", [DEFAULT_STRATEGY, *OP_GROUPS])
def test_grouped_same_group_same_transform(strategy):
    dsa = DSA(strategy)
    k = 6
    real = same_image_batch(k * 4)
    syn = same_image_batch(k * 2)
    g_real = torch.arange(k).repeat_interleave(4)
    g_syn = torch.arange(k).repeat(2)  # another order: grouping must follow the ids, not positions
    out_r, out_s = dsa.grouped((real, syn), (g_real, g_syn), k, make_generator(3))
    assert out_r.shape == real.shape and out_s.shape == syn.shape
    for c in range(k):
        members = torch.cat([out_r[g_real == c], out_s[g_syn == c]])
        assert members.shape[0] == 6
        torch.testing.assert_close(members, members[:1].expand_as(members), rtol=0, atol=0)


@pytest.mark.parametrize("strategy", [DEFAULT_STRATEGY, *CONTINUOUS_OPS])
def test_grouped_different_groups_independent(strategy):
    k = 10
    x = same_image_batch(k)
    (out,) = DSA(strategy).grouped((x,), (torch.arange(k),), k, make_generator(0))
    # continuous parameters: every group differs; with the default strategy (op per group) at
    # least several distinct results
    if strategy in CONTINUOUS_OPS:
        assert distinct_outputs(out) == k
    else:
        assert distinct_outputs(out) >= 3


def test_grouped_draws_one_op_per_group():
    dsa = DSA()
    p = dsa.draw(200, (8, 8), make_generator(0), one_op=False)
    assert p.op.unique().numel() == len(dsa.ops)  # independent ops per group
    p1 = dsa.draw(200, (8, 8), make_generator(0), one_op=True)
    assert p1.op.unique().numel() == 1  # one op per call


# ------------------------------------------------------------------------------ per-sample mode


@pytest.mark.parametrize("op", CONTINUOUS_OPS)
def test_per_sample_mode_different_params_continuous(op):
    x = same_image_batch(12)
    out = DSA(op)(x, make_generator(0))
    assert distinct_outputs(out) == 12


@pytest.mark.parametrize("op", ["crop", "cutout", "flip"])
def test_per_sample_mode_different_params_discrete(op):
    x = same_image_batch(32)
    out = DSA(op)(x, make_generator(1))
    assert distinct_outputs(out) >= 2
    if op != "flip":
        assert distinct_outputs(out) >= 8


def test_per_sample_mode_one_op_group_per_call():
    # one op group per call (the original 'S' mode): with crop only vs flip only being
    # distinguishable, a call never mixes ops; checked via the drawn params
    dsa = DSA()
    for seed in range(5):
        p = dsa.draw(16, (8, 8), make_generator(seed))
        assert p.op.unique().numel() == 1


def test_determinism_with_seeded_generator():
    x = torch.rand(8, 3, 16, 16, generator=make_generator(5))
    dsa = DSA()
    for seed in range(4):
        a = dsa(x, make_generator(seed))
        b = dsa(x, make_generator(seed))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    outs = [dsa(x, make_generator(s)) for s in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_generator_state_advances_between_calls():
    x = torch.rand(8, 1, 12, 12)
    g = make_generator(0)
    dsa = DSA("scale")
    assert not torch.equal(dsa(x, g), dsa(x, g))


# ------------------------------------------------------------------------------ every op


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", OP_GROUPS)
def test_op_shape_dtype_and_gradient(op, shape):
    x = torch.rand(*shape, generator=make_generator(1)).requires_grad_(True)
    dsa = DSA(op)
    out = dsa(x, make_generator(2))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    w = torch.rand(*shape, generator=make_generator(3))
    (out * w).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", OP_GROUPS)
def test_siamese_and_grouped_are_differentiable(op):
    x = torch.rand(4, 1, 12, 12).requires_grad_(True)
    real = torch.rand(6, 1, 12, 12)
    dsa = DSA(op)
    _, xs = dsa.grouped((real, x), (torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 1])),
                        2, make_generator(0))
    xs.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_flip_flips_horizontally():
    dsa = DSA("flip")
    x = torch.rand(4, 3, 8, 8)
    p = params_for(dsa, 4, (8, 8))
    p.flip = torch.tensor([True, False, True, False])
    out = dsa.apply(x, p)
    torch.testing.assert_close(out[[0, 2]], x[[0, 2]].flip(3), rtol=0, atol=0)
    torch.testing.assert_close(out[[1, 3]], x[[1, 3]], rtol=0, atol=0)
    # flip probability about 0.5
    frac = float(dsa.draw(4000, (8, 8), make_generator(0)).flip.float().mean())
    assert 0.45 < frac < 0.55


def _reference_translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = x[i + dy, j + dx], 0 outside."""
    n, c, h, w = x.shape
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[:, :, i, j] = x[:, :, i + dy, j + dx]
    return out


def test_crop_shift_one_pixel_fills_zero():
    dsa = DSA("crop")
    x = torch.rand(1, 2, 8, 8) + 1.0  # strictly positive, so fill zeros are visible
    p = params_for(dsa, 1, (8, 8))
    p.crop = torch.tensor([[1, 0]])
    out = dsa.apply(x, p)
    torch.testing.assert_close(out[:, :, :-1], x[:, :, 1:], rtol=0, atol=0)
    assert (out[:, :, -1] == 0).all()
    p.crop = torch.tensor([[0, -1]])
    out = dsa.apply(x, p)
    torch.testing.assert_close(out[:, :, :, 1:], x[:, :, :, :-1], rtol=0, atol=0)
    assert (out[:, :, :, 0] == 0).all()
    p.crop = torch.tensor([[0, 0]])
    torch.testing.assert_close(dsa.apply(x, p), x, rtol=0, atol=0)


@pytest.mark.parametrize("shift", [(3, -2), (-4, 4), (2, 1)])
def test_crop_matches_reference_translation(shift):
    dsa = DSA("crop")
    x = torch.rand(2, 3, 9, 9) + 1.0
    p = params_for(dsa, 2, (9, 9))
    p.crop = torch.tensor([list(shift), list(shift)])
    out = dsa.apply(x, p)
    torch.testing.assert_close(out, _reference_translate(x, *shift), rtol=0, atol=0)
    assert int((out == 0).sum()) == 2 * 3 * (81 - (9 - abs(shift[0])) * (9 - abs(shift[1])))


@pytest.mark.parametrize("h", [28, 32])
def test_crop_shift_range(h):
    s = round(0.125 * h)  # 4 for both
    p = DSA("crop").draw(5000, (h, h), make_generator(0))
    assert int(p.crop.min()) == -s and int(p.crop.max()) == s
    assert p.crop.dtype == torch.int64


@pytest.mark.parametrize("shape", [(1, 1, 28, 28), (1, 3, 32, 32)])
def test_cutout_zeros_square_of_half_side(shape):
    dsa = DSA("cutout")
    _, c, h, w = shape
    side = int(h * 0.5 + 0.5)
    x = torch.ones(shape)
    p = params_for(dsa, 1, (h, w))
    p.cutout = torch.tensor([[h // 2, w // 2]])
    out = dsa.apply(x, p)
    zero = out[0] == 0
    assert int(zero.sum()) == c * side * side
    # the same square in every channel, contiguous
    assert (zero == zero[:1]).all()
    rows = zero[0].any(1).nonzero().flatten()
    cols = zero[0].any(0).nonzero().flatten()
    assert rows.numel() == side and cols.numel() == side
    assert int(rows.max() - rows.min()) == side - 1 and int(cols.max() - cols.min()) == side - 1
    assert zero[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    assert (out[0][~zero] == 1).all()


def test_cutout_random_centres_clip_at_borders():
    dsa = DSA("cutout")
    x = torch.ones(200, 1, 28, 28)
    out = dsa(x, make_generator(0))
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert int(zeros.max()) == 14 * 14
    assert int(zeros.min()) >= 7 * 7  # a clipped square keeps at least a quarter
    assert int(zeros.min()) < 14 * 14  # some squares are clipped at the border


def test_scale_and_rotate_identity_params():
    x = torch.rand(2, 3, 10, 10)
    for op in ("scale", "rotate"):
        dsa = DSA(op)
        p = params_for(dsa, 2, (10, 10))
        p.scale = torch.ones(2, 2)
        p.rotate = torch.zeros(2)
        torch.testing.assert_close(dsa.apply(x, p), x, rtol=0, atol=1e-5)


def test_rotate_quarter_turn_is_rot90():
    dsa = DSA("rotate")
    x = torch.rand(1, 1, 6, 6)
    p = params_for(dsa, 1, (6, 6))
    outs = []
    for angle in (math.pi / 2, -math.pi / 2):
        p.rotate = torch.tensor([angle])
        outs.append(dsa.apply(x, p))
    cw, ccw = torch.rot90(x, -1, (2, 3)), torch.rot90(x, 1, (2, 3))
    if torch.allclose(outs[0], cw, atol=1e-5):
        torch.testing.assert_close(outs[1], ccw, rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(outs[0], ccw, rtol=0, atol=1e-5)
        torch.testing.assert_close(outs[1], cw, rtol=0, atol=1e-5)


def test_scale_zooms_about_the_centre():
    # scale factor 2 (sampling a region twice as large): the centre pixel of an odd image stays,
    # the border samples from outside and is 0
    dsa = DSA("scale")
    x = torch.rand(1, 1, 9, 9) + 1.0
    p = params_for(dsa, 1, (9, 9))
    p.scale = torch.tensor([[2.0, 2.0]])
    out = dsa.apply(x, p)
    torch.testing.assert_close(out[0, 0, 4, 4], x[0, 0, 4, 4])
    torch.testing.assert_close(out[0, 0, 2, 2], x[0, 0, 0, 0])  # (2-4)*2+4 = 0
    assert out[0, 0, 0, 0] == 0


def test_draw_ranges():
    dsa = DSA()
    p = dsa.draw(5000, (32, 32), make_generator(0))
    assert len(p) == 5000
    assert p.scale.min() >= 1 / 1.2 - 1e-6 and p.scale.max() <= 1.2 + 1e-6
    assert p.scale.min() < 0.85 and p.scale.max() > 1.15
    # sx and sy independent
    assert not torch.equal(p.scale[:, 0], p.scale[:, 1])
    deg = p.rotate * 180 / math.pi
    assert deg.min() >= -15 - 1e-4 and deg.max() <= 15 + 1e-4
    assert deg.min() < -14 and deg.max() > 14
    for name in ("brightness", "saturation", "contrast"):
        u = getattr(p, name)
        assert u.min() >= 0 and u.max() < 1 and 0.45 < float(u.mean()) < 0.55
    assert int(p.cutout.min()) >= 0 and int(p.cutout.max()) <= 32


def test_color_matches_reference_formulas():
    dsa = DSA("color")
    x = torch.rand(3, 3, 6, 6, generator=make_generator(0))
    p = params_for(dsa, 3, (6, 6))
    p.brightness = torch.tensor([0.0, 0.3, 0.999])
    p.saturation = torch.tensor([0.5, 0.0, 0.9])
    p.contrast = torch.tensor([0.0, 0.7, 0.2])
    out = dsa.apply(x, p)
    b, s, c = (t.view(-1, 1, 1, 1) for t in (p.brightness, p.saturation, p.contrast))
    ref = x + (b - 0.5)
    m = ref.mean(dim=1, keepdim=True)
    ref = (ref - m) * (2 * s) + m
    m = ref.mean(dim=(1, 2, 3), keepdim=True)
    ref = (ref - m) * (c + 0.5) + m
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_color_brightness_range_on_constant_grey_image():
    # 1 channel constant image: saturation and contrast leave it unchanged, brightness adds
    # (u - 0.5) with u in [0, 1)
    x = torch.full((500, 1, 4, 4), 0.25)
    out = DSA("color")(x, make_generator(0))
    delta = out[:, 0, 0, 0] - 0.25
    assert (out == out[:, :, :1, :1]).all()
    assert delta.min() >= -0.5 - 1e-6 and delta.max() < 0.5
    assert delta.min() < -0.45 and delta.max() > 0.45


def test_color_saturation_and_contrast_ranges():
    # saturation factor 2u in [0, 2): the per-pixel channel spread is scaled by that factor;
    # contrast factor in [0.5, 1.5)
    dsa = DSA("color")
    x = torch.rand(1, 3, 5, 5, generator=make_generator(1)).repeat(400, 1, 1, 1)
    p = dsa.draw(400, (5, 5), make_generator(2))
    p.brightness = torch.full((400,), 0.5)  # no brightness change
    p.contrast = torch.full((400,), 0.5)  # contrast factor 1
    out = dsa.apply(x, p)
    spread_in = x - x.mean(1, keepdim=True)
    spread_out = out - out.mean(1, keepdim=True)
    factor = (spread_out.flatten(1) * spread_in.flatten(1)).sum(1) / (spread_in.flatten(1) ** 2).sum(1)
    torch.testing.assert_close(factor, 2 * p.saturation, rtol=1e-4, atol=1e-5)
    assert factor.min() >= 0 and factor.max() < 2 and factor.max() > 1.9


# ------------------------------------------------------------------------------ CutMix / MixUp


@pytest.mark.parametrize("fn", [cutmix, mixup])
@pytest.mark.parametrize("soft", [False, True])
def test_mix_shapes_and_targets(fn, soft):
    n, k = 8, 5
    x = torch.rand(n, 3, 16, 16, generator=make_generator(0))
    y = torch.arange(n) % k
    if soft:
        y = torch.softmax(torch.randn(n, k, generator=make_generator(1)), 1)
    for seed in range(5):
        mx, t = fn(x, y, k, make_generator(seed))
        assert mx.shape == x.shape and mx.dtype == x.dtype
        assert t.shape == (n, k) and t.dtype == torch.float32
        assert (t >= 0).all()
        torch.testing.assert_close(t.sum(1), torch.ones(n))


@pytest.mark.parametrize("fn", [cutmix, mixup])
def test_mix_determinism(fn):
    x = torch.rand(8, 1, 12, 12)
    y = torch.arange(8)
    a = fn(x, y, 8, make_generator(3))
    b = fn(x, y, 8, make_generator(3))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    outs = [fn(x, y, 8, make_generator(s))[1] for s in range(5)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_cutmix_targets_match_pasted_area():
    n = 8
    x = torch.rand(n, 1, 16, 16, generator=make_generator(0))  # distinct images
    y = torch.arange(n)  # one class per image: targets reveal the partner
    checked = 0
    for seed in range(10):
        mx, t = cutmix(x, y, n, make_generator(seed))
        for i in range(n):
            kept = (mx[i] == x[i]).float().mean()
            if t[i, i] < 1:  # mixed with another image j
                j = int(torch.topk(t[i], 2).indices[1]) if t[i].argmax() == i else int(t[i].argmax())
                if j == i:
                    continue
                pasted = (mx[i] == x[j]).float().mean()
                torch.testing.assert_close(kept + pasted, torch.tensor(1.0))
                torch.testing.assert_close(t[i, i], kept, atol=1e-6, rtol=0)
                torch.testing.assert_close(t[i, j], pasted, atol=1e-6, rtol=0)
                checked += 1
    assert checked > 0


def test_mixup_is_convex_combination():
    n = 6
    x = torch.rand(n, 2, 5, 5, generator=make_generator(0))
    y = torch.arange(n)
    mx, t = mixup(x, y, n, make_generator(4))
    for i in range(n):
        lam = t[i, i]
        if lam >= 1 - 1e-6:
            torch.testing.assert_close(mx[i], x[i])
            continue
        others = [j for j in range(n) if j != i and t[i, j] > 0]
        assert len(others) == 1
        j = others[0]
        torch.testing.assert_close(t[i, j], 1 - lam)
        torch.testing.assert_close(mx[i], lam * x[i] + (1 - lam) * x[j], atol=1e-6, rtol=1e-5)
