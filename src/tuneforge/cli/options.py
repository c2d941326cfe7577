"""Command-line option parsing shared by several verbs."""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import UserError

__all__ = ["output_dir", "parse_variables"]


def parse_variables(pairs: list[str]) -> dict[str, str]:
    """`--var KEY=VALUE` options → {KEY: VALUE}, for {{KEY}} placeholders in questions and data."""
    variables = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--var {pair!r}: expected KEY=VALUE, e.g. --var name=Conch")
        variables[key] = value
    return variables


def output_dir(out: str | None, model: str, otherwise: str) -> Path:
    """Where a verb writes its results: `--out`, else the run directory's eval/ folder, else `otherwise`."""
    from tuneforge.models.rundir import RunLayout, is_run_dir

    if out:
        return Path(out)
    return RunLayout(Path(model)).eval if is_run_dir(model) else Path(otherwise)
