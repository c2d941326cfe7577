"""load → parse → check → render → split: the data path of a run, counting every row's fate."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.catalog import DataSource, resolve_sources
from tuneforge.data.files import RawRow, read_rows
from tuneforge.data.formats import FORMATS, detect_format
from tuneforge.data.formats.base import check_roles
from tuneforge.data.messages import Conversation, RowError
from tuneforge.data.quality import DataReport
from tuneforge.data.render import RenderedSample, render_conversation
from tuneforge.errors import UserError

__all__ = ["PreparedData", "fill_placeholders", "load_conversations", "prepare_samples", "split_validation"]

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass
class PreparedData:
    """Rendered training and validation samples plus the report of what happened to every row."""

    train: list[RenderedSample]
    val: list[RenderedSample]
    report: DataReport = field(default_factory=DataReport)


def fill_placeholders(value: Any, variables: dict[str, str]) -> Any:
    """Replace {{key}} placeholders (spaces inside the braces allowed) for every key in `variables`."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [fill_placeholders(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: fill_placeholders(item, variables) for key, item in value.items()}
    return value


def _unfilled(conversation: Conversation) -> str | None:
    for message in conversation.messages:
        found = _PLACEHOLDER.search(message.content)
        if found:
            return found.group(1)
    return None


def _parse_row(raw: RawRow, source: DataSource, fmt: str, variables: dict[str, str]) -> Conversation:
    where = f"{source.path}:{raw.line}"
    if raw.error:
        raise RowError("malformed JSON", raw.error)
    if not isinstance(raw.value, dict):
        raise RowError("malformed row", f"expected an object, got {type(raw.value).__name__}")
    row_format = fmt if fmt != "auto" else detect_format(raw.value)
    if row_format is None:
        raise RowError("unknown format", f"cannot tell the format from keys {sorted(raw.value)[:6]}")
    parsed = FORMATS.get(row_format)(fill_placeholders(raw.value, variables))
    check_roles(parsed.messages)
    conversation = Conversation(parsed.messages, source=where, dataset=source.name, tools=parsed.tools)
    missing = _unfilled(conversation)
    if missing:
        raise UserError(
            f"{where}: the data uses the placeholder {{{{{missing}}}}} but data.variables has no {missing!r}; "
            f"set it, e.g. data.variables.{missing}=YourValue"
        )
    return conversation


def load_conversations(
    entries: list[str],
    fmt: str = "auto",
    variables: dict[str, str] | None = None,
    max_samples: int | None = None,
    base_dir: Path | None = None,
    report: DataReport | None = None,
) -> tuple[list[Conversation], DataReport]:
    """Read every row of every source into Conversations; bad rows are counted in the report, never lost."""
    report = report or DataReport()
    conversations: list[Conversation] = []
    for source in resolve_sources(entries, base_dir):
        for count, raw in enumerate(read_rows(source.path)):
            if max_samples is not None and count >= max_samples:
                break
            report.total += 1
            try:
                conversations.append(_parse_row(raw, source, fmt, variables or {}))
            except RowError as err:
                report.drop(f"{source.path}:{raw.line}", err.reason, err.detail)
    return conversations, report


def prepare_samples(
    conversations: list[Conversation], tokenizer: Any, cutoff_len: int, report: DataReport
) -> list[RenderedSample]:
    """Render conversations into samples; rows that cannot be rendered are counted, truncations reported."""
    samples = []
    for conversation in conversations:
        try:
            sample = render_conversation(tokenizer, conversation, cutoff_len)
        except RowError as err:
            report.drop(conversation.source, err.reason, err.detail)
            continue
        if sample.truncated:
            report.truncate(conversation.source, f"longer than data.cutoff_len={cutoff_len} tokens")
        report.kept += 1
        report.per_dataset[conversation.dataset] += 1
        samples.append(sample)
    if not samples:
        details = "; ".join(report.problems[:3])
        raise UserError(f"no training samples left after filtering ({report.summary()}). First problems: {details}")
    return samples


def split_validation(
    samples: list[RenderedSample], val_size: float, seed: int
) -> tuple[list[RenderedSample], list[RenderedSample]]:
    """Deterministic shuffle-and-split; val_size < 1 is a fraction, >= 1 a count; at least one train sample."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    count = int(val_size) if val_size >= 1 else int(round(len(samples) * val_size))
    count = min(count, len(samples) - 1)
    if val_size > 0 and count == 0 and len(samples) >= 10:
        count = 1
    val = [samples[i] for i in order[:count]]
    train = [samples[i] for i in order[count:]]
    return train, val
