"""Small shared helpers: atomic file writes, devices, generators, timing and peak memory."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from datadistill.errors import ConfigError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    A crash or Ctrl-C inside the block leaves any previous file at ``path`` untouched and removes
    the temporary file, so an artifact is either the old good one or the new complete one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # created like open(path, "x") would (0o666 less the umask), unlike mkstemp's owner-only 0600
    tmp_path = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        if path.exists():  # a replaced file keeps its own mode
            os.chmod(tmp_path, path.stat().st_mode & 0o777)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``.

    Raises ConfigError for an unknown device string or CUDA requested without CUDA.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


_NATIVE_BF16_CPU: bool | None = None


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 matrix products natively (AMX or AVX-512 BF16/core,
    as oneDNN reports it). On older CPUs (AVX2 only) bf16 autocast is emulated and measured
    about 10x SLOWER than float32 (BENCHMARKS.md), so ``precision: auto`` uses float32 there."""
    global _NATIVE_BF16_CPU
    if _NATIVE_BF16_CPU is None:
        try:
            _NATIVE_BF16_CPU = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            _NATIVE_BF16_CPU = False
    return _NATIVE_BF16_CPU


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the OS after every step
    (glibc only: ``mallopt`` M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 1 GiB, M_TOP_PAD 256 MiB).

    PyTorch's CPU allocator calls ``malloc`` for every activation; glibc's defaults hand large
    blocks back to the kernel at once, so each training step page-faults them in again.
    Measured on a 2-core AVX2 CPU, 20 epochs of the ``dsa`` evaluation at IPC 10: minor page
    faults 2.1M -> 0.19M, system time 3.7 s -> 0.5 s, wall time -7 %. Process-wide, so only
    the command line and the benchmarks call it; a no-op (returns False) without glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)
                    and libc.mallopt(m_trim_threshold, 1 << 30)
                    and libc.mallopt(m_top_pad, 256 << 20))
    except (OSError, AttributeError):
        return False


def machine_description(device: torch.device | None = None) -> str:
    """One line naming the hardware a measurement ran on, e.g. ``"cpu: AMD EPYC (AVX2, bf16
    emulated), 2 threads, torch 2.13.0"``; wall times are only comparable between equal lines."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    # AMX tiles make bf16 matrix products several times faster than AVX-512 BF16 alone
    # (FRePo's evaluation: 301 s per network against 650 s), so name them
    isa = torch.backends.cpu.get_cpu_capability() + (", AMX" if "amx_bf16" in flags else "")
    bf16 = "bf16 native" if cpu_has_fast_bf16() else "bf16 emulated"
    return (f"cpu: {model} ({isa}, {bf16}), "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` where the device runs bf16 natively (CUDA with bf16 support, a
    CPU with AMX / AVX-512), else ``"fp32"``; ``"bf16"`` and ``"fp32"`` are returned unchanged.

    Raises ConfigError for any other value.
    """
    if precision in ("bf16", "fp32"):
        return precision
    if precision != "auto":
        raise ConfigError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (never the global RNG)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak resident memory of this process in MiB (CPU), or peak allocated CUDA memory."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class Timer:
    """Context manager measuring wall time in seconds (``.seconds``)."""

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


_COMPILED: dict[str, Callable] = {}
_COMPILE_BROKEN = False


def compiled(key: str, fn: Callable) -> Callable:
    """``torch.compile(fn)``, built once per ``key`` and shared (dynamo re-uses a graph for new
    instances of one architecture). If compilation fails (no C++ compiler, unsupported backend)
    it warns once and every compiled function of the process runs eagerly instead."""
    if key not in _COMPILED:
        from torch import _dynamo

        _dynamo.config.cache_size_limit = max(_dynamo.config.cache_size_limit, 64)
        _COMPILED[key] = torch.compile(fn, dynamic=False)
    graph = _COMPILED[key]

    def run(*args, **kwargs):
        global _COMPILE_BROKEN
        if not _COMPILE_BROKEN:
            try:
                return graph(*args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:
                _COMPILE_BROKEN = True
                warnings.warn(f"torch.compile failed ({e.__class__.__name__}); running eagerly",
                              stacklevel=2)
        return fn(*args, **kwargs)

    return run
