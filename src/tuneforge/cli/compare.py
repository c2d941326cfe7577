"""`tuneforge compare --base MODEL --tuned RUN_DIR --questions FILE`: the same questions to both, side by side.

Writes compare.json, compare.md and a self-contained compare.html (default: RUN_DIR/eval when --tuned is a run
directory, else ./compare) and prints the summary table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser"]

NAME = "compare"
HELP = "compare a base and a tuned model on the same questions"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.add_argument("--base", required=True, help="base model: zoo name, folder, .gguf or run directory")
    parser.add_argument("--tuned", required=True, help="tuned model, usually a run directory")
    parser.add_argument(
        "--questions",
        help="questions: bundled name or JSON/JSONL/CSV/Parquet file of question strings or {question, kind, "
        "expected, only, name, maker, reference} rows",
    )
    parser.add_argument("--general", help="general-ability set for the forgetting check (e.g. general_check)")
    parser.add_argument("--general-limit", type=int, help="only the first N items of the general set")
    parser.add_argument("--threshold", type=float, default=5.0, help="forgetting threshold in points (default 5)")
    parser.add_argument(
        "--general-reference",
        help="human-written answers (e.g. general_reference): forgetting as the rise in loss per answer token",
    )
    parser.add_argument(
        "--loss-threshold", type=float, default=0.05, help="forgetting threshold in loss per token (default 0.05)"
    )
    parser.add_argument(
        "--judge",
        help="judge: a model tuneforge loads, or an OpenAI-compatible endpoint URL (default: $TUNEFORGE_JUDGE_URL); "
        "an endpoint gets $TUNEFORGE_JUDGE_API_KEY as its bearer token",
    )
    parser.add_argument("--judge-model", help="model id for a judge endpoint")
    parser.add_argument(
        "--judge-remote", action="store_true", help="allow a judge endpoint that is not on this machine"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--var", action="append", default=[], metavar="KEY=VALUE", help="fill {{KEY}} in questions")
    parser.add_argument("--out", help="output folder")
    parser.set_defaults(handler=run)


def _out_dir(args: argparse.Namespace) -> Path:
    from tuneforge.cli.options import output_dir

    return output_dir(args.out, args.tuned, "compare")


def _run_variables(tuned: str) -> dict[str, str]:
    """A run directory's data.variables, so its questions' placeholders fill in without --var."""
    from tuneforge.models.rundir import is_run_dir, read_run_record

    return read_run_record(Path(tuned)).variables if is_run_dir(tuned) else {}


def run(args: argparse.Namespace) -> int:
    from tuneforge.cli.options import parse_variables
    from tuneforge.config.schema import EvalSection
    from tuneforge.errors import UserError
    from tuneforge.eval.session import base_answers, check_judge_settings, finish_comparison
    from tuneforge.models.load import load_model
    from tuneforge.progress import console

    if not args.questions and not args.general and not args.general_reference:
        raise UserError(
            "give --questions FILE, --general FILE and/or --general-reference FILE (e.g. --general general_check "
            "--general-reference general_reference)"
        )
    section = EvalSection(
        questions=args.questions,
        max_new_tokens=args.max_new_tokens,
        judge_model=args.judge_model,
        judge_remote=args.judge_remote,
        general=args.general,
        general_limit=args.general_limit,
        forgetting_threshold=args.threshold,
        general_reference=args.general_reference,
        loss_threshold=args.loss_threshold,
    )
    check_judge_settings(section, args.judge)
    variables = {**_run_variables(args.tuned), **parse_variables(args.var)}
    console.print(f"loading base model {args.base}")
    base = load_model(args.base)
    before = base_answers(base.model, base.tokenizer, section, variables, Path.cwd())
    del base
    console.print(f"loading tuned model {args.tuned}")
    tuned = load_model(args.tuned)
    out = _out_dir(args)
    assert before is not None
    finish_comparison(tuned.model, tuned.tokenizer, before, section, out, args.judge)
    console.print(f"report: {out / 'compare.html'} (also compare.md, compare.json)")
    return 0
