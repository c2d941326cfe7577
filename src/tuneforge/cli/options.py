"""Command-line option parsing shared by several verbs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tuneforge.access import allow_hub, allow_remote_code, enforce_offline, forbid_remote_code
from tuneforge.errors import UserError

__all__ = ["add_model_access", "apply_command_line_access", "apply_config_access", "output_dir", "parse_variables"]


def add_model_access(parser: argparse.ArgumentParser) -> None:
    """--trust-remote-code and --online, for every verb that loads a model."""
    group = parser.add_argument_group("model access (both off by default)")
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code shipped with the model (a run directory's recorded setting never turns this on)",
    )
    group.add_argument(
        "--online",
        action="store_true",
        help="allow downloads from the Hugging Face hub (otherwise a name that is not a local path is an error)",
    )


def apply_command_line_access(args: argparse.Namespace) -> None:
    """Start every command offline and without remote code, unless its own flags say otherwise."""
    forbid_remote_code()
    if getattr(args, "online", False):
        allow_hub("--online")
    else:
        enforce_offline()
    if getattr(args, "trust_remote_code", False):
        allow_remote_code("--trust-remote-code")


def apply_config_access(config: Any, source: str) -> None:
    """A training config the command line names may allow the hub (model.hub) and remote code for its model."""
    if config.model.hub:
        allow_hub(f"model.hub in {source}", config.model.hub)
    if config.model.trust_remote_code:
        allow_remote_code(f"model.trust_remote_code in {source}")


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
