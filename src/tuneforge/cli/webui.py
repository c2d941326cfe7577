"""`tuneforge webui [--workspace DIR] [--data-dir DIR ...]`: fine-tune, evaluate, chat, export and serve from a browser.

The page builds the same YAML config `tuneforge train` reads and runs the same commands in the workspace folder
(runs/, configs/, data/uploads/, exported/). It works offline and binds 127.0.0.1; another address or a
share link needs --auth USER:PASS. Paths typed in the page must lie inside the workspace or a --data-dir folder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "parse_auth", "run"]

NAME = "webui"
HELP = "web page to train, evaluate, chat, export and serve (Gradio)"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.add_argument("--workspace", default=".", help="folder the page works in (default: the current folder)")
    parser.add_argument(
        "--data-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="also allow data and models from this folder (repeatable); nothing else outside the workspace is read",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also create a public Gradio share link (needs --auth)")
    parser.add_argument(
        "--auth",
        default=os.environ.get("TUNEFORGE_WEBUI_AUTH"),
        metavar="USER:PASS",
        help="log-in for the page (env TUNEFORGE_WEBUI_AUTH); mandatory with --share or a non-loopback --host",
    )
    parser.add_argument("--lang", choices=["en", "zh"], default="en", help="interface language at start (en, zh)")
    parser.add_argument("--max-upload-mb", type=float, default=200, help="largest uploaded file (default 200 MB)")
    parser.set_defaults(handler=run)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """`USER:PASS` → (user, password); None stays None."""
    from tuneforge.errors import UserError

    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise UserError("--auth must look like USER:PASS, both non-empty")
    return user, password


def _check_args(args: argparse.Namespace) -> tuple[str, str] | None:
    from tuneforge.cli.serve import is_loopback
    from tuneforge.errors import UserError

    auth = parse_auth(args.auth)
    if auth is None and (args.share or not is_loopback(args.host)):
        reason = "--share publishes the page on the internet" if args.share else f"binding {args.host} exposes it"
        raise UserError(f"{reason}, and it can read your data and run training: set --auth USER:PASS")
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535 (got {args.port})")
    if args.max_upload_mb <= 0:
        raise UserError("--max-upload-mb must be positive")
    if not Path(args.workspace).expanduser().is_dir():
        raise UserError(f"--workspace {args.workspace}: no such folder (create it first)")
    return auth


def run(args: argparse.Namespace) -> int:
    from tuneforge.errors import UserError

    auth = _check_args(args)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by Gradio: no telemetry, ever
    try:
        from tuneforge.webui.app import WebUISettings, launch
    except ImportError as err:
        if "gradio" not in str(err):
            raise
        raise UserError("the web UI needs Gradio: pip install 'tuneforge[webui]'") from None
    settings = WebUISettings(
        workspace=Path(args.workspace),
        data_dirs=[Path(d) for d in args.data_dir],
        host=args.host,
        port=args.port,
        share=args.share,
        auth=auth,
        lang=args.lang,
        upload_limit_mb=args.max_upload_mb,
    )
    launch(settings)
    return 0
