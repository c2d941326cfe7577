"""The data preview: samples as the model sees them, supervised tokens highlighted, and the validation report.

It runs the training pipeline itself (tuneforge.data.build.build_dataset with the form's data section and the
model's tokenizer and chat template), like `tuneforge data inspect` and `validate`; its cache is the one
training uses, so a previewed dataset is not tokenised twice.
"""

from __future__ import annotations

import html
import os
import threading
from dataclasses import dataclass
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.data.build import build_dataset, check_drop_ratio
from tuneforge.data.quality import DataReport
from tuneforge.data.stats import supervised_runs
from tuneforge.data.templates import ensure_chat_template
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.models.load import load_tokenizer
from tuneforge.paths import data_cache_dir
from tuneforge.webui.i18n import text
from tuneforge.webui.workspace import Workspace

__all__ = ["DataPreview", "preview_data", "report_text", "sample_html"]

_SUPERVISED = "background:#bbf7d0;color:#14532d;border-radius:2px"
_CONTEXT = "color:#6b7280"
_tokenizers: dict[tuple[str, bool], Any] = {}
_lock = threading.Lock()


@dataclass
class DataPreview:
    """What the preview shows: samples (HTML), the validation report (text) and the method check (text)."""

    samples_html: str
    report: str
    method_check: str
    fits: bool


def _tokenizer(name: str, trust_remote_code: bool) -> Any:
    with _lock:
        key = (name, trust_remote_code)
        if key not in _tokenizers:
            _tokenizers[key] = load_tokenizer(name, trust_remote_code)
        return _tokenizers[key]


def sample_html(tokenizer: Any, sample: Any, title: str) -> str:
    """One rendered sample: its text, the supervised (loss-carrying) tokens on green."""
    spans = []
    for piece, supervised in supervised_runs(tokenizer, sample):
        style = _SUPERVISED if supervised else _CONTEXT
        spans.append(f'<span style="{style}">{html.escape(piece)}</span>')
    return (
        f'<div class="tf-sample"><div><b>{html.escape(title)}</b></div>'
        f'<pre style="white-space:pre-wrap;word-break:break-word;margin:4px 0 12px">{"".join(spans)}</pre></div>'
    )


def report_text(report: DataReport, cutoff_len: int, drop_limit: float, lang: str) -> str:
    """The validation report: every counted reason, the first problem rows with file:line, the summary."""
    lines = [report.summary()]
    for reason, count in report.dropped.most_common():
        lines.append(f"  {text('preview.dropped', lang)}: {reason}: {count}")
    if report.truncated:
        lines.append(f"  {text('preview.truncated', lang, n=report.truncated, cutoff=cutoff_len)}")
    for reason, count in report.flagged.most_common():
        lines.append(f"  {text('preview.flagged', lang)}: {reason}: {count}")
    lines += [f"  {note}" for note in report.notes]
    for problem in report.issues[:20]:
        lines.append(f"{problem.where}: {problem.reason}: {problem.detail}")
    if len(report.issues) > 20:
        lines.append(text("preview.more_issues", lang, n=len(report.issues) - 20))
    try:
        check_drop_ratio(report, drop_limit)
    except UserError as err:
        lines.append(f"{text('preview.would_stop', lang)} {err}")
    return "\n".join(lines)


def preview_data(config: RunConfig, ws: Workspace, lang: str, count: int = 3) -> DataPreview:
    """Render the form's data with its model's tokenizer; `config` must hold absolute (sandboxed) paths."""
    tokenizer = _tokenizer(config.model.name_or_path, config.model.trust_remote_code)
    ensure_chat_template(tokenizer, config.data.template)
    data = config.data.model_copy(update={"max_drop_ratio": 1.0})
    prepared, _ = build_dataset(data, tokenizer, config.train.seed, ws.root, cache_dir=data_cache_dir())
    samples = prepared.train + prepared.val
    blocks = []
    for index, sample in enumerate(samples[:count], start=1):
        parts = [("", sample)] if sample.rejected is None else [("chosen", sample), ("rejected", sample.rejected)]
        for label, part in parts:
            title = text(
                "preview.sample_title", lang, i=index, source=sample.source.replace(f"{ws.root}{os.sep}", ""),
                kind=sample.kind + (f", {label}" if label else ""),
                tokens=len(part.input_ids), supervised=part.supervised_tokens,
            )  # fmt: skip
            blocks.append(sample_html(tokenizer, part, title))
    legend = f'<p><span style="{_SUPERVISED}">{html.escape(text("preview.legend", lang))}</span></p>'
    counts = text("preview.counts", lang, train=len(prepared.train), val=len(prepared.val))
    report = report_text(prepared.report, config.data.cutoff_len, config.data.max_drop_ratio, lang)
    method = config.method.name
    kinds = {s.kind for s in samples}
    try:
        METHODS.get(method).check_data(method, kinds)
        check, fits = text("preview.fits", lang, method=method, kinds=", ".join(sorted(kinds))), True
    except UserError as err:
        check, fits = f"{text('preview.does_not_fit', lang)} {err}", False
    return DataPreview(legend + f"<p>{html.escape(counts)}</p>" + "".join(blocks), report, check, fits)
