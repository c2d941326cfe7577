"""The model ids a server answers to: the base model and each LoRA adapter on top of it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Catalog", "UnknownModel"]


class UnknownModel(KeyError):
    """A request named a model this server does not serve."""


@dataclass(frozen=True)
class Catalog:
    """Served ids: `base` (adapters off) and `adapters`; `default` is the id used when a request names none."""

    base: str
    adapters: tuple[str, ...] = ()
    default: str = ""

    def ids(self) -> list[str]:
        return [self.base, *self.adapters]

    def default_id(self) -> str:
        return self.default or self.base

    def adapter_for(self, model: str) -> str | None:
        """The adapter to run for the model id `model` (None: the base model); raises UnknownModel."""
        if model == self.base:
            return None
        if model in self.adapters:
            return model
        raise UnknownModel(model)
