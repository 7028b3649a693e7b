"""Resumable evaluation: a JSON file that records each finished network of an :func:`evaluate`.

An evaluation at high IPC is hours of training (at IPC 50 one `dsa` network costs about 50 min on
a 2-core CPU), so a killed run should lose at most the network in training. Each network's result
is deterministic given its seed, so a resumed evaluation reports exactly what one uninterrupted
run would have (except wall times, which are each network's own).

The file holds a *fingerprint* of everything a network's accuracy depends on (the synthetic set's
content, the protocol, the base seed, the augmentation strategy, precision, compilation, device
type, the test set and, for the random-subset baseline, the training set). A file written for a
different evaluation is refused, never silently mixed in. ``models`` and ``num_eval`` are not part
of it: a rerun with more networks or more architectures re-uses the finished ones; and a rerun
with the random-subset baseline re-uses the synthetic set's networks of one without it (and the
reverse). Nor is the KRR predictor of ``evaluate(krr=True)``: a network recorded without its KRR
accuracy is trained again only by an evaluation that asks for it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from datadistill.errors import ConfigError
from datadistill.evaluate.train import NetworkResult
from datadistill.utils import atomic_write_text

VERSION = 1
#: Fingerprint fields of one part of the evaluation (None: that part is not run).
OPTIONAL = ("baseline",)


def tensor_digest(*tensors: torch.Tensor) -> str:
    """First 16 hex chars of the sha256 over the tensors' dtypes, shapes and bytes (CPU copies)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


class EvalCheckpoint:
    """Finished networks of one evaluation, kept in ``path`` (written atomically after each).

    Args:
        path: the JSON file; created on the first :meth:`record`.
        fingerprint: JSON-serialisable description of the evaluation (see the module docstring).

    Raises:
        ConfigError: the file is not a readable checkpoint of this version, or it was written
            for an evaluation with a different fingerprint (the message names the fields).
    """

    def __init__(self, path: str | Path, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        # through JSON once, so a loaded fingerprint compares equal (tuples become lists)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
        self.networks: dict[str, dict[str, float]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            saved, networks = data["fingerprint"], data["networks"]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{self.path} is not a readable evaluation checkpoint ({e}): "
                              "delete it to evaluate from the start") from None
        # the random-subset baseline may be added to (or left out of) a recorded evaluation:
        # its field only has to agree when both sides have one
        optional = {k for k in OPTIONAL if saved.get(k) is None or self.fingerprint.get(k) is None}
        fields = sorted(k for k in set(saved) | set(self.fingerprint)
                        if k not in optional and saved.get(k) != self.fingerprint.get(k))
        if fields:
            raise ConfigError(
                f"{self.path} records networks of a different evaluation (differs in: "
                f"{', '.join(fields)}): delete it, or give this evaluation another checkpoint file")
        self.networks = networks
        for k in OPTIONAL:  # keep whichever side describes the recorded baseline networks
            if self.fingerprint.get(k) is None:
                self.fingerprint[k] = saved.get(k)

    @staticmethod
    def key(part: str, model: str, index: int) -> str:
        """``"scores/convnet/0"``: network ``index`` of ``model`` on the synthetic set
        (``part="scores"``) or on the random subset (``part="baseline"``)."""
        return f"{part}/{model}/{index}"

    def get(self, key: str, krr: bool = False) -> NetworkResult | None:
        """A finished network's result, or None (also when ``krr`` asks for a KRR accuracy that
        was not recorded)."""
        r = self.networks.get(key)
        if r is None or (krr and "krr_accuracy" not in r):
            return None
        k = r.get("krr_accuracy")
        return NetworkResult(float(r["accuracy"]), float(r["seconds"]),
                          None if k is None else float(k))

    def record(self, key: str, result: NetworkResult) -> None:
        """Add a finished network and rewrite the file atomically."""
        entry = {"accuracy": result.accuracy, "seconds": result.seconds}
        if result.krr_accuracy is not None:
            entry["krr_accuracy"] = result.krr_accuracy
        self.networks[key] = entry
        atomic_write_text(self.path, json.dumps(
            {"version": VERSION, "fingerprint": self.fingerprint, "networks": self.networks},
            indent=1, sort_keys=True))
