"""Strategies: objects that wrap a base method (a :class:`~datadistill.methods.Distiller`) and
change which real samples it matches, or how, without copying its objective.

Every strategy has the same call shape::

    strategy = STRATEGIES.get("sequential")({"segments": 5})
    synset = strategy.run(make_distiller("dm", dataset=..., ipc=50), real, 50, seed=0)

Options come from the command line (``--segments``, ``--reg-weight``, ``--discard-easy``,
``--isa-eps``, ...) or the Python API as a plain dict; unknown options raise ConfigError.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from datadistill.data import RealDataset
from datadistill.errors import ConfigError
from datadistill.registry import Registry
from datadistill.synthetic import SyntheticSet


class Strategy(ABC):
    """Wraps a base method. Subclasses declare ``defaults`` (option name -> default value)."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = {k: v for k, v in (options or {}).items() if v is not None}
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"strategy {self.name}: unknown option(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.options = {**self.defaults, **options}

    def check(self, distiller: Any) -> None:
        """Raise ConfigError when this strategy cannot wrap ``distiller`` (called before any
        data is loaded or file written); the base accepts every method."""
        return None

    @abstractmethod
    def run(
        self,
        distiller: Any,
        real: RealDataset,
        ipc: int,
        *,
        seed: int = 0,
        device: torch.device | None = None,
        checkpoint: Path | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> SyntheticSet:
        """Distil ``real`` into ``ipc`` images per class with ``distiller`` under this strategy."""


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")

__all__ = ["STRATEGIES", "Strategy"]

# Strategy modules register themselves on import (kept last: they import this module).
from datadistill.strategies import isa, sequential  # noqa: E402, F401
