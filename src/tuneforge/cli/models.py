"""`tuneforge models`: the models tuneforge can load offline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "run"]

NAME = "models"
HELP = "list the models that load offline"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.add_argument("--runs", default="runs", help="folder to scan for finished runs (default: runs)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tuneforge.models.rundir import read_status
    from tuneforge.models.zoo import ZOO, find_packaged_gguf
    from tuneforge.paths import model_cache_dir
    from tuneforge.progress import console

    table = Table(title="Models available offline")
    for column in ("name", "kind", "status", "description"):
        table.add_column(column)
    for entry in ZOO.values():
        cache = model_cache_dir(entry.cache_name)
        if (cache / "config.json").is_file():
            status = f"ready ({cache})"
        elif find_packaged_gguf(entry):
            status = "installed; converted on first use"
        else:
            status = f"missing: {entry.install_hint()}"
        table.add_row(entry.name, "zoo", status, entry.description)
    runs = Path(args.runs)
    for run_dir in sorted(runs.iterdir()) if runs.is_dir() else []:
        status = read_status(run_dir)
        if status.get("status") == "finished":
            table.add_row(
                str(run_dir), "run", "finished", f"{status.get('steps')} steps, loss {status.get('final_loss', 0):.3f}"
            )
    console.print(table)
    console.print("Any Hugging Face model folder (config.json + safetensors) or .gguf file path also loads.")
    return 0
