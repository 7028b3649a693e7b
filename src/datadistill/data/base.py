"""The real dataset in model-input space, and the preprocessing that maps pixels to it.

Pixels are float images in ``[0, 1]`` of shape ``(N, C, H, W)``. The network sees
``Preprocessing.apply(pixels)``: per-channel normalisation, then optional ZCA whitening. A
synthetic set stores its ``Preprocessing`` (``to_dict``) so it can be exported back to pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from datadistill.errors import ConfigError, DataError

__all__ = ["ZCA", "Preprocessing", "RealDataset"]


def _flatten_batch(x: Tensor, d: int, what: str) -> Tensor:
    """``(N, ...)`` -> ``(N, d)``; ConfigError when the per-sample size is not ``d``."""
    per_sample = 1
    for s in x.shape[1:]:
        per_sample *= s
    if x.dim() < 2 or per_sample != d:
        raise ConfigError(
            f"ZCA.{what}: expected a batch (N, C, H, W) with C*H*W = {d}, "
            f"got shape {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], d)


@dataclass(frozen=True, eq=False)
class ZCA:
    """ZCA whitening fitted on a set of (normalised) images.

    ``apply(x) = (x - mean) @ transform.T`` per flattened sample, ``invert`` undoes it. With
    ``D = C*H*W``: ``mean`` is ``(D,)``, ``transform`` (W) and ``inverse`` (W^-1) are ``(D, D)``,
    all float32 on the CPU (copies are cached per device/dtype on first use). The mean is not
    added back after whitening, as in the KIP / FRePo / MTT (kornia) implementations.
    """

    mean: Tensor
    transform: Tensor
    inverse: Tensor
    # Per (device, dtype) copies of (mean, transform, inverse): moving a 3072x3072 matrix to the
    # GPU on every call would dominate the cost of whitening a batch.
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("mean", "transform", "inverse"):
            if not isinstance(getattr(self, name), Tensor):
                raise ConfigError(f"ZCA.{name} must be a torch.Tensor")
        d = self.mean.numel()
        if self.mean.dim() != 1 or self.transform.shape != (d, d) or self.inverse.shape != (d, d):
            raise ConfigError(
                "ZCA: expected mean (D,), transform (D, D), inverse (D, D); got "
                f"{tuple(self.mean.shape)}, {tuple(self.transform.shape)}, "
                f"{tuple(self.inverse.shape)}"
            )
        for name in ("mean", "transform", "inverse"):
            t = getattr(self, name).detach().to("cpu", torch.float32).contiguous()
            if not torch.isfinite(t).all():
                raise ConfigError(f"ZCA.{name} holds NaN or infinite values")
            object.__setattr__(self, name, t)

    @property
    def dim(self) -> int:
        """D = C*H*W, the flattened sample size."""
        return self.mean.numel()

    @classmethod
    def fit(cls, x: Tensor, reg: float = 0.1) -> ZCA:
        """Fit on ``x`` ``(N, C, H, W)`` float (usually already normalised per channel).

        The covariance ``X_c^T X_c / N`` is regularised with ``reg * trace / D`` on the diagonal
        before the eigendecomposition (KIP / FRePo / MTT use ``reg = 0.1``, REFERENCE.md), so
        ``W = U diag((s + reg*trace/D)^-1/2) U^T``. Math in float64, results float32 on the CPU.
        Cost: ``O(N D^2 + D^3)``; fine for D = 3072 (CIFAR), slow beyond ~10k.

        Raises ConfigError for fewer than 2 samples, a negative ``reg`` or non-finite values.
        """
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ConfigError(f"ZCA.fit needs a batch of at least 2 images, got {shape}")
        if not reg >= 0:
            raise ConfigError(f"ZCA.fit: reg must be >= 0, got {reg}")
        flat = x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64)
        if not torch.isfinite(flat).all():
            raise ConfigError("ZCA.fit: the images hold NaN or infinite values")
        n, d = flat.shape
        mean = flat.mean(dim=0)
        centred = flat - mean
        cov = centred.T @ centred / n
        cov.diagonal().add_(reg * cov.diagonal().sum() / d)
        evals, evecs = torch.linalg.eigh(cov)
        # Regularisation keeps eigenvalues positive unless reg = 0 and the data are degenerate.
        evals = evals.clamp_min(torch.finfo(torch.float64).tiny)
        transform = (evecs * evals.rsqrt()) @ evecs.T
        inverse = (evecs * evals.sqrt()) @ evecs.T
        return cls(mean.float(), transform.float(), inverse.float())

    def _on(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = tuple(
                t.to(device=like.device, dtype=like.dtype)
                for t in (self.mean, self.transform, self.inverse)
            )
        return self._cache[key]

    def apply(self, x: Tensor) -> Tensor:
        """Whiten ``x`` ``(N, C, H, W)`` (C*H*W = D) -> same shape and dtype, one matmul.

        Raises ConfigError when the per-sample size is not D.
        """
        flat = _flatten_batch(x, self.dim, "apply")
        mean, w, _ = self._on(x)
        return ((flat - mean) @ w.T).reshape(x.shape)

    def invert(self, x: Tensor) -> Tensor:
        """Undo :meth:`apply`: ``x @ inverse.T + mean`` -> same shape and dtype."""
        flat = _flatten_batch(x, self.dim, "invert")
        mean, _, w_inv = self._on(x)
        return (flat @ w_inv.T + mean).reshape(x.shape)

    def to_dict(self) -> dict[str, Tensor]:
        """``{"mean", "transform", "inverse"}`` -> CPU float32 tensors (``torch.save`` friendly)."""
        return {"mean": self.mean, "transform": self.transform, "inverse": self.inverse}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ZCA:
        """Inverse of :meth:`to_dict`; raises ConfigError on missing keys or bad shapes."""
        try:
            return cls(*(torch.as_tensor(d[k]) for k in ("mean", "transform", "inverse")))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"ZCA.from_dict: invalid ZCA record ({e!r})") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ZCA):
            return NotImplemented
        return all(
            torch.equal(a, b)
            for a, b in zip(
                (self.mean, self.transform, self.inverse),
                (other.mean, other.transform, other.inverse),
                strict=True,
            )
        )

    def __hash__(self) -> int:  # consistent with value equality, cheap
        return hash((self.dim, float(self.mean.sum())))

    def __repr__(self) -> str:
        return f"ZCA(dim={self.dim})"


@dataclass(frozen=True)
class Preprocessing:
    """Pixels ``[0, 1]`` -> model input: ``(p - mean) / std`` per channel, then ZCA if set.

    ``mean`` / ``std`` are per-channel tuples of floats (e.g. the normalisation constants of the
    original DC code, see ``datadistill.data.registry``).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    zca: ZCA | None = None

    def __post_init__(self) -> None:
        try:
            mean = tuple(float(m) for m in self.mean)
            std = tuple(float(s) for s in self.std)
        except (TypeError, ValueError):
            raise ConfigError(
                f"Preprocessing: mean and std must be sequences of numbers, got "
                f"{self.mean!r} and {self.std!r}"
            ) from None
        if not mean or len(mean) != len(std):
            raise ConfigError(
                f"Preprocessing: mean and std need one value per channel, got {mean} and {std}"
            )
        if not all(s > 0 for s in std):
            raise ConfigError(f"Preprocessing: std must be positive, got {std}")
        if self.zca is not None:
            if not isinstance(self.zca, ZCA):
                raise ConfigError(f"Preprocessing.zca must be a ZCA or None, got {self.zca!r}")
            if self.zca.dim % len(mean):
                raise ConfigError(
                    f"Preprocessing: ZCA dimension {self.zca.dim} is not a multiple of the "
                    f"{len(mean)} channels"
                )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        """Image channels C (1 for grey, 3 for colour)."""
        return len(self.mean)

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ConfigError(
                f"Preprocessing: expected images (N, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        dtype = x.dtype if x.is_floating_point() else torch.float32
        mean = torch.tensor(self.mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
        return mean, std

    def apply(self, pixels: Tensor) -> Tensor:
        """``pixels`` ``(N, C, H, W)`` float in ``[0, 1]`` -> model input, same shape.

        Integer input is converted to float32 as is (it is NOT divided by 255). Raises
        ConfigError when the channel count does not match ``mean``.
        """
        mean, std = self._stats(pixels)
        x = (pixels.to(mean.dtype) - mean).div_(std)
        return self.zca.apply(x) if self.zca is not None else x

    def invert(self, x: Tensor) -> Tensor:
        """Model input ``(N, C, H, W)`` -> pixels in ``[0, 1]`` (clamped), same shape."""
        mean, std = self._stats(x)
        x = x.to(mean.dtype)
        if self.zca is not None:
            x = self.zca.invert(x)
        return (x * std + mean).clamp(0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """``{"mean": [..], "std": [..], "zca": None | {name: Tensor}}`` (json for no ZCA)."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "zca": self.zca.to_dict() if self.zca is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; raises ConfigError on a malformed record."""
        if not isinstance(d, Mapping) or "mean" not in d or "std" not in d:
            raise ConfigError(f"Preprocessing.from_dict: expected keys 'mean' and 'std', got {d!r}")
        zca = d.get("zca")
        return cls(
            tuple(d["mean"]),
            tuple(d["std"]),
            ZCA.from_dict(zca) if zca is not None else None,
        )

    def describe(self) -> str:
        """One line, e.g. ``"normalised mean=(0.2861,) std=(0.353,)"`` (+ ``" + ZCA"``)."""
        text = f"normalised mean={self.mean} std={self.std}"
        return text + " + ZCA" if self.zca is not None else text


class RealDataset:
    """The real set, in model-input space.

    Attributes:
        images: ``(N, C, H, W)`` float32, already preprocessed (what the network sees).
        labels: ``(N,)`` int64 in ``[0, num_classes)``.
        class_names: one name per class, in label order.
        preprocessing: how ``images`` were made from pixels (``invert`` gives pixels back).
        name: dataset name, e.g. ``"fashion-mnist"``.
        split: ``"train"`` or ``"test"``.
        indices_by_class: per class, the int64 indices (ascending) of its images.

    The constructor validates its inputs and raises DataError with a clear message.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        class_names: Sequence[str],
        preprocessing: Preprocessing,
        name: str,
        split: str,
    ) -> None:
        where = f"dataset {name!r} ({split})"
        if not isinstance(images, Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise DataError(f"{where}: images must be a 4-D tensor (N, C, H, W), got {shape}")
        if not images.is_floating_point():
            raise DataError(f"{where}: images must be a float tensor, got {images.dtype}")
        if not isinstance(labels, Tensor) or labels.dim() != 1:
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise DataError(f"{where}: labels must be a 1-D tensor (N,), got {shape}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise DataError(f"{where}: labels must be an integer tensor, got {labels.dtype}")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
        class_names = [str(c) for c in class_names]
        if not class_names:
            raise DataError(f"{where}: class_names is empty")
        if not isinstance(preprocessing, Preprocessing):
            raise DataError(f"{where}: preprocessing must be a Preprocessing")
        if preprocessing.channels != images.shape[1]:
            raise DataError(
                f"{where}: images have {images.shape[1]} channels but the preprocessing has "
                f"{preprocessing.channels}"
            )
        labels = labels.to(torch.int64)
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DataError(
                f"{where}: labels must lie in [0, {len(class_names)}), got range "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        images = images.to(torch.float32)
        # A sum is much cheaper than an elementwise mask and NaN/inf propagate through it; only
        # a non-finite sum (possibly mere overflow) needs the exact check.
        if not torch.isfinite(images.sum()) and not torch.isfinite(images).all():
            raise DataError(f"{where}: images hold NaN or infinite values")
        self._init(images, labels, class_names, preprocessing, name, split)

    def _init(
        self,
        images: Tensor,
        labels: Tensor,
        class_names: list[str],
        preprocessing: Preprocessing,
        name: str,
        split: str,
    ) -> None:
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.preprocessing = preprocessing
        self.name = name
        self.split = split
        self._checksum: str | None = None
        # One stable sort groups the indices by class (ascending inside each class).
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=len(class_names))
        self._counts = counts.cpu()
        self.indices_by_class: list[Tensor] = list(torch.split(order, self._counts.tolist()))

    @classmethod
    def _trusted(cls, images: Tensor, labels: Tensor, like: RealDataset) -> RealDataset:
        """A dataset from tensors derived from a validated one (no re-validation)."""
        ds = cls.__new__(cls)
        ds._init(images, labels, like.class_names, like.preprocessing, like.name, like.split)
        return ds

    @property
    def num_classes(self) -> int:
        """K, the number of classes (labels lie in [0, K))."""
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """C of the (N, C, H, W) images."""
        return int(self.images.shape[1])

    @property
    def im_size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return self.channels, *self.im_size

    @property
    def device(self) -> torch.device:
        """Where the images and labels live (see :meth:`to`)."""
        return self.images.device

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"RealDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={self.image_shape}, classes={self.num_classes}, "
            f"{self.preprocessing.describe()})"
        )

    def class_counts(self) -> Tensor:
        """``(num_classes,)`` int64 on the CPU: the number of images of each class."""
        return self._counts.clone()

    def _check_class(self, c: int) -> int:
        if not 0 <= int(c) < self.num_classes:
            raise ConfigError(f"class {c} out of range [0, {self.num_classes}) for {self.name}")
        return int(c)

    def sample(self, c: int, n: int, generator: torch.Generator) -> Tensor:
        """``n`` distinct random images of class ``c``: ``(n, C, H, W)`` float32.

        Uses ``randperm`` of that class's indices on ``generator`` (deterministic for a seeded
        generator). Raises ConfigError when ``c`` is out of range or ``n`` exceeds the class size.
        """
        idx = self._sample_indices(self._check_class(c), n, generator)
        return self.images[idx]

    def _sample_indices(self, c: int, n: int, generator: torch.Generator) -> Tensor:
        pool = self.indices_by_class[c]
        if not 0 <= int(n) <= pool.numel():
            raise ConfigError(
                f"cannot sample {n} images of class {c} ({self.class_names[c]!r}) from "
                f"{self.name} ({self.split}): it has {pool.numel()}; use a smaller number"
            )
        perm = torch.randperm(pool.numel(), generator=generator, device=generator.device)
        return pool[perm[: int(n)].to(pool.device)]

    def sample_balanced(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` random images of every class, class-major.

        Returns images ``(K*n, C, H, W)`` float32 and labels ``(K*n,)`` int64 equal to
        ``[0]*n + [1]*n + ...`` (K = num_classes). Raises ConfigError when a class has fewer
        than ``n`` images.
        """
        idx = torch.cat([self._sample_indices(c, n, generator) for c in range(self.num_classes)])
        labels = torch.arange(self.num_classes, device=self.labels.device).repeat_interleave(int(n))
        return self.images[idx], labels

    def subset(self, indices: Tensor) -> RealDataset:
        """The images at ``indices`` (int64 indices or a boolean mask), same metadata."""
        indices = torch.as_tensor(indices, device=self.images.device)
        if indices.dtype != torch.bool:
            indices = indices.to(torch.int64)
        try:
            images, labels = self.images[indices], self.labels[indices]
        except IndexError as e:
            raise ConfigError(f"subset of {self.name}: invalid indices ({e})") from None
        if images.dim() != 4:
            raise ConfigError("subset: indices must be a 1-D tensor of indices or a mask")
        return RealDataset._trusted(images, labels, self)

    def checksum(self) -> str:
        """First 16 hex chars of the sha256 of the labels' then the images' bytes (cached)."""
        if self._checksum is None:
            h = hashlib.sha256()
            h.update(self.labels.detach().cpu().contiguous().numpy().tobytes())
            h.update(self.images.detach().cpu().contiguous().numpy().tobytes())
            self._checksum = h.hexdigest()[:16]
        return self._checksum

    def to(self, device: str | torch.device) -> RealDataset:
        """A copy with images, labels and class indices on ``device`` (same checksum)."""
        ds = RealDataset.__new__(RealDataset)
        ds.images = self.images.to(device)
        ds.labels = self.labels.to(device)
        ds.class_names = self.class_names
        ds.preprocessing = self.preprocessing
        ds.name = self.name
        ds.split = self.split
        ds._checksum = self._checksum
        ds._counts = self._counts
        ds.indices_by_class = [i.to(device) for i in self.indices_by_class]
        return ds
