"""A tiny name → object registry, used instead of if/elif chains on method names.

A registry whose members live in other modules (commands, checkpoint kinds, export formats, engines, result
tables, output evaluations) is given an entry-point ``group``: its members are the one explicit list of that group
in ``pyproject.toml`` (``[project.entry-points."slimpack.…"]``), each loaded by name when the registry is first
asked — no module registers itself by being imported, and a lower floor never imports the upper one that provides
a member.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from prune.errors import SlimpackError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects; unknown names raise a `SlimpackError` listing the known ones."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind, self.group = kind, group
        self._items: dict[str, T] = {}
        self._listed = group is None  # the entry points are loaded on first use

    def _members(self) -> dict[str, T]:
        if not self._listed:
            self._listed = True
            listed = entry_points(group=self.group)
            if not listed:
                raise SlimpackError(
                    f"no {self.kind} is installed (entry points {self.group!r} of pyproject.toml): install slimpack "
                    "with `bash scripts/setup.sh` (pip install -e .)"
                )
            for ep in listed:
                self.register(ep.name)(ep.load())
        return self._items

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._members()[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise SlimpackError(f"unknown {self.kind} {name!r}; choose one of: {known}") from None

    def build(self, name: str, options: dict[str, Any]) -> Any:
        """Call the registered factory ``name`` with keyword ``options``; bad options are a user error."""
        factory = self.get(name)
        try:
            return factory(**options)  # type: ignore[operator]
        except TypeError as err:
            raise SlimpackError(f"bad options {options} for {self.kind} {name!r}: {err}") from None

    def names(self) -> list[str]:
        return sorted(self._members())

    def __contains__(self, name: object) -> bool:
        return name in self._members()
