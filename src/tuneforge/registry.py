"""A small generic registry: things users pick by name (formats, adapters, methods, ...)."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from tuneforge.errors import UserError

__all__ = ["Registry", "closest", "import_submodules"]

T = TypeVar("T")


def closest(name: str, choices: list[str]) -> str | None:
    """Return the choice most similar to `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


class Registry(Generic[T]):
    """Maps a user-facing name to an object; unknown names fail with a suggestion."""

    def __init__(self, kind: str, provider: str | None = None) -> None:
        """`provider`: the package whose import registers the items (imported the first time the registry is asked
        while still empty), so a lower layer can look up what a higher one registers without importing it."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._provider = provider

    def _load_provider(self) -> None:
        if not self._items and self._provider is not None:
            provider, self._provider = self._provider, None
            importlib.import_module(provider)

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
        self._load_provider()
        if name in self._items:
            return self._items[name]
        hint = closest(name, self.names())
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        raise UserError(f"unknown {self.kind} {name!r}.{did_you_mean} Known: {', '.join(self.names())}.")

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load_provider()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_provider()
        return name in self._items


def import_submodules(package: str, path: Iterable[str]) -> list[str]:
    """Import every public module of a package (its `__path__`), so that each registers what it defines.

    A package whose modules register plug-ins (adapters, methods, formats, exporters, engines) calls this from its
    `__init__`: adding a plug-in is then adding its own module, with nothing else to edit. Modules whose name
    starts with `_` are skipped. Returns the imported module names.
    """
    names = sorted(info.name for info in pkgutil.iter_modules(path) if not info.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
