"""Tests of datadistill.synthetic: the SyntheticSet artifact (validation, persistence, decoding,
export)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from datadistill.data import ZCA, Preprocessing
from datadistill.errors import ArtifactError
from datadistill.synthetic import FORMAT, FORMAT_VERSION, SyntheticSet, multi_formation_decode
from datadistill.utils import make_generator

NAMES = ["zero", "one", "two"]
PRE1 = Preprocessing((0.3056,), (0.3761,))
PRE3 = Preprocessing((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def make_set(
    m_per_class: int = 2, channels: int = 1, size: int = 8, pre: Preprocessing | None = None,
    seed: int = 0, **kwargs,
) -> tuple[SyntheticSet, torch.Tensor]:
    """A set whose images are ``pre.apply(pixels)`` of random pixels in [0, 1] (returned too)."""
    pre = pre or (PRE1 if channels == 1 else PRE3)
    k = len(NAMES)
    pixels = torch.rand(k * m_per_class, channels, size, size, generator=make_generator(seed))
    labels = torch.arange(k).repeat_interleave(m_per_class)
    meta = {"method": "dm", "dataset": "digits", "seed": seed, "config": {"lr_img": 1.0, "x": [1, 2]}}
    return SyntheticSet(pre.apply(pixels), labels, NAMES, pre, meta=meta, **kwargs), pixels


def zca_preprocessing(channels: int = 1, size: int = 4) -> Preprocessing:
    base = Preprocessing((0.5,) * channels, (0.25,) * channels)
    data = base.apply(torch.rand(64, channels, size, size, generator=make_generator(9)))
    return Preprocessing(base.mean, base.std, ZCA.fit(data))


def assert_same_set(a: SyntheticSet, b: SyntheticSet) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels) and a.labels.dtype == b.labels.dtype
    assert a.class_names == b.class_names
    assert a.preprocessing == b.preprocessing
    assert a.parameterization == b.parameterization and a.factor == b.factor
    assert a.lr == b.lr
    assert a.meta == b.meta


# ------------------------------------------------------------------------------ round trip


def test_save_load_round_trip_exact(tmp_path):
    s, _ = make_set(lr=0.0123)
    path = s.save(tmp_path / "synset.pt")
    assert path == tmp_path / "synset.pt" and path.is_file()
    t = SyntheticSet.load(path)
    assert_same_set(s, t)
    assert t.lr == pytest.approx(0.0123)
    assert t.meta["config"] == {"lr_img": 1.0, "x": [1, 2]}
    # a run folder is accepted too
    assert_same_set(s, SyntheticSet.load(tmp_path))


def test_save_compressed_round_trip_and_truncation(tmp_path):
    s, _ = make_set()
    s.initial = s.images.clone()
    plain, packed = s.save(tmp_path / "plain.pt"), s.save(tmp_path / "packed.pt", compress=True)
    assert packed.read_bytes()[:2] == b"\x1f\x8b"  # gzip, detected by load
    t = SyntheticSet.load(packed)
    assert_same_set(s, t)
    assert torch.equal(t.initial, s.initial)
    assert_same_set(SyntheticSet.load(plain), t)
    packed.write_bytes(packed.read_bytes()[:-40])
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        SyntheticSet.load(packed)


def test_save_load_round_trip_zca(tmp_path):
    pre = zca_preprocessing(channels=3, size=4)
    s, pixels = make_set(channels=3, size=4, pre=pre)
    t = SyntheticSet.load(s.save(tmp_path / "z.pt"))
    assert_same_set(s, t)
    assert t.preprocessing.zca is not None
    assert torch.equal(t.preprocessing.zca.transform, pre.zca.transform)
    assert torch.equal(t.preprocessing.zca.inverse, pre.zca.inverse)
    torch.testing.assert_close(t.pixels(), pixels, atol=1e-4, rtol=0)


def test_save_load_soft_labels_and_multi_formation(tmp_path):
    k = len(NAMES)
    soft = torch.softmax(torch.randn(k, k, generator=make_generator(0)), 1)
    s = SyntheticSet(torch.randn(k, 1, 8, 8), soft, NAMES, PRE1, parameterization="multi-formation",
                     factor=2, meta={"method": "idc"})
    t = SyntheticSet.load(s.save(tmp_path / "s.pt"))
    assert_same_set(s, t)
    assert t.soft_labels and t.labels.dtype == torch.float32
    assert len(t) == k * 4


def test_state_dict_header():
    s, _ = make_set()
    d = s.state_dict()
    assert d["format"] == FORMAT and d["version"] == FORMAT_VERSION
    assert json.loads(d["meta_json"])["method"] == "dm"


# ------------------------------------------------------------------------------ atomic save


def test_atomic_save_keeps_good_file_when_writing_fails(tmp_path, monkeypatch):
    good, _ = make_set(seed=0)
    path = good.save(tmp_path / "synset.pt")
    before = path.read_bytes()
    other, _ = make_set(seed=1)

    real_write = Path.write_bytes
    seen = []

    def failing_write(self, data):
        # the temporary file exists beside the target: write half of it, then crash
        seen.append(self)
        assert self.parent == path.parent and self != path and self.exists()
        real_write(self, data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(OSError, match="simulated"):
        other.save(path)
    monkeypatch.undo()

    assert seen, "save did not go through a temporary file"
    assert path.read_bytes() == before
    assert_same_set(good, SyntheticSet.load(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synset.pt"]  # temp file removed


def test_atomic_save_interrupted_before_write(tmp_path, monkeypatch):
    good, _ = make_set(seed=0)
    path = good.save(tmp_path / "synset.pt")
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        make_set(seed=1)[0].save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["synset.pt"]


def test_atomic_write_gives_a_plain_files_permissions(tmp_path):
    """The temporary file is owner-only (mkstemp); the artifact gets what open() would give a
    new file (0o666 less the umask), and a replaced file keeps its own mode."""
    import os

    from datadistill.utils import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "a.json", 0o640)
        atomic_write_text(tmp_path / "a.json", "[]")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


# ------------------------------------------------------------------------------ bad files


def test_load_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="no synthetic set"):
        SyntheticSet.load(tmp_path / "nope.pt")


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.1])
def test_load_truncated_file(tmp_path, fraction):
    s, _ = make_set()
    path = s.save(tmp_path / "synset.pt")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        SyntheticSet.load(path)


def test_load_random_bytes(tmp_path):
    path = tmp_path / "synset.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ArtifactError):
        SyntheticSet.load(path)


def test_load_empty_file(tmp_path):
    path = tmp_path / "synset.pt"
    path.write_bytes(b"")
    with pytest.raises(ArtifactError):
        SyntheticSet.load(path)


def test_load_other_format(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "someone.else", "version": 1, "images": torch.zeros(1)}, path)
    with pytest.raises(ArtifactError, match="not a datadistill synthetic set"):
        SyntheticSet.load(path)
    torch.save(torch.zeros(3), path)  # not even a dict
    with pytest.raises(ArtifactError, match="not a datadistill synthetic set"):
        SyntheticSet.load(path)


def test_load_newer_version(tmp_path):
    s, _ = make_set()
    d = s.state_dict()
    d["version"] = FORMAT_VERSION + 1
    path = tmp_path / "new.pt"
    torch.save(d, path)
    with pytest.raises(ArtifactError, match="upgrade"):
        SyntheticSet.load(path)


def test_load_missing_key(tmp_path):
    s, _ = make_set()
    d = s.state_dict()
    del d["labels"]
    path = tmp_path / "broken.pt"
    torch.save(d, path)
    with pytest.raises(ArtifactError, match="damaged or incomplete"):
        SyntheticSet.load(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_images_rejected_on_construction_and_load(tmp_path, bad):
    s, _ = make_set()
    x = s.images.clone()
    x[1, 0, 2, 3] = bad
    with pytest.raises(ArtifactError, match="NaN/Inf"):
        SyntheticSet(x, s.labels, NAMES, PRE1)
    d = s.state_dict()
    d["images"] = x
    path = tmp_path / "nan.pt"
    torch.save(d, path)
    with pytest.raises(ArtifactError, match="NaN/Inf") as e:
        SyntheticSet.load(path)
    assert str(path) in str(e.value)


def test_labels_out_of_range(tmp_path):
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ArtifactError, match="labels must lie"):
        SyntheticSet(x, torch.tensor([0, 3]), NAMES, PRE1)
    with pytest.raises(ArtifactError, match="labels must lie"):
        SyntheticSet(x, torch.tensor([-1, 0]), NAMES, PRE1)
    s, _ = make_set()
    d = s.state_dict()
    d["labels"] = torch.full_like(s.labels, 7)
    torch.save(d, tmp_path / "bad.pt")
    with pytest.raises(ArtifactError, match="labels must lie"):
        SyntheticSet.load(tmp_path / "bad.pt")


def test_integer_labels_are_converted_and_bad_types_refused():
    x = torch.zeros(2, 1, 8, 8)
    s = SyntheticSet(x, torch.tensor([0, 1], dtype=torch.int32), NAMES, PRE1)
    assert s.labels.dtype == torch.int64
    with pytest.raises(ArtifactError, match="tensors"):
        SyntheticSet(x.numpy(), torch.tensor([0, 1]), NAMES, PRE1)
    with pytest.raises(ArtifactError, match="Preprocessing"):
        SyntheticSet(x, torch.tensor([0, 1]), NAMES, {"mean": (0.5,)})


@pytest.mark.parametrize(
    "images, labels, kwargs, match",
    [
        (torch.zeros(2, 8, 8), torch.tensor([0, 1]), {}, r"\(M, C, H, W\)"),
        (torch.zeros(2, 1, 8, 8), torch.tensor([0.0, 1.0]), {}, "int64"),
        (torch.zeros(2, 1, 8, 8), torch.tensor([0, 1, 2]), {}, "3 labels"),
        (torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), {}, "channels"),
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 4), {}, "soft labels"),
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 3, dtype=torch.int64), {}, "soft labels"),
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 3, 1), {}, r"\(M,\) or \(M, K\)"),
        (torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), {"parameterization": "zoom"}, "parameteri"),
        (torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), {"factor": 2}, "factor"),
        (torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]),
         {"parameterization": "multi-formation", "factor": 0}, "factor"),
    ],
)
def test_invalid_contents_rejected(images, labels, kwargs, match):
    with pytest.raises(ArtifactError, match=match):
        SyntheticSet(images, labels, NAMES, PRE1, **kwargs)


def test_soft_labels():
    k = len(NAMES)
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    s = SyntheticSet(torch.zeros(3, 1, 8, 8), soft, NAMES, PRE1)
    assert s.soft_labels
    assert torch.equal(s.hard_labels, torch.tensor([0, 2, 1]))
    assert s.ipc == 1 and len(s) == 3 and s.num_classes == k
    bad = soft.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ArtifactError, match="soft labels"):
        SyntheticSet(torch.zeros(3, 1, 8, 8), bad, NAMES, PRE1)


def test_properties_and_repr():
    s, _ = make_set(m_per_class=3)
    assert s.num_classes == 3 and not s.soft_labels and s.ipc == 3 and len(s) == 9
    assert s.image_shape == (1, 8, 8)
    assert "ipc=3" in repr(s) and "dm" in repr(s)
    unbalanced = SyntheticSet(torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 2]), NAMES, PRE1)
    assert unbalanced.ipc == 1


# ------------------------------------------------------------------------------ multi-formation


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_multi_formation_decode_shapes(factor):
    x = torch.randn(5, 3, 16, 16)
    out = multi_formation_decode(x, factor)
    assert out.shape == (5 * factor**2, 3, 16, 16)
    if factor == 1:
        assert out is x


def test_multi_formation_decode_content():
    # a 2x2 tiling of constant quadrants decodes to the 4 constants, row-major
    vals = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x = vals.repeat_interleave(4, 0).repeat_interleave(4, 1).view(1, 1, 8, 8)
    out = multi_formation_decode(x, 2)
    assert out.shape == (4, 1, 8, 8)
    for i, v in enumerate([1.0, 2.0, 3.0, 4.0]):
        torch.testing.assert_close(out[i], torch.full((1, 8, 8), v))
    # a general image: each patch upsampled bilinearly
    y = torch.randn(2, 2, 8, 8, generator=make_generator(0))
    out = multi_formation_decode(y, 2)
    patches = [y[:, :, :4, :4], y[:, :, :4, 4:], y[:, :, 4:, :4], y[:, :, 4:, 4:]]
    for j, p in enumerate(patches):
        up = F.interpolate(p, size=(8, 8), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[j::4], up)


def test_multi_formation_decode_not_divisible():
    with pytest.raises(ArtifactError, match="divisible"):
        multi_formation_decode(torch.zeros(1, 1, 9, 9), 2)


def test_multi_formation_set_decode_repeats_labels():
    x = torch.randn(3, 1, 8, 8)
    s = SyntheticSet(x, torch.tensor([0, 1, 2]), NAMES, PRE1, parameterization="multi-formation",
                     factor=2)
    xi, yi = s.decode()
    assert xi.shape == (12, 1, 8, 8)
    assert torch.equal(yi, torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    assert s.ipc == 4 and len(s) == 12
    ds = s.as_dataset()
    assert len(ds) == 12
    img, lab = ds[5]
    assert img.shape == (1, 8, 8) and int(lab) == 1
    # decode of a differentiable tensor passes gradients
    z = x.clone().requires_grad_(True)
    s.decode(z)[0].sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_as_dataset_plain():
    s, _ = make_set(m_per_class=2)
    ds = s.as_dataset()
    assert len(ds) == 6
    img, lab = ds[3]
    assert torch.equal(img, s.images[3]) and int(lab) == 1


# ------------------------------------------------------------------------------ export


@pytest.mark.parametrize("zca", [False, True])
def test_export_npz_round_trip(tmp_path, zca):
    pre = zca_preprocessing(channels=1, size=4) if zca else PRE1
    s, pixels = make_set(size=4, pre=pre)
    path = s.export_npz(tmp_path / "out" / "set.npz")
    assert path.is_file()
    with np.load(path) as z:
        pix, images, labels, names = z["pixels"], z["images"], z["labels"], z["class_names"]
    assert pix.dtype == np.float32 and pix.shape == (6, 1, 4, 4)
    assert pix.min() >= 0.0 and pix.max() <= 1.0
    np.testing.assert_allclose(pix, pixels.numpy(), atol=1e-4)
    np.testing.assert_array_equal(images, s.images.numpy())
    np.testing.assert_array_equal(labels, s.labels.numpy())
    assert list(names) == NAMES
    # pixels -> model input reproduces the stored images
    back = pre.apply(torch.from_numpy(pix))
    torch.testing.assert_close(back, s.images, atol=1e-3, rtol=0)


def test_export_npz_clips_pixels(tmp_path):
    x = torch.tensor([-100.0, 100.0]).view(2, 1, 1, 1).expand(2, 1, 4, 4).contiguous()
    s = SyntheticSet(x, torch.tensor([0, 1]), NAMES, PRE1)
    with np.load(s.export_npz(tmp_path / "c.npz")) as z:
        assert z["pixels"].min() == 0.0 and z["pixels"].max() == 1.0


@pytest.mark.parametrize("channels", [1, 3])
def test_export_imagefolder(tmp_path, channels):
    s, pixels = make_set(m_per_class=3, channels=channels, size=8)
    root = s.export_imagefolder(tmp_path / "folder")
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    assert [d.name for d in dirs] == ["000_zero", "001_one", "002_two"]
    for c, d in enumerate(dirs):
        files = sorted(d.glob("*.png"))
        assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png"]
        for i, f in enumerate(files):
            with Image.open(f) as im:
                assert im.size == (8, 8)
                assert im.mode == ("L" if channels == 1 else "RGB")
                arr = np.asarray(im)
            expected = (pixels[c * 3 + i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            if channels == 1:
                expected = expected[:, :, 0]
            assert np.abs(arr.astype(int) - expected.astype(int)).max() <= 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_export_imagefolder_soft_and_multi_formation(tmp_path):
    soft = torch.tensor([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05]])
    s = SyntheticSet(torch.randn(2, 1, 8, 8), soft, ["a/b", "c d", "e"], PRE1,
                     parameterization="multi-formation", factor=2)
    root = s.export_imagefolder(tmp_path / "f")
    counts = {d.name: len(list(d.glob("*.png"))) for d in root.iterdir()}
    assert counts == {"000_a_b": 4, "001_c_d": 4}


@pytest.mark.parametrize("channels", [1, 3])
def test_save_grid(tmp_path, channels):
    s, _ = make_set(m_per_class=2, channels=channels, size=8)
    path = s.save_grid(tmp_path / "grid.png", scale=2)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        # 3 rows of classes, 2 columns, 1-pixel padding, scale 2
        assert im.size == ((2 * 9 + 1) * 2, (3 * 9 + 1) * 2)
        assert im.mode == ("L" if channels == 1 else "RGB")


def test_save_grid_caps_columns(tmp_path):
    s, _ = make_set(m_per_class=12)
    with Image.open(s.save_grid(tmp_path / "g.png", max_per_class=10, scale=1)) as im:
        assert im.size == (10 * 9 + 1, 3 * 9 + 1)


def test_pixels_inverts_preprocessing():
    s, pixels = make_set(channels=3)
    torch.testing.assert_close(s.pixels(), pixels, atol=1e-5, rtol=0)
    assert math.isclose(float(s.pixels().min()), float(pixels.min()), abs_tol=1e-5)
