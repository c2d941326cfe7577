"""Which engine serves a plan, and opening it (engines register themselves: see tuneforge.serve.engines)."""

from __future__ import annotations

from importlib.util import find_spec

from tuneforge.errors import UserError
from tuneforge.serve.engines import ENGINES, Engine
from tuneforge.serve.plan import Plan

__all__ = ["DEFAULT_ENGINE", "engine_choices", "open_engine", "pick_engine"]

DEFAULT_ENGINE = "transformers"


def engine_choices() -> list[str]:
    """The values `--engine` accepts: every registered engine, and auto."""
    return ["auto", *ENGINES.names()]


def _installed(package: str | None) -> bool:
    return package is None or find_spec(package) is not None


def pick_engine(kind: str, base: str) -> str:
    """The engine to use: `auto` picks an installed engine that prefers this base model (llama.cpp for .gguf)."""
    if kind != "auto":
        return kind
    for name in ENGINES.names():
        spec = ENGINES.get(name)
        if spec.prefers is not None and spec.prefers(base) and _installed(spec.package):
            return name
    return DEFAULT_ENGINE


def open_engine(kind: str, plan: Plan) -> Engine:
    """Load `plan` into the engine `kind` (not `auto`); raises UserError when its package is missing."""
    spec = ENGINES.get(kind)
    if not _installed(spec.package):
        raise UserError(
            f"--engine {kind} needs the `{spec.package}` Python package, which is not installed: {spec.install}"
        )
    return spec.open(plan)
