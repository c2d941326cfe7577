"""A small generic registry: things users pick by name (formats, adapters, methods, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from tuneforge.errors import UserError

__all__ = ["Registry", "closest"]

T = TypeVar("T")


def closest(name: str, choices: list[str]) -> str | None:
    """Return the choice most similar to `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


class Registry(Generic[T]):
    """Maps a user-facing name to an object; unknown names fail with a suggestion."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers the decorated object under `name`."""

        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Return the object registered as `name`, or raise a UserError listing the known names."""
        if name in self._items:
            return self._items[name]
        hint = closest(name, self.names())
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        raise UserError(f"unknown {self.kind} {name!r}.{did_you_mean} Known: {', '.join(self.names())}.")

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
