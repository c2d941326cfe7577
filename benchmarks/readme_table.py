"""The README's performance table, generated from benchmarks/results/*.json (the newest full run of each job).

    python benchmarks/readme_table.py [README.md README_zh.md] [--results benchmarks/results]

Writes the same block between `<!-- bench:start -->` and `<!-- bench:end -->` in every README given; the harness
prints the same table after a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from measure import FLOPS_NOTE, TOKENS_NOTE

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
HEADER = (
    "| job | tool | wall time | real tok/s | supervised tok/s | model FLOP/s (share of matmul peak) | peak memory "
    "| mean loss | vs LLaMA-Factory |\n|---|---|---|---|---|---|---|---|---|"
)
REFERENCE = "LLaMA-Factory"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _flops(value: float | None, share: float | None) -> str:
    if value is None:
        return "—"
    text = f"{value / 1e9:.1f} GFLOP/s"
    return f"{text} ({share:.1%})" if share is not None else text


def _memory(row: dict[str, Any]) -> str:
    value = row.get("peak_memory_bytes")
    return "—" if not value else f"{value / 2**30:.2f} GiB {row.get('memory', 'RSS')}"


def _versus(row: dict[str, Any], reference: dict[str, Any] | None) -> str:
    if not row.get("ok", True):
        return "—"
    if row["tool"] == REFERENCE:
        return "1 (reference)"
    parts = []
    if reference and row.get("wall_s") and reference.get("wall_s"):
        speed = reference["wall_s"] / row["wall_s"]
        parts.append(f"{speed:.2f}× faster" if speed >= 1 else f"{1 / speed:.2f}× slower")
    if reference and row.get("peak_memory_bytes") and reference.get("peak_memory_bytes"):
        parts.append(f"{row['peak_memory_bytes'] / reference['peak_memory_bytes']:.2f}× memory")
    return ", ".join(parts) or "—"


def table_rows(result: dict[str, Any]) -> list[str]:
    """Markdown table rows of one result: one per tool run, with the ratio to LLaMA-Factory."""
    rows = result["rows"]
    reference = next((r for r in rows if r["tool"] == REFERENCE and r.get("ok", True)), None)
    lines = []
    for row in rows:
        wall = _duration(row.get("wall_s")) if row.get("ok", True) else f"failed (exit {row.get('returncode')})"
        loss = "—" if row.get("mean_loss") is None else f"{row['mean_loss']:.4f}"
        cells = [
            f"`{result['job']}`",
            row.get("label", row["tool"]),
            wall,
            _rate(row.get("real_tokens_per_s")),
            _rate(row.get("supervised_tokens_per_s")),
            _flops(row.get("flops_per_s"), row.get("flops_share")),
            _memory(row),
            loss,
            _versus(row, reference),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def note(result: dict[str, Any]) -> str:
    """One line under the table: the job, its data, the machine, the versions and tuneforge's estimate."""
    machine, data = result["machine"], result["data"]
    tf, lf = result["versions"]["tuneforge"], result["versions"].get("llamafactory", {})
    load = " → ".join(f"{x[0]:.1f}" for x in (machine["load_before"], machine["load_after"]))
    text = (
        f"- `{result['job']}` ({result['date']}): {result['description']}; {data['rows']:,} rows"
        f"{' (a quick check with fewer rows than the job has)' if result.get('quick') else ''}, "
        f"{data['real_tokens']:,} real / {data['supervised_tokens']:,} supervised tokens. {machine['cpu']}, "
        f"{machine['cores']} cores, matmul peak {machine['matmul_gflops']:.0f} GFLOP/s {machine['matmul_dtype']}, "
        f"load average {load}. tuneforge {tf.get('tuneforge')} (torch {tf.get('torch')}, transformers "
        f"{tf.get('transformers')}), LLaMA-Factory {lf.get('llamafactory', '—')} (torch {lf.get('torch', '—')}, "
        f"transformers {lf.get('transformers', '—')})."
    )
    runs = result.get("runs", {})
    if "tuneforge (cache hit)" in runs:
        cold, hit, lf = (
            runs.get(k, {}).get("extra", {}) for k in ("tuneforge (cold)", "tuneforge (cache hit)", REFERENCE)
        )
        text += (
            f" Inside the processes: tuneforge prepares in {_duration(cold.get('prep_s'))} (read, render, mask, "
            f"dedup, cache write {_duration(cold.get('build_s'))}; pack {_duration(cold.get('pack_s'))}; "
            f"{cold.get('samples', '—')} samples in {cold.get('packs', '—')} packs), "
            f"{_duration(hit.get('prep_s'))} from its cache; LLaMA-Factory preprocesses in "
            f"{_duration(lf.get('prep_s'))} ({lf.get('samples', '—')} samples, no packing)."
        )
    estimate = result.get("estimate_vs_measured")
    if estimate:
        text += (
            f" `tuneforge estimate`: peak {estimate['estimate_peak_bytes'] / 2**30:.2f} GiB, "
            f"{_duration(estimate['estimate_train_s'])} of training vs measured "
            f"{estimate['measured_peak_bytes'] / 2**30:.2f} GiB, {_duration(estimate['measured_train_s'])}"
        )
        recomputed = (result.get("estimate") or {}).get("recomputed")
        text += f" (estimated again {recomputed[:10]} by `harness.py --re-estimate`)." if recomputed else "."
    return text


def render(results: list[dict[str, Any]]) -> str:
    """The table and one note per job."""
    if not results:
        return "No benchmark results yet: run `make bench`."
    lines = [HEADER]
    for result in results:
        lines += table_rows(result)
    lines.append("")
    lines += [note(result) for result in results]
    lines += [
        "",
        "Wall time is the whole command, start to exit (imports, model loading, data preparation, saving), timed "
        "by the harness; tokens/s and FLOP/s divide by it. Peak memory is the largest resident set of the "
        "command's process tree (polled every 0.1 s), or the GPU memory nvidia-smi reports for it.",
        "",
        f"FLOP/s: {FLOPS_NOTE} Tokens: {TOKENS_NOTE}.",
    ]
    return "\n".join(lines)


def latest_results(folder: Path) -> list[dict[str, Any]]:
    """The newest result of each job in `folder`: a full run wins over a --rows quick check, whatever their dates."""
    newest: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        if "rows" not in result or "job" not in result:
            continue
        rank = (not result.get("quick"), result["timestamp"])
        current = newest.get(result["job"])
        if current is None or rank >= (not current.get("quick"), current["timestamp"]):
            newest[result["job"]] = result
    return sorted(newest.values(), key=lambda r: r.get("order", 0))


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the bench markers replaced by `block`."""
    if START not in text or END not in text:
        raise SystemExit(f"README has no {START} … {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readmes", nargs="*", help="README files to update (default: README.md and README_zh.md)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    readmes = [Path(p) for p in args.readmes] or [
        p for p in (ROOT / "README.md", ROOT / "README_zh.md") if p.is_file()
    ]
    block = render(latest_results(Path(args.results)))
    for readme in readmes:
        readme.write_text(replace_block(readme.read_text(encoding="utf-8"), block), encoding="utf-8")
        print(f"updated the performance table in {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
