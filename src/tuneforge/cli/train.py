"""`tuneforge train CONFIG.yaml [section.key=value ...]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("train", help="fine-tune a model from a YAML config", description=__doc__)
    parser.add_argument("config", help="YAML config file (sections model, data, adapter, train, eval, output)")
    parser.add_argument("overrides", nargs="*", help="overrides such as train.epochs=1 data.cutoff_len=256")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tuneforge.config.load import load_config
    from tuneforge.train.progress import console
    from tuneforge.train.run import run_training

    config = load_config(args.config, args.overrides)
    outcome = run_training(config, base_dir=Path(args.config).resolve().parent)
    run_dir = outcome.run_dir
    console.print(
        f"\n[bold green]done[/] in {outcome.result.seconds:.0f} s of training, "
        f"{outcome.result.tokens_per_s:.0f} tokens/s. Run directory: {run_dir}"
    )
    console.print(f"  loss curve: {run_dir / 'loss.png'}   metrics: {run_dir / 'metrics.jsonl'}")
    if outcome.comparison is not None:
        console.print(f"  before vs after: {run_dir / 'eval' / 'compare.html'} (also compare.md, compare.json)")
    console.print("\n[bold]Next:[/]")
    console.print(f"  tuneforge chat {run_dir}                       # talk to it")
    console.print(f'  tuneforge chat {run_dir} --prompt "Who are you?"  # one answer')
    console.print(f"  tuneforge serve {run_dir}                      # OpenAI-compatible API on 127.0.0.1:8000")
    return 0
