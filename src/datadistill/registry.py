"""A small name -> factory registry shared by datasets, networks, methods and protocols."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from datadistill.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps standard names (lower case, e.g. ``"fashion-mnist"``) to objects.

    ``get`` raises :class:`UnknownNameError` listing the valid names, so a typo on the command
    line tells the user what they could have meant.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        """Decorator: ``@REG.register("name", help="one line")`` registers the decorated object."""

        def deco(obj: T) -> T:
            self.add(name, obj, help)
            return obj

        return deco

    def add(self, name: str, obj: T, help: str = "") -> None:
        """Register ``obj`` under ``name`` (case-insensitive) with a one-line ``help`` (default:
        the first line of its docstring). Raises ValueError when the name is taken."""
        key = name.lower()
        if key in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[key] = obj
        self._help[key] = help or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]

    def get(self, name: str) -> T:
        """The object registered as ``name`` (case-insensitive); UnknownNameError lists the
        valid names otherwise."""
        key = str(name).lower()
        if key not in self._items:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            )
        return self._items[key]

    def help(self, name: str) -> str:
        """The one-line description of a registered name (KeyError if unknown)."""
        return self._help[name.lower()]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
