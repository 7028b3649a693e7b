"""Readers for the on-disk dataset formats: IDX (MNIST-like), CIFAR pickles, image folders.

Every reader returns numpy arrays (pixels ``(N, C, H, W)`` uint8 in ``[0, 255]`` or float32 in
``[0, 1]``; labels ``(N,)`` int64) and raises :class:`DataError` whose message says what to do
when files are missing, truncated or corrupt. Nothing is downloaded and nothing is cached.
"""

from __future__ import annotations

import codecs
import gzip
import os
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from datadistill.errors import DataError

__all__ = [
    "RawData",
    "read_idx",
    "read_mnist_like",
    "read_cifar",
    "read_imagefolder",
    "read_digits",
    "FASHION_MNIST_CLASSES",
    "DIGIT_CLASSES",
    "SYSTEM_DATA_DIRS",
]

PathLike = str | os.PathLike

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DIGIT_CLASSES = [str(i) for i in range(10)]

# System-wide dataset folders (Debian's dataset-* packages install under /usr/share/datasets).
# A module attribute so tests can point it elsewhere.
SYSTEM_DATA_DIRS: list[Path] = [Path("/usr/share/datasets")]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class RawData(NamedTuple):
    """A dataset as read from disk, before conversion to tensors.

    ``*_images``: ``(N, C, H, W)`` uint8 (0..255) or float32 (0..1); ``*_labels``: ``(N,)`` int64;
    ``class_names`` in label order; ``source``: where it was read from (for messages).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    source: str


# ----------------------------------------------------------------------------------- IDX

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_REDOWNLOAD = (
    "re-install the package that provides it or download the file again (and pass --data-root DIR)"
)


def _read_bytes(path: Path) -> bytes:
    """All bytes of ``path``, transparently un-gzipped (by magic bytes, not only by suffix)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(
            f"cannot read {path}: {e.strerror or e}; check the path and permissions"
        ) from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path} is truncated (incomplete gzip stream); {_REDOWNLOAD}") from None
    except (OSError, zlib.error) as e:
        raise DataError(f"{path} is a corrupt gzip file ({e}); {_REDOWNLOAD}") from None


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), plain or gzipped.

    Returns an array of the dtype and shape given by its header, in native byte order (uint8
    ``(N, 28, 28)`` for MNIST images, uint8 ``(N,)`` for labels). Raises DataError when the file
    is missing, has a bad magic number, or its payload does not match the header (truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} not found; pass --data-root DIR pointing at its folder")
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path} is truncated (no IDX header); {_REDOWNLOAD}")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataError(
            f"{path} is not an IDX file (bad magic number {data[:4].hex()}); {_REDOWNLOAD}"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated (incomplete IDX header); {_REDOWNLOAD}")
    dims = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header
    if payload < expected:
        raise DataError(
            f"{path} is truncated: header {dims} needs {expected} bytes of data, found {payload}; "
            f"{_REDOWNLOAD}"
        )
    if payload > expected:
        raise DataError(
            f"{path} is corrupt: {payload - expected} bytes after the data announced by its "
            f"header {dims}; {_REDOWNLOAD}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # astype copies into native byte order and gives a writable array (torch.from_numpy-safe).
    return arr.astype(dtype.newbyteorder("="))


_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# torchvision's folder for each dataset: root/<folder>/raw.
_TORCHVISION_DIRS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_APT_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}


def _find_files(folder: Path) -> dict[str, Path | None]:
    found: dict[str, Path | None] = {}
    for key, stem in _MNIST_FILES.items():
        found[key] = next(
            (folder / f for f in (stem, stem + ".gz") if (folder / f).is_file()), None
        )
    return found


def read_mnist_like(root: PathLike | None, name: str) -> RawData:
    """Read MNIST or Fashion-MNIST (``name`` = ``"mnist"`` | ``"fashion-mnist"``) from IDX files.

    Looks for the four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``) in, in order:
    ``root``, ``root/<name>``, ``root/FashionMNIST/raw`` or ``root/MNIST/raw`` (torchvision
    layout), then ``/usr/share/datasets/<name>/`` (Debian package ``dataset-fashion-mnist``).
    Returns uint8 images ``(N, 1, 28, 28)`` and int64 labels in 0..9 (60000 / 10000 for the
    official files). Raises DataError listing the paths searched when nothing is found, or
    when a file is truncated / corrupt / inconsistent.
    """
    if name not in _TORCHVISION_DIRS:
        raise DataError(
            f"read_mnist_like: unknown dataset {name!r}; use 'mnist' or 'fashion-mnist'"
        )
    candidates: list[Path] = []
    if root is not None:
        root = Path(root).expanduser()
        candidates += [root, root / name, root / _TORCHVISION_DIRS[name] / "raw"]
    candidates += [Path(d) / name for d in SYSTEM_DATA_DIRS]

    partial: list[str] = []
    for folder in candidates:
        found = _find_files(folder) if folder.is_dir() else {}
        if found and all(found.values()):
            return _read_mnist_folder(found, name, folder)
        if found and any(found.values()):
            missing = [_MNIST_FILES[k] for k, v in found.items() if v is None]
            partial.append(f"{folder} lacks {', '.join(missing)}")

    lines = [f"{name} not found. Searched:"] + [f"  {c}" for c in candidates]
    if partial:
        lines.append("Incomplete folders: " + "; ".join(partial))
    if name in _APT_PACKAGES:
        lines.append(f"On Debian/Ubuntu: sudo apt-get install {_APT_PACKAGES[name]}")
        lines.append("Otherwise download the four IDX files")
    else:
        lines.append("Download the four IDX files")
    lines[-1] += (
        f" ({', '.join(s + '.gz' for s in _MNIST_FILES.values())}) into a folder DIR and pass "
        "--data-root DIR."
    )
    raise DataError("\n".join(lines))


def _read_mnist_folder(files: dict[str, Path | None], name: str, folder: Path) -> RawData:
    arrays = {k: read_idx(p) for k, p in files.items() if p is not None}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        xp, yp = files[f"{split}_images"], files[f"{split}_labels"]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(f"{xp}: expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
        if y.ndim != 1:
            raise DataError(f"{yp}: expected labels (N,), got shape {y.shape}")
        if len(x) != len(y):
            raise DataError(
                f"{xp} holds {len(x)} images but {yp} holds {len(y)} labels; the files do not "
                f"belong together, {_REDOWNLOAD}"
            )
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{yp}: labels must be 0..9, found {y.min()}..{y.max()}; {_REDOWNLOAD}")
    names = FASHION_MNIST_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    return RawData(
        arrays["train_images"][:, None],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"][:, None],
        arrays["test_labels"].astype(np.int64),
        list(names),
        str(folder),
    )


# ---------------------------------------------------------------------------------- CIFAR

_CIFAR = {
    # which -> (folder, train files, test file, meta file, names key, labels key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        "label_names",
        "labels",
        10,
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        "test",
        "meta",
        "fine_label_names",
        "fine_labels",
        100,
    ),
}
_CIFAR_URL = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}


def _numpy_unpickle_allowlist() -> dict[tuple[str, str], Any]:
    # The objects numpy arrays pickle to, resolved from the running numpy so that files written
    # by numpy 1.x ("numpy.core...") and 2.x ("numpy._core...") both load.
    arr = np.zeros(1, dtype=np.uint8)
    reconstruct = arr.__reduce__()[0]
    frombuffer = arr.__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # Python 3 writes bytes at protocol <= 2 as _codecs.encode(str, "latin1"): harmless.
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a dataset file must not run code."""

    _allowed = _numpy_unpickle_allowlist()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            # latin1 decodes the Python 2 strings of the official files, numpy's advice.
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # any unpickling failure (many kinds) means a bad file
        raise DataError(
            f"{path} is corrupt or truncated ({type(e).__name__}: {e}); extract the official "
            "archive again"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch (a pickled dict); extract the archive again")
    # Keys are str with latin1 decoding, but bytes if the file was written that way.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _get(d: dict[str, Any], key: str, path: Path) -> Any:
    if key not in d:
        raise DataError(f"{path} has no {key!r} entry: not an official CIFAR file")
    return d[key]


def _read_cifar_batches(paths: Sequence[Path], labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for p in paths:
        d = _load_pickle(p)
        x = np.asarray(_get(d, "data", p))
        y = np.asarray(_get(d, labels_key, p))
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
            raise DataError(
                f"{p}: expected data (N, 3072) uint8, got {x.dtype} {x.shape}; extract again"
            )
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{p}: {len(x)} images but labels of shape {y.shape}; extract again")
        # Rows are the 1024 red, then green, then blue values, each row-major: CHW.
        images.append(x.reshape(-1, 3, 32, 32))
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_cifar(root: PathLike | None, which: str) -> RawData:
    """Read CIFAR-10 / CIFAR-100 (``which`` = ``"cifar10"`` | ``"cifar100"``) python batches.

    ``root`` may be the extracted folder itself (``cifar-10-batches-py`` with ``data_batch_1..5``,
    ``test_batch``, ``batches.meta``; ``cifar-100-python`` with ``train``, ``test``, ``meta``) or
    its parent; without ``root``, ``/usr/share/datasets/<which>`` is tried. Returns uint8
    ``(N, 3, 32, 32)`` images, int64 labels (CIFAR-100: the fine labels) and the class names from
    the meta file. Pickles are loaded with an allow-list (numpy arrays only). Raises DataError
    when the files are missing, corrupt or inconsistent.
    """
    if which not in _CIFAR:
        raise DataError(f"read_cifar: unknown dataset {which!r}; use 'cifar10' or 'cifar100'")
    folder_name, train_files, test_file, meta_file, names_key, labels_key, k = _CIFAR[which]
    bases: list[Path] = []
    if root is not None:
        bases.append(Path(root).expanduser())
    bases += [Path(d) / which for d in SYSTEM_DATA_DIRS]
    candidates = [c for b in bases for c in (b, b / folder_name)]
    needed = [*train_files, test_file, meta_file]
    folder = next((c for c in candidates if all((c / f).is_file() for f in needed)), None)
    if folder is None:
        raise DataError(
            f"{which} not found. Searched:\n"
            + "".join(f"  {c}\n" for c in candidates)
            + f"Each needs the files {', '.join(needed)}. Download {_CIFAR_URL[which]}, "
            f"extract it into a folder DIR and pass --data-root DIR."
        )
    meta_path = folder / meta_file
    names = [
        n.decode() if isinstance(n, bytes) else str(n)
        for n in _get(_load_pickle(meta_path), names_key, meta_path)
    ]
    if len(names) != k:
        raise DataError(f"{meta_path}: expected {k} class names, found {len(names)}")
    x_tr, y_tr = _read_cifar_batches([folder / f for f in train_files], labels_key)
    x_te, y_te = _read_cifar_batches([folder / test_file], labels_key)
    for y, where in ((y_tr, "training"), (y_te, "test")):
        if y.size and (y.min() < 0 or y.max() >= k):
            raise DataError(f"{folder}: {where} labels outside 0..{k - 1}; extract again")
    return RawData(x_tr, y_tr, x_te, y_te, names, str(folder))


# ---------------------------------------------------------------------------- imagefolder


def _class_dirs(folder: Path) -> dict[str, list[Path]]:
    """class name -> sorted image files directly inside ``folder/<class>/``."""
    out: dict[str, list[Path]] = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(
            f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        if files:
            out[d.name] = files
    return out


def _load_images(files: Sequence[Path], im_size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), im_size, im_size, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if im.size != (im_size, im_size):
                    im = im.resize((im_size, im_size), Image.Resampling.BICUBIC)
                out[i] = np.asarray(im)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"cannot decode image {f} ({e}); remove or replace it") from None
    return out.transpose(0, 3, 1, 2).copy()  # NHWC -> NCHW


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask: round(fraction * n_c) images of each class (>= 1 if n_c >= 2)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(fraction * len(idx)))
        n_test = min(max(n_test, 1), len(idx) - 1) if len(idx) >= 2 else 0
        test[rng.permutation(idx)[:n_test]] = True
    return test


def read_imagefolder(root: PathLike | None, im_size: int, seed: int = 0) -> RawData:
    """Read a class-per-folder tree of ``.png`` / ``.jpg`` / ``.jpeg`` images.

    Layout: ``root/train/<class>/*`` with ``root/val/<class>/*`` (or, when there is no ``val``,
    ``root/test/<class>/*``) as the test split. Without a ``train`` folder the whole tree
    ``root/<class>/*`` is used (likewise ``train`` alone) and a deterministic stratified 10% of
    each class (by ``seed``) becomes the test split. Class order = sorted folder names of the
    training tree; folders without images are ignored. Images are converted to RGB and resized
    to ``im_size`` x ``im_size`` (bicubic). Returns uint8 ``(N, 3, im_size, im_size)`` and int64
    labels. Raises DataError when the tree is missing or empty, a test class is unknown, or an
    image cannot be decoded.
    """
    if root is None:
        raise DataError("imagefolder needs a folder: pass --data-root DIR (DIR/<class>/*.png)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} not found; pass --data-root DIR (DIR/<class>/*.png)")
    if int(im_size) < 1:
        raise DataError(f"imagefolder: im_size must be positive, got {im_size}")
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = next(
        (root / s for s in ("val", "test") if train_dir != root and (root / s).is_dir()), None
    )
    train = _class_dirs(train_dir)
    if not train:
        raise DataError(
            f"no images found under {train_dir}/<class>/ ({', '.join(IMAGE_EXTENSIONS)}); "
            "expected one folder per class"
        )
    class_names = sorted(train)
    index = {c: i for i, c in enumerate(class_names)}
    files = [f for c in class_names for f in train[c]]
    labels = np.array([index[c] for c in class_names for _ in train[c]], dtype=np.int64)
    if test_dir is None:
        is_test = _stratified_split(labels, 0.1, seed)
        test_files = [f for f, t in zip(files, is_test, strict=True) if t]
        files = [f for f, t in zip(files, is_test, strict=True) if not t]
        test_labels, labels = labels[is_test], labels[~is_test]
    else:
        test = _class_dirs(test_dir)
        unknown = sorted(set(test) - set(index))
        if unknown:
            raise DataError(
                f"{test_dir} has classes absent from {train_dir}: {', '.join(unknown)}; "
                "every test class needs a training folder"
            )
        test_files = [f for c in class_names for f in test.get(c, [])]
        test_labels = np.array(
            [index[c] for c in class_names for _ in test.get(c, [])], dtype=np.int64
        )
    return RawData(
        _load_images(files, int(im_size)),
        labels,
        _load_images(test_files, int(im_size)),
        test_labels,
        class_names,
        str(root),
    )


# --------------------------------------------------------------------------------- digits


def read_digits(seed: int = 0) -> RawData:
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled with scikit-learn).

    Values 0..16 are divided by 16 -> float32 in ``[0, 1]``, shape ``(N, 1, 8, 8)``. Fixed
    stratified split ``train_test_split(test_size=0.3, stratify=y, random_state=seed)``:
    1257 train / 540 test images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    return RawData(x_tr, y_tr, x_te, y_te, list(DIGIT_CLASSES), "sklearn.datasets.load_digits")
