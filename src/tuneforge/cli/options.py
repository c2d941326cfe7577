"""Command-line option parsing shared by several verbs."""

from __future__ import annotations

from tuneforge.errors import UserError

__all__ = ["parse_variables"]


def parse_variables(pairs: list[str]) -> dict[str, str]:
    """`--var KEY=VALUE` options → {KEY: VALUE}, for {{KEY}} placeholders in questions and data."""
    variables = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--var {pair!r}: expected KEY=VALUE, e.g. --var name=Conch")
        variables[key] = value
    return variables
