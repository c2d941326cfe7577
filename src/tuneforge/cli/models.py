"""`tuneforge models`: the models tuneforge can load offline; `tuneforge models pull ID` fetches one from a hub.

`pull` is the one command that reaches a model hub without --online: naming it is the permission. It fetches only
what loading needs (config, tokenizer, chat template, safetensors weights) into $TUNEFORGE_HOME/cache/hub, resumes an
interrupted download, and checks every file against the hub's sizes and hashes. Afterwards the id loads offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "run"]

NAME = "models"
HELP = "list the models that load offline; `models pull ID` fetches one from a hub"
_HUBS = ("huggingface", "modelscope")  # tuneforge.models.hub_api.HUBS, without importing torch for --help


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.add_argument("--runs", default="runs", help="folder to scan for finished runs (default: runs)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    pull = actions.add_parser(
        "pull",
        help="fetch a model from the Hugging Face hub or ModelScope into the cache (needs a network)",
        description="Fetch a model into $TUNEFORGE_HOME/cache/hub so that its id loads offline. Tokens: HF_TOKEN "
        "(Hugging Face), MODELSCOPE_API_TOKEN (ModelScope); endpoints: HF_ENDPOINT, MODELSCOPE_DOMAIN.",
    )
    pull.add_argument("model_id", metavar="ID", help="the model's owner/name on the hub, e.g. Qwen/Qwen3-0.6B")
    pull.add_argument("--hub", choices=_HUBS, default="huggingface", help="where to fetch it from")
    pull.add_argument(
        "--revision", default=None, help="branch, tag or commit (default: main on Hugging Face, master on ModelScope)"
    )
    pull.add_argument(
        "--with-code",
        action="store_true",
        help="also fetch the model's Python files (for models that need --trust-remote-code to load)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "pull":
        return _pull(args)
    return _list(args)


def _pull(args: argparse.Namespace) -> int:
    from tuneforge.models.hub_api import DEFAULT_REVISIONS, HUB_TITLES
    from tuneforge.models.hub_download import download_model
    from tuneforge.progress import console

    folder = download_model(args.model_id, args.hub, args.revision, include_code=args.with_code)
    revision = args.revision or DEFAULT_REVISIONS[args.hub]
    console.print(f"{args.model_id} ({HUB_TITLES[args.hub]}, {revision}) is ready in {folder}", soft_wrap=True)
    console.print(
        f"It loads offline by its id now: tuneforge chat {args.model_id} (or model.name_or_path: {args.model_id})",
        soft_wrap=True,
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tuneforge.models.hub_download import downloaded_models
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
    for model in downloaded_models():
        table.add_row(model.repo_id, model.hub, f"ready ({model.folder})", f"revision {model.revision}")
    runs = Path(args.runs)
    for run_dir in sorted(runs.iterdir()) if runs.is_dir() else []:
        status = read_status(run_dir)
        if status.get("status") == "finished":
            table.add_row(
                str(run_dir), "run", "finished", f"{status.get('steps')} steps, loss {status.get('final_loss', 0):.3f}"
            )
    console.print(table)
    console.print("Any Hugging Face model folder (config.json + safetensors) or .gguf file path also loads.")
    console.print("A hub id (owner/name) loads once fetched: tuneforge models pull ID [--hub modelscope]")
    return 0
