"""`tuneforge estimate CONFIG.yaml [section.key=value ...]`: memory and time of a training run, before it starts.

Reads the model's config and tokenizer (never its weights), prepares the data as `tuneforge train` does (cached,
so the run reuses it) and traces one step of the largest micro-batch through the model without weights. Says
whether the run fits on this machine's device and, if not, which setting to change.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "run"]

NAME = "estimate"
HELP = "estimate a training run's memory and time before loading anything"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.add_argument("config", help="YAML config file, as for `tuneforge train`")
    parser.add_argument("overrides", nargs="*", help="overrides such as train.batch_size=2 data.cutoff_len=256")
    parser.add_argument(
        "--no-data", action="store_true", help="do not read the data: assume full packs of cutoff_len tokens"
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument(
        "--remeasure", action="store_true", help="measure this machine's speed again instead of using the cache"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tuneforge.cli.options import apply_config_access
    from tuneforge.config.load import load_config
    from tuneforge.progress import console
    from tuneforge.train.estimate import estimate_run

    config = load_config(args.config, args.overrides)
    apply_config_access(config, args.config)
    base_dir = Path(args.config).resolve().parent
    estimate = estimate_run(config, base_dir, with_data=not args.no_data, remeasure=args.remeasure)
    if args.json:
        print(json.dumps(estimate.as_dict(), indent=2))  # noqa: T201
        return 0
    for line in estimate.report():
        console.print(line, highlight=False)
    console.print(f"\n[bold]{estimate.summary()}[/]", highlight=False)
    return 0 if estimate.fits else 1
