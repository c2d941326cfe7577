"""`tuneforge export RUN_DIR --to DIR [--format FORMAT]`: take the tuned model anywhere.

Formats (see tuneforge.export; each registers itself):
{formats}
Everything is written to a temporary folder and renamed into place at the end, with a marker file
(.tuneforge-export.json) in it. An existing DIR is replaced only when it holds that marker (an earlier export) and
--force is given. The source, its base model, folders that contain them or lie inside them, the current and home
folders and filesystem roots are refused whatever --force says.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "run"]

NAME = "export"
HELP = "merge and export a run (merged safetensors, GGUF, Ollama)"


def add_parser(sub: Any) -> None:
    from tuneforge.export import EXPORTERS, GGUF_TYPES

    formats = "\n".join(f"  {name}: {EXPORTERS.get(name).help}" for name in EXPORTERS.names())
    parser = sub.add_parser(
        NAME, help=HELP,
        description=__doc__.format(formats=formats), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("source", help="run directory (or any model tuneforge loads)")
    parser.add_argument("--to", required=True, help="output folder (new, or an earlier export with --force)")
    parser.add_argument("--format", choices=EXPORTERS.names(), default="hf")
    parser.add_argument("--dtype", default="auto", help="hf weights dtype: auto, float32, bfloat16, float16")
    parser.add_argument("--shard-size", default="2GB", help="largest safetensors shard (hf), e.g. 500MB")
    parser.add_argument("--gguf-type", default="f16", choices=GGUF_TYPES, help="GGUF tensor type (gguf, ollama)")
    parser.add_argument(
        "--force", action="store_true", help="replace an earlier export in --to (only a folder export wrote)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tuneforge.export import ExportOptions, run_export
    from tuneforge.progress import console

    options = ExportOptions(dtype=args.dtype, shard_size=args.shard_size, gguf_type=args.gguf_type)
    for line in run_export(args.source, Path(args.to), args.format, options, args.force):
        console.print(line)
    return 0
