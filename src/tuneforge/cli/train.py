"""`tuneforge train CONFIG.yaml [section.key=value ...] [--resume [CHECKPOINT]] [--force]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("train", help="fine-tune a model from a YAML config", description=__doc__)
    parser.add_argument("config", help="YAML config file (sections model, data, adapter, train, eval, output)")
    parser.add_argument("overrides", nargs="*", help="overrides such as train.epochs=1 data.cutoff_len=256")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the newest checkpoint in output.dir (or from CHECKPOINT, a checkpoints/step-N folder)",
    )
    parser.add_argument(
        "--force", action="store_true", help="resume even though the model, data, method or adapter changed"
    )
    parser.set_defaults(handler=run)


def _interrupted(err: Any, args: argparse.Namespace, console: Any) -> int:
    """Ctrl-C: say where the checkpoint is and how to continue; exit status 130."""
    if err.checkpoint is None:
        console.print(f"\n[yellow]interrupted after step {err.step}; no checkpoint was saved (nothing to resume)[/]")
        return 130
    command = " ".join(["tuneforge train", args.config, *args.overrides, "--resume"])
    console.print(f"\n[yellow]interrupted after step {err.step}[/]; checkpoint saved to {err.checkpoint}")
    console.print(f"  continue with: {command}")
    return 130


def _report_outcome(run_dir: Path, console: Any) -> None:
    """Best step, early stop and the verdict on the curves, as recorded in run.json."""
    from tuneforge.train.artifacts import read_status
    from tuneforge.train.lifecycle import describe_outcome

    status = read_status(run_dir)
    if "verdict" in status:
        for line in describe_outcome(status):
            console.print(f"  {line}")


def run(args: argparse.Namespace) -> int:
    from tuneforge.config.load import load_config
    from tuneforge.train.loop import TrainingInterrupted
    from tuneforge.train.progress import console
    from tuneforge.train.run import run_training

    config = load_config(args.config, args.overrides)
    if args.resume:
        config.train.resume = args.resume
    try:
        outcome = run_training(config, base_dir=Path(args.config).resolve().parent, force=args.force)
    except TrainingInterrupted as err:
        return _interrupted(err, args, console)
    run_dir = outcome.run_dir
    console.print(
        f"\n[bold green]done[/] in {outcome.result.seconds:.0f} s of training, "
        f"{outcome.result.tokens_per_s:.0f} tokens/s. Run directory: {run_dir}"
    )
    console.print(f"  loss curve: {run_dir / 'loss.png'}   metrics: {run_dir / 'metrics.jsonl'}")
    _report_outcome(run_dir, console)
    if outcome.comparison is not None:
        console.print(f"  before vs after: {run_dir / 'eval' / 'compare.html'} (also compare.md, compare.json)")
    console.print("\n[bold]Next:[/]")
    console.print(f"  tuneforge chat {run_dir}                       # talk to it")
    console.print(f'  tuneforge chat {run_dir} --prompt "Who are you?"  # one answer')
    from tuneforge.models.adapters import ADAPTERS

    if not ADAPTERS.get(config.adapter.name).supports_packing:
        return 0  # virtual tokens (prefix, prompt, P-tuning): neither the batched server nor merging applies
    console.print(f"  tuneforge serve {run_dir}                      # OpenAI-compatible API on 127.0.0.1:8000")
    if config.adapter.name == "adapter":
        return 0  # bottleneck modules cannot be merged into plain weights
    console.print(f"  tuneforge export {run_dir} --to exported/{run_dir.name}          # merged safetensors")
    console.print(
        f"  tuneforge export {run_dir} --to exported/{run_dir.name}-ollama --format ollama  # GGUF + Modelfile"
    )
    return 0
