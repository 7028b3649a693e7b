"""The artifact: a synthetic set, independent of the method that made it.

A :class:`SyntheticSet` stores exactly what the network sees (the model-input space, i.e. after
normalisation and ZCA) together with the preprocessing that defines that space, so loading never
changes accuracy and exporting to pixels inverts the preprocessing and clips to [0, 1].
Parameterisations that store fewer tensors than they train on (IDC's multi-formation) keep their
compact tensor in ``images`` and expand it in :meth:`SyntheticSet.decode`.
"""

from __future__ import annotations

import gzip
import io
import json
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from datadistill.data.base import Preprocessing
from datadistill.errors import ArtifactError, DatadistillError
from datadistill.utils import atomic_path

FORMAT = "datadistill.SyntheticSet"
FORMAT_VERSION = 1
_GZIP_MAGIC = b"\x1f\x8b"
PARAMETERIZATIONS = ("plain", "multi-formation")


class SyntheticSet:
    """A distilled (synthetic) set.

    Args:
        images: (M, C, H, W) float32, finite. For ``parameterization="plain"`` the model-input
            images themselves; for ``"multi-formation"`` the compact stored images (each decodes
            into ``factor**2`` images, IDC).
        labels: hard labels (M,) int64 in [0, num_classes), or soft labels (M, K) float32.
        class_names: K names.
        preprocessing: the map from pixels in [0, 1] to the model-input space.
        parameterization: ``"plain"`` or ``"multi-formation"``.
        factor: multi-formation factor f (1 for plain).
        lr: an optional learned learning rate (float).
        meta: JSON-serialisable metadata: method, config, seed, dataset, checksum, wall time,
            library versions.
        initial: optional (M, C, H, W) float32, the images before optimisation (same shape as
            ``images``); kept by image-optimising methods for the update-signal diagnostic
            (``images - initial``, EDD Figure 1). Saved with the set when present.

    Raises:
        ArtifactError: wrong shapes or dtypes, labels out of range, NaN/Inf values.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        class_names: list[str],
        preprocessing: Preprocessing,
        *,
        parameterization: str = "plain",
        factor: int = 1,
        lr: float | None = None,
        meta: Mapping[str, Any] | None = None,
        initial: Tensor | None = None,
    ) -> None:
        if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
            raise ArtifactError("images and labels must be torch tensors")
        if not isinstance(preprocessing, Preprocessing):
            raise ArtifactError("preprocessing must be a datadistill.data.Preprocessing")
        self.images = images.detach().float().cpu().contiguous()
        labels = labels.detach().cpu()
        if labels.dim() == 1 and not labels.is_floating_point() and labels.dtype != torch.bool:
            labels = labels.long()
        self.labels = labels
        self.class_names = list(class_names)
        self.preprocessing = preprocessing
        self.parameterization = parameterization
        self.factor = int(factor)
        self.lr = None if lr is None else float(lr)
        self.meta: dict[str, Any] = dict(meta or {})
        self.initial = None if initial is None else initial.detach().float().cpu().contiguous()
        self.validate()

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.class_names)

    @property
    def soft_labels(self) -> bool:
        """Whether the labels are (M, K) float targets (FRePo's learned labels) rather than
        (M,) int64 class indices."""
        return self.labels.dim() == 2

    @property
    def hard_labels(self) -> Tensor:
        """(M,) int64: the labels, or the arg-max of soft labels."""
        return self.labels.argmax(1) if self.soft_labels else self.labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the decoded (training) images."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def ipc(self) -> int:
        """Decoded images per class (the smallest class count when unbalanced)."""
        counts = torch.bincount(self.hard_labels, minlength=self.num_classes)
        return int(counts.min()) * self.factor**2

    @property
    def stored_ipc(self) -> int:
        """Stored images per class: the storage budget the field calls IPC (IDC's IPC 10 with
        factor 2 stores 10 images per class and decodes 40); equals :attr:`ipc` for plain sets."""
        counts = torch.bincount(self.hard_labels, minlength=self.num_classes)
        return int(counts.min())

    def __len__(self) -> int:
        return self.images.shape[0] * self.factor**2

    def __repr__(self) -> str:
        return (
            f"SyntheticSet({self.meta.get('method', '?')} on {self.meta.get('dataset', '?')}, "
            f"ipc={self.ipc}, {len(self)} images {self.image_shape}, "
            f"{'soft' if self.soft_labels else 'hard'} labels, {self.parameterization})"
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check shapes, dtypes, label range and finiteness; raise ArtifactError if wrong."""
        x, y = self.images, self.labels
        if x.dim() != 4:
            raise ArtifactError(f"synthetic images must be (M, C, H, W), got shape {tuple(x.shape)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ArtifactError(
                f"unknown parameterization {self.parameterization!r}; valid: {PARAMETERIZATIONS}"
            )
        if self.factor < 1 or (self.parameterization == "plain" and self.factor != 1):
            raise ArtifactError(f"factor {self.factor} is invalid for {self.parameterization}")
        if y.dim() == 1:
            if y.dtype != torch.int64:
                raise ArtifactError(f"hard labels must be int64, got {y.dtype}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ArtifactError(f"labels must lie in [0, {self.num_classes}); got {y.unique()}")
        elif y.dim() == 2:
            if y.shape[1] != self.num_classes or not y.is_floating_point():
                raise ArtifactError(f"soft labels must be float (M, {self.num_classes})")
        else:
            raise ArtifactError(f"labels must be (M,) or (M, K), got shape {tuple(y.shape)}")
        if y.shape[0] != x.shape[0]:
            raise ArtifactError(f"{x.shape[0]} images but {y.shape[0]} labels")
        if x.shape[1] != self.preprocessing.channels:
            raise ArtifactError(
                f"images have {x.shape[1]} channels, preprocessing {self.preprocessing.channels}"
            )
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise ArtifactError(
                f"synthetic images contain {bad} NaN/Inf values; the distillation diverged: "
                "lower the image learning rate (--lr-img) or use a checkpoint from before"
            )
        if y.is_floating_point() and not torch.isfinite(y).all():
            raise ArtifactError("soft labels contain NaN/Inf values")
        if self.initial is not None and (
            self.initial.shape != x.shape or not torch.isfinite(self.initial).all()
        ):
            raise ArtifactError(
                f"initial images must be finite and shaped like the images {tuple(x.shape)}, got "
                f"{tuple(self.initial.shape)}"
            )

    # ------------------------------------------------------------------ decoding
    def decode(self, images: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Training images and labels: ``(N, C, H, W)`` float32 and ``(N,)`` or ``(N, K)``.

        For multi-formation (IDC, Kim et al. 2022) each stored image is split into an f x f grid of
        patches, each upsampled (bilinear) back to full size; labels repeat f^2 times. ``images``
        may be a differentiable tensor of the stored shape (used during distillation).
        """
        x = self.images if images is None else images
        if self.parameterization == "plain":
            return x, self.labels
        return multi_formation_decode(x, self.factor), self.labels.repeat_interleave(
            self.factor**2, dim=0
        )

    def as_dataset(self) -> TensorDataset:
        """A ``TensorDataset`` of decoded (model-input) images and labels for any torch loop."""
        x, y = self.decode()
        return TensorDataset(x, y)

    def pixels(self) -> Tensor:
        """Decoded images in pixel space: (N, C, H, W) float32 in [0, 1]."""
        return self.preprocessing.invert(self.decode()[0])

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "images": self.images,
            "labels": self.labels,
            "class_names": self.class_names,
            "preprocessing": self.preprocessing.to_dict(),
            "parameterization": self.parameterization,
            "factor": self.factor,
            "lr": self.lr,
            "meta_json": json.dumps(self.meta, default=str),
            **({} if self.initial is None else {"initial": self.initial}),
        }

    def save(self, path: str | Path, compress: bool = False) -> Path:
        """Write the set to ``path`` (``.pt``) atomically: a crash never leaves a partial file.

        ``compress=True`` gzips the file (lossless; :meth:`load` detects it). It saves little on
        trained images but about half on sets that keep their real-image ``initial`` tensor,
        e.g. to fit a repository's file-size limit.
        """
        path = Path(path)
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        data = gzip.compress(buf.getvalue(), mtime=0) if compress else buf.getvalue()
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SyntheticSet:
        """Load a set written by :meth:`save`, gzipped or not.

        Raises:
            ArtifactError: missing, truncated or corrupt file, another format, a newer version,
                or invalid contents (NaN/Inf, bad shapes).
        """
        path = Path(path)
        if path.is_dir() and (path / "synset.pt").exists():
            path = path / "synset.pt"
        if not path.is_file():
            raise ArtifactError(f"no synthetic set at {path}: pass the synset.pt of a run folder")
        try:
            raw = path.read_bytes()
            if raw[:2] == _GZIP_MAGIC:
                raw = gzip.decompress(raw)
            d = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for truncated/corrupt zip files
            raise ArtifactError(
                f"{path} is not a readable synthetic set (truncated or corrupt: {e.__class__.__name__}"
                f": {str(e).partition(chr(10))[0][:200]}); re-run the distillation or restore a copy"
            ) from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ArtifactError(f"{path} is not a datadistill synthetic set (no {FORMAT} header)")
        version = d.get("version")
        if not isinstance(version, int):
            raise ArtifactError(f"{path} has no valid format version; re-run the distillation")
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"{path} has format version {version}, this datadistill reads up to "
                f"{FORMAT_VERSION}: upgrade datadistill"
            )
        try:
            return cls(
                d["images"],
                d["labels"],
                d["class_names"],
                Preprocessing.from_dict(d["preprocessing"]),
                parameterization=d["parameterization"],
                factor=d["factor"],
                lr=d["lr"],
                meta=json.loads(d["meta_json"]),
                initial=d.get("initial"),
            )
        except DatadistillError as e:
            raise ArtifactError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(
                f"{path} is damaged or incomplete ({e!r}); re-run the distillation"
            ) from None

    # ------------------------------------------------------------------ export
    def export_npz(self, path: str | Path) -> Path:
        """Write ``.npz`` with ``pixels`` (N, C, H, W) float32 in [0, 1], ``images`` (the
        model-input tensors), ``labels`` and ``class_names``; atomic."""
        x, y = self.decode()
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            pixels=self.preprocessing.invert(x).numpy(),
            images=x.numpy(),
            labels=y.numpy(),
            class_names=np.array(self.class_names),
        )
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
        return Path(path)

    def export_imagefolder(self, root: str | Path) -> Path:
        """Write one PNG per decoded image under ``root/<class name>/<index>.png`` (pixels, 8-bit).

        Soft labels are exported by their arg-max class. Each file is written atomically.
        """
        from PIL import Image

        root = Path(root)
        pix = (self.pixels() * 255).round().to(torch.uint8)
        labels = self.decode()[1]
        hard = labels.argmax(1) if labels.dim() == 2 else labels
        counters: dict[int, int] = {}
        for img, c in zip(pix, hard.tolist(), strict=True):
            i = counters[c] = counters.get(c, -1) + 1
            arr = img.permute(1, 2, 0).numpy()
            im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
            with atomic_path(root / _safe_name(self.class_names[c], c) / f"{i:05d}.png") as tmp:
                im.save(tmp, format="PNG")
        return root

    def save_grid(self, path: str | Path, max_per_class: int = 10, scale: int = 2) -> Path:
        """A PNG grid: one row per class, up to ``max_per_class`` decoded images, in pixels."""
        from PIL import Image

        pix = self.pixels()
        labels = self.decode()[1]
        hard = labels.argmax(1) if labels.dim() == 2 else labels
        c, h, w = pix.shape[1:]
        cols = max(1, min(max_per_class, int(torch.bincount(hard).max())))
        pad = 1
        canvas = torch.ones(c, self.num_classes * (h + pad) + pad, cols * (w + pad) + pad)
        for k in range(self.num_classes):
            for j, i in enumerate((hard == k).nonzero().flatten()[:cols].tolist()):
                top, left = pad + k * (h + pad), pad + j * (w + pad)
                canvas[:, top : top + h, left : left + w] = pix[i]
        arr = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        im = Image.fromarray(arr[:, :, 0] if c == 1 else arr)
        if scale > 1:
            im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
        with atomic_path(path) as tmp:
            im.save(tmp, format="PNG")
        return Path(path)


def multi_formation_decode(x: Tensor, factor: int) -> Tensor:
    """IDC multi-formation: (M, C, H, W) -> (M * f^2, C, H, W).

    Each image is cut into an f x f grid of (H/f, W/f) patches, ordered row-major, and every
    patch is upsampled bilinearly back to (H, W) (Kim et al. 2022, ``decode_zoom`` of the original
    code). H and W must be divisible by f.
    """
    if factor == 1:
        return x
    m, c, h, w = x.shape
    if h % factor or w % factor:
        raise ArtifactError(f"image size {h}x{w} is not divisible by the factor {factor}")
    ph, pw = h // factor, w // factor
    patches = x.reshape(m, c, factor, ph, factor, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(m * factor * factor, c, ph, pw)
    return F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)


def library_versions() -> dict[str, str]:
    """Versions recorded in each artifact's metadata."""
    from datadistill import __version__

    return {
        "datadistill": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _safe_name(name: str, index: int) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"
    return f"{index:03d}_{s}"
