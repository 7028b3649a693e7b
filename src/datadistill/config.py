"""Presets: per-method hyperparameters as YAML data files in ``datadistill/presets``.

Each ``<method>.yaml`` maps a preset name (``paper``: the published hyperparameters; ``fast``:
sized for a 2-core CPU) to a mapping of hyperparameters, with optional refinements::

    paper:
      steps: 20000
      lr_img: 1.0
      by_dataset: {cifar10: {...}}          # applied for that dataset
      by_ipc: [{min: 100, dataset: cifar10, set: {...}}]   # in order, when ipc >= min
                                                          # (<= max; only for dataset if given)

``resolve_config`` applies defaults, then ``by_dataset``, then ``by_ipc``, then the user's
overrides, and returns a flat dict that is written next to every run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import yaml

from datadistill.errors import ConfigError, UnknownNameError


@cache
def _presets(method: str) -> dict[str, Any]:
    try:
        text = resources.files("datadistill.presets").joinpath(f"{method}.yaml").read_text()
    except FileNotFoundError:
        return {}
    return yaml.safe_load(text) or {}


def preset_names(method: str) -> list[str]:
    """The presets defined for ``method`` (e.g. ``["fast", "paper"]``)."""
    return sorted(_presets(method))


def resolve_config(
    method: str,
    preset: str,
    *,
    dataset: str,
    ipc: int,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The flat hyperparameter dict for (method, preset, dataset, ipc) plus ``overrides``.

    Raises:
        UnknownNameError: unknown preset (lists the valid ones).
        ConfigError: an override key that the preset does not define (catches typos).
    """
    presets = _presets(method)
    dataset = dataset.lower()
    if preset not in presets:
        raise UnknownNameError(
            f"unknown preset {preset!r} for method {method}; valid presets: "
            f"{', '.join(sorted(presets)) or '(none)'}"
        )
    spec = dict(presets[preset])
    by_dataset = spec.pop("by_dataset", {}) or {}
    by_ipc = spec.pop("by_ipc", []) or []
    cfg = dict(spec)
    cfg.update(by_dataset.get(dataset, {}))
    for rule in by_ipc:
        if rule.get("dataset", dataset) != dataset:
            continue
        if ipc >= rule.get("min", 0) and ipc <= rule.get("max", float("inf")):
            cfg.update(rule["set"])
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise ConfigError(
                f"unknown hyperparameter {key!r} for {method}/{preset}; valid: {', '.join(sorted(cfg))}"
            )
        cfg[key] = _coerce(key, value, cfg[key])
    return cfg


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of the preset's ``default``; ConfigError if impossible."""
    kind = type(default)
    if key == "vectorize":  # true / false / auto (a tri-state switch, see methods.gm)
        if isinstance(value, str) and value.lower() in ("true", "false", "auto"):
            return value.lower() if value.lower() == "auto" else value.lower() == "true"
        if isinstance(value, bool):
            return value
        raise ConfigError(f"hyperparameter vectorize={value!r} is invalid: use true, false or auto")
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            out = int(float(value))
            if out < 1 and key != "seed":
                raise ValueError
            return out
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if not isinstance(value, str) or not value:
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(
            f"hyperparameter {key}={value!r} is invalid: expected a "
            f"{'positive integer' if kind is int else kind.__name__} like {default!r}"
        ) from None
    return value


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` (value read as YAML: numbers, booleans, lists) for ``--set``.

    Scientific notation without a dot (``1e-4``), a string to YAML 1.1, is read as a float.
    """
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str) and _SCIENTIFIC.fullmatch(parsed.strip()):
        parsed = float(parsed)
    return key.strip(), parsed
