"""A tiny name → object registry, used instead of if/elif chains on method names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from prune.errors import SlimpackError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects; unknown names raise a `SlimpackError` listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
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
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
