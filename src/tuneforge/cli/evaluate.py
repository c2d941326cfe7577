"""`tuneforge eval MODEL_OR_RUN`: loss/perplexity on a dataset, multiple-choice benchmarks, generation metrics.

  --data FILE      validation loss and perplexity (any format tuneforge reads)
  --mc DIR         MMLU / C-Eval / CMMLU folder: per-subject accuracy by option log-likelihood, few-shot
  --predict FILE   answers to each row's prompt vs its reference answer: BLEU-4, ROUGE-1/2/L
  --pairs FILE     a reward model (a method.name=reward run) ranking chosen/rejected pairs: accuracy and margin

Results go to RUN_DIR/eval/*.json (or --out) and, for a run directory, into its model card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser"]

NAME = "eval"
HELP = "loss/perplexity, multiple-choice benchmarks, generation metrics"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        NAME,
        help=HELP,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="run directory, zoo name, Hugging Face folder or .gguf file")
    parser.add_argument("--data", action="append", default=[], help="dataset for loss and perplexity (repeatable)")
    parser.add_argument("--mc", help="multiple-choice benchmark folder (MMLU, C-Eval or CMMLU layout)")
    parser.add_argument("--split", help="benchmark split folder (default: test, else val)")
    parser.add_argument("--subjects", help="comma-separated subjects (default: all)")
    parser.add_argument("--shots", type=int, default=5, help="solved dev examples before each question")
    parser.add_argument("--predict", action="append", default=[], help="dataset with reference answers (repeatable)")
    parser.add_argument(
        "--pairs", action="append", default=[], help="preference pairs ranked by a reward-model run (repeatable)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-samples", type=int, help="at most N rows per data file")
    parser.add_argument("--cutoff-len", type=int, default=1024)
    parser.add_argument("--var", action="append", default=[], metavar="KEY=VALUE", help="fill {{KEY}} in the data")
    parser.add_argument("--out", help="where to write the JSON results (default: RUN_DIR/eval or ./eval)")
    parser.set_defaults(handler=run)


def _out_dir(args: argparse.Namespace) -> Path:
    from tuneforge.cli.options import output_dir

    return output_dir(args.out, args.model, "eval")


def _data_section(args: argparse.Namespace, files: list[str]) -> Any:
    from tuneforge.cli.options import parse_variables
    from tuneforge.config.schema import DataSection

    return DataSection(
        train=files,
        val_size=0,
        cutoff_len=args.cutoff_len,
        max_samples=args.max_samples,
        variables=parse_variables(args.var),
        max_drop_ratio=1.0,
        dedup="none",
        cache=False,
    )


def _loss(args: argparse.Namespace, loaded: Any) -> dict[str, Any]:
    from tuneforge.data.build import build_dataset
    from tuneforge.eval.perplexity import loss_and_perplexity

    prepared, _ = build_dataset(_data_section(args, args.data), loaded.tokenizer, 0, Path.cwd())
    result = loss_and_perplexity(loaded.model, prepared.train)
    return {**result, "data": args.data, "rows": prepared.report.summary()}


def _conversations(args: argparse.Namespace, files: list[str]) -> list[Any]:
    """The rows of `files` as conversations, in file order, none dropped for being repeated."""
    from tuneforge.data.build import cleaning_options, data_sources
    from tuneforge.data.pipeline import read_sources
    from tuneforge.data.quality import DataReport
    from tuneforge.progress import console

    data = _data_section(args, files)
    data.shuffle = False
    report = DataReport()
    conversations = read_sources(data_sources(data, Path.cwd()), cleaning_options(data, seed=0), report)
    if report.dropped_total:
        console.print(f"[yellow]{report.dropped_total} row(s) of {', '.join(files)} not used:[/]")
        console.print(report.full_text(), markup=False)
    return conversations


def _predict(args: argparse.Namespace, loaded: Any, out: Path) -> dict[str, Any]:
    from tuneforge.eval.predict import predict_and_score

    conversations = _conversations(args, args.predict)
    metrics, rows = predict_and_score(loaded.model, loaded.tokenizer, conversations, args.max_new_tokens)
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {**metrics, "items": len(rows), "data": args.predict}


def _pairs(args: argparse.Namespace) -> dict[str, Any]:
    from tuneforge.errors import UserError
    from tuneforge.eval.ranking import rank_pairs
    from tuneforge.methods.reward import load_reward_model

    pairs = [c for c in _conversations(args, args.pairs) if c.kind == "preference"]
    if not pairs:
        raise UserError(f"--pairs {', '.join(args.pairs)}: no chosen/rejected pairs found")
    return {**rank_pairs(load_reward_model(args.model), pairs), "data": args.pairs}


def _mc(args: argparse.Namespace, loaded: Any) -> dict[str, Any]:
    from tuneforge.eval.multiple_choice import load_benchmark, score_benchmark

    subjects = [s.strip() for s in args.subjects.split(",")] if args.subjects else None
    items, dev = load_benchmark(Path(args.mc), args.split, subjects)
    return {**score_benchmark(loaded.model, loaded.tokenizer, items, dev, args.shots), "benchmark": args.mc}


def _print(results: dict[str, dict[str, Any]]) -> list[str]:
    from tuneforge.progress import console

    lines = []
    if "loss" in results:
        r = results["loss"]
        lines.append(
            f"loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f} on {r['samples']} samples ({r['tokens']} tokens)"
        )
    if "multiple_choice" in results:
        r = results["multiple_choice"]
        lines.append(
            f"multiple choice: accuracy {100 * r['accuracy']:.1f}% on {r['items']} questions, {r['shots']}-shot"
        )
        lines += [f"  {s}: {100 * v['accuracy']:.1f}% of {v['items']}" for s, v in r["per_subject"].items()]
    if "predict" in results:
        r = results["predict"]
        names = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
        lines.append(f"generation on {r['items']} prompts: " + ", ".join(f"{n} {r[n]:.2f}" for n in names))
    if "ranking" in results:
        r = results["ranking"]
        lines.append(
            f"reward model: {100 * r['accuracy']:.1f}% of {r['pairs']} pairs ranked right, margin {r['margin']:.3f}"
        )
    for line in lines:
        console.print(line, highlight=False)
    return lines


def run(args: argparse.Namespace) -> int:
    from tuneforge.errors import UserError
    from tuneforge.models.load import load_model
    from tuneforge.models.rundir import append_to_model_card, is_run_dir

    if not (args.data or args.mc or args.predict or args.pairs):
        raise UserError("nothing to evaluate: give --data FILE, --mc DIR, --predict FILE and/or --pairs FILE")
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    if args.pairs:
        results["ranking"] = _pairs(args)
    loaded = load_model(args.model) if args.data or args.mc or args.predict else None
    if args.data:
        results["loss"] = _loss(args, loaded)
    if args.mc:
        results["multiple_choice"] = _mc(args, loaded)
    if args.predict:
        results["predict"] = _predict(args, loaded, out)
    for name, result in results.items():
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    lines = _print(results)
    if is_run_dir(args.model):
        append_to_model_card(Path(args.model), "Evaluation", lines)
    from tuneforge.progress import console

    console.print(f"results: {', '.join(str(out / f'{n}.json') for n in results)}")
    return 0
