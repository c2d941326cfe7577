"""`tuneforge train CONFIG.yaml [section.key=value ...] [--resume [CHECKPOINT]] [--force]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "run"]

NAME = "train"
HELP = "fine-tune a model from a YAML config"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
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
    parser.add_argument(
        "--judge",
        help="judge for the before/after comparison, instead of eval.judge: a model or an OpenAI-compatible "
        "endpoint URL (only an endpoint named here or in $TUNEFORGE_JUDGE_URL gets $TUNEFORGE_JUDGE_API_KEY)",
    )
    parser.add_argument(
        "--judge-remote", action="store_true", help="allow a judge endpoint off this machine (eval.judge_remote)"
    )
    parser.set_defaults(handler=run)


def _interrupted(err: Any, args: argparse.Namespace, console: Any) -> int:
    """Ctrl-C or SIGTERM: say where the checkpoint is and how to continue; exit status 128 + the signal's number."""
    import signal

    status = 128 + int(getattr(signal, err.signal_name, signal.SIGINT))
    by = f"{err.signal_name}: " if err.signal_name != "SIGINT" else ""
    if err.checkpoint is None:
        console.print(
            f"\n[yellow]{by}interrupted after step {err.step}; no checkpoint was saved (nothing to resume)[/]"
        )
        return status
    command = " ".join(["tuneforge train", args.config, *args.overrides, "--resume"])
    console.print(f"\n[yellow]{by}interrupted after step {err.step}[/]; checkpoint saved to {err.checkpoint}")
    console.print(f"  continue with: {command}")
    return status


def _report_outcome(run_dir: Path, console: Any) -> None:
    """Best step, early stop and the verdict on the curves, as recorded in run.json."""
    from tuneforge.models.rundir import read_status
    from tuneforge.train.lifecycle import describe_outcome

    status = read_status(run_dir)
    if "verdict" in status:
        for line in describe_outcome(status):
            console.print(f"  {line}")


def _next_steps(run_dir: Path, adapter: Any, console: Any) -> None:
    """The commands that apply to this run: chat always; serve and export where the adapter allows them."""
    console.print("\n[bold]Next:[/]")
    console.print(f"  tuneforge chat {run_dir}                       # talk to it")
    console.print(f'  tuneforge chat {run_dir} --prompt "Who are you?"  # one answer')
    if adapter.batched_serving:
        console.print(f"  tuneforge serve {run_dir}                      # OpenAI-compatible API on 127.0.0.1:8000")
    if adapter.mergeable:
        console.print(f"  tuneforge export {run_dir} --to exported/{run_dir.name}          # merged safetensors")
        console.print(
            f"  tuneforge export {run_dir} --to exported/{run_dir.name}-ollama --format ollama  # GGUF + Modelfile"
        )


def _print_estimate(config: Any, base_dir: Path, console: Any) -> None:
    """The estimate's one-line summary (see `tuneforge estimate`); a run never fails because of its estimate."""
    import logging
    import os

    from tuneforge.train.estimate import estimate_run

    if os.environ.get("RANK", "0") != "0":  # one line per run, from its main process
        return
    try:
        estimate = estimate_run(config, base_dir, with_data=config.data.cache, probe_runtime=False)
    except Exception as err:  # noqa: BLE001 - the run itself reports what is wrong with its config
        logging.getLogger(__name__).debug("estimate failed", exc_info=True)
        console.print(f"estimate: not available ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
        return
    console.print(estimate.summary(), highlight=False)


def run(args: argparse.Namespace) -> int:
    from tuneforge.cli.options import apply_config_access
    from tuneforge.config.load import load_config
    from tuneforge.eval.session import ComparisonHook
    from tuneforge.models.adapters import ADAPTERS
    from tuneforge.models.rundir import RunLayout
    from tuneforge.progress import console
    from tuneforge.train.loop import TrainingInterrupted
    from tuneforge.train.run import run_training

    config = load_config(args.config, args.overrides)
    apply_config_access(config, args.config)
    if args.resume:
        config.train.resume = args.resume
    base_dir = Path(args.config).resolve().parent
    if args.judge_remote:
        config.eval.judge_remote = True
    comparison = ComparisonHook(config.eval, config.data.variables, base_dir, args.judge)
    _print_estimate(config, base_dir, console)
    try:
        outcome = run_training(config, base_dir=base_dir, force=args.force, hooks=(comparison,))
    except TrainingInterrupted as err:
        return _interrupted(err, args, console)
    run_dir = outcome.run_dir
    console.print(
        f"\n[bold green]done[/] in {outcome.result.seconds:.0f} s of training, "
        f"{outcome.result.tokens_per_s:.0f} tokens/s. Run directory: {run_dir}"
    )
    layout = RunLayout(run_dir)
    console.print(f"  loss curve: {layout.loss_plot}   metrics: {layout.metrics}")
    _report_outcome(run_dir, console)
    if outcome.reports:
        console.print(f"  before vs after: {layout.eval / 'compare.html'} (also compare.md, compare.json)")
    _next_steps(run_dir, ADAPTERS.get(config.adapter.name), console)
    return 0
