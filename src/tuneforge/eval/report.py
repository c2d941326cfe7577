"""Score a before/after comparison question by question and write it as JSON, Markdown and self-contained HTML.

Each question gets, per model: correct (when `expected` fragments are given), and exact match, ROUGE-L and
BLEU-4 (when a `reference` answer is given); then an outcome for the tuned model — win, tie or loss — from the
judge's verdict when there is one, else from correctness, else from ROUGE-L. Flips are questions whose correctness
changed: fixed (wrong before, right after) or broken (right before, wrong after). An answer caught in a repetition
loop is marked ↻ (and scored wrong): the tables count the loops of each model.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import asdict
from typing import Any

from tuneforge.eval.degenerate import repetition_loop
from tuneforge.eval.scores import bleu4, exact_match, rouge_l

__all__ = ["answer_mark", "html_report", "loop_counts", "markdown_report", "outcome_counts", "score_rows"]

_MARK = {True: "✓", False: "✗", None: "·"}
LOOP_MARK = "↻"


def answer_mark(row: dict[str, Any], side: str) -> str:
    """✓ right, ✗ wrong, · not scored, and ↻ after it when the answer is a repetition loop."""
    return _MARK[row[f"{side}_correct"]] + (LOOP_MARK if row[f"{side}_loop"] else "")


def _loop_note(row: dict[str, Any], side: str) -> str:
    return f" [{row[f'{side}_loop']}]" if row[f"{side}_loop"] else ""


def _metrics(answer: str, reference: str | None) -> dict[str, float]:
    if not reference:
        return {}
    refs = [reference]
    return {"exact": exact_match(answer, refs), "rouge_l": rouge_l(answer, refs), "bleu4": bleu4(answer, refs)}


def _outcome(row: dict[str, Any], verdict: str | None) -> str:
    if verdict is not None:
        return verdict
    before, after = row["before_correct"], row["after_correct"]
    if before is not None and after is not None and before != after:
        return "win" if after else "loss"
    if before is not None:
        return "tie"
    if row["after_loop"] and not row["before_loop"]:
        return "loss"
    if row["before_loop"] and not row["after_loop"]:
        return "win"
    if row["after_scores"]:
        delta = row["after_scores"]["rouge_l"] - row["before_scores"]["rouge_l"]
        return "win" if delta > 0.01 else "loss" if delta < -0.01 else "tie"
    return "unscored"


def score_rows(comparison: Any, verdicts: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per question: answers, correctness, metrics, outcome and flip."""
    rows = []
    before_ok, after_ok = comparison.correct(comparison.before), comparison.correct(comparison.after)
    for index, question in enumerate(comparison.questions):
        loops = [repetition_loop(comparison.before[index]), repetition_loop(comparison.after[index])]
        row = {
            **asdict(question),
            "before": comparison.before[index],
            "after": comparison.after[index],
            "before_correct": before_ok[index],
            "after_correct": after_ok[index],
            "before_scores": _metrics(comparison.before[index], question.reference),
            "after_scores": _metrics(comparison.after[index], question.reference),
            "before_loop": loops[0].describe() if loops[0] else None,
            "after_loop": loops[1].describe() if loops[1] else None,
        }
        row["outcome"] = _outcome(row, verdicts[index] if verdicts else None)
        flip = None
        if row["before_correct"] is not None and row["before_correct"] != row["after_correct"]:
            flip = "fixed" if row["after_correct"] else "broken"
        row["flip"] = flip
        rows.append(row)
    return rows


def outcome_counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{kind: {"win": n, "tie": n, "loss": n}} in first-seen kind order (unscored questions left out)."""
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        if row["outcome"] != "unscored":
            counts.setdefault(row["kind"], Counter())[row["outcome"]] += 1
    return {kind: {k: c.get(k, 0) for k in ("win", "tie", "loss")} for kind, c in counts.items()}


def loop_counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{kind: {"before": n, "after": n}}: answers caught in a repetition loop, per kind (every kind listed)."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        slot = counts.setdefault(row["kind"], {"before": 0, "after": 0})
        for side in ("before", "after"):
            slot[side] += row[f"{side}_loop"] is not None
    return counts


def _summary_cells(kind: str, totals: dict[str, Any], outcomes: dict[str, Any], loops: dict[str, Any]) -> list[str]:
    """kind, before, after, win, tie, loss, loops ("before → after") for one row of the summary table."""
    total = totals.get(kind)
    b = f"{total['before'][0]}/{total['before'][1]}" if total else "n/a"
    a = f"{total['after'][0]}/{total['after'][1]}" if total else "n/a"
    o = outcomes.get(kind, {"win": 0, "tie": 0, "loss": 0})
    loop = loops.get(kind, {"before": 0, "after": 0})
    return [kind, b, a, str(o["win"]), str(o["tie"]), str(o["loss"]), f"{loop['before']} → {loop['after']}"]


def summary_rows(rows: list[dict[str, Any]], totals: dict[str, Any]) -> list[list[str]]:
    """The summary table's rows, one per kind (columns: SUMMARY_COLUMNS)."""
    outcomes, loops = outcome_counts(rows), loop_counts(rows)
    return [_summary_cells(kind, totals, outcomes, loops) for kind in dict.fromkeys([*totals, *outcomes])]


SUMMARY_COLUMNS = ("kind", "before", "after", "win", "tie", "loss", "loops")


def metric_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{kind: {"before": {metric: mean}, "after": {...}}} over questions that have a reference answer."""
    means: dict[str, dict[str, dict[str, float]]] = {}
    for kind in dict.fromkeys(row["kind"] for row in rows):
        scored = [row for row in rows if row["kind"] == kind and row["after_scores"]]
        if scored:
            means[kind] = {
                side: {m: sum(r[f"{side}_scores"][m] for r in scored) / len(scored) for m in scored[0]["after_scores"]}
                for side in ("before", "after")
            }
    return means


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_report(rows: list[dict[str, Any]], totals: dict[str, Any], title: str) -> str:
    """The comparison as Markdown: a row per question, then totals, outcomes and flips."""
    lines = [f"# {title}", "", "| kind | question | before | after | outcome |", "|---|---|---|---|---|"]
    for row in rows:
        before = _cell(f"{answer_mark(row, 'before')} {row['before']}{_loop_note(row, 'before')}")
        after = _cell(f"{answer_mark(row, 'after')} {row['after']}{_loop_note(row, 'after')}")
        lines.append(f"| {row['kind']} | {_cell(row['question'])} | {before} | {after} | {row['outcome']} |")
    lines += ["", "| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in summary_rows(rows, totals)]
    for flip in ("fixed", "broken"):
        flipped = [row["question"] for row in rows if row["flip"] == flip]
        if flipped:
            lines += [
                "",
                f"**{flip}** ({'wrong before, right after' if flip == 'fixed' else 'right before, wrong after'}):",
            ]
            lines += [f"- {_cell(q)}" for q in flipped]
    return "\n".join(lines) + "\n"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;width:100%;margin:1em 0}
td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}th{background:#f3f3f3}
.win{background:#e6f6e6}.loss{background:#fbe4e4}.tie{background:#fafafa}.ok{color:#1a7f37}.bad{color:#c62828}
.num{text-align:right;font-variant-numeric:tabular-nums}pre{white-space:pre-wrap;margin:0;font-family:inherit}
.loop{color:#c62828;font-weight:bold}
"""


def _answer_cell(row: dict[str, Any], side: str) -> str:
    ok = row[f"{side}_correct"]
    css = "ok" if ok else "bad" if ok is False else ""
    scores = row[f"{side}_scores"]
    extra = " ".join(f"{k} {v:.2f}" for k, v in scores.items())
    note = f"<br><small>{html.escape(extra)}</small>" if extra else ""
    if row[f"{side}_loop"]:
        note += f'<br><small class="loop">{LOOP_MARK} {html.escape(row[f"{side}_loop"])}</small>'
    mark = html.escape(answer_mark(row, side))
    return f'<td><span class="{css}">{mark}</span> <pre>{html.escape(row[side])}</pre>{note}</td>'


def html_report(
    rows: list[dict[str, Any]], totals: dict[str, Any], title: str, notes: list[tuple[str, str]] | None = None
) -> str:
    """A self-contained HTML page: totals, win/tie/loss, loops, flips, and every question side by side; `notes`
    ((name, text) lines such as the forgetting checks) go above the tables."""
    e = html.escape
    head = "<tr>" + "".join(f"<th>{name}</th>" for name in SUMMARY_COLUMNS) + "</tr>"
    body = []
    for kind, *values in summary_rows(rows, totals):
        cells = "".join(f'<td class="num">{e(v)}</td>' for v in values)
        body.append(f"<tr><td>{e(kind)}</td>{cells}</tr>")
    extra = "".join(f"<p><b>{e(name)}</b>: {e(text)}</p>" for name, text in notes or [])
    flips = []
    for flip, meaning in (("fixed", "wrong before, right after"), ("broken", "right before, wrong after")):
        items = "".join(f"<li>{e(r['question'])}</li>" for r in rows if r["flip"] == flip)
        if items:
            flips.append(f"<h2>{flip} <small>({meaning})</small></h2><ul>{items}</ul>")
    detail = [
        f'<tr class="{r["outcome"]}"><td>{e(r["kind"])}</td><td>{e(r["question"])}</td>'
        f"{_answer_cell(r, 'before')}{_answer_cell(r, 'after')}<td>{e(r['outcome'])}</td></tr>"
        for r in rows
    ]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{e(title)}</h1>{extra}<table>{head}{''.join(body)}</table>{''.join(flips)}"
        "<h2>Every question</h2><table><tr><th>kind</th><th>question</th><th>before</th><th>after</th>"
        f"<th>outcome</th></tr>{''.join(detail)}</table></body></html>\n"
    )
