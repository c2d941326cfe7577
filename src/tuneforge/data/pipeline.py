"""read → parse → clean → render → mix → split: the data path of a run, counting every row's fate."""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tuneforge.data.catalog import DataSource, resolve_sources
from tuneforge.data.files import RawRow, read_rows
from tuneforge.data.formats import FORMATS, detect_format
from tuneforge.data.formats.base import ParsedRow, check_answer, check_roles, json_type
from tuneforge.data.formats.llamafactory_v1 import loss_weight_note
from tuneforge.data.llamafactory import catalog_rows
from tuneforge.data.messages import Conversation, Message, RowError
from tuneforge.data.quality import DataReport, DuplicateFinder
from tuneforge.data.render import MaskOptions, RenderedSample, render_samples
from tuneforge.errors import UserError

__all__ = [
    "UNFILLED",
    "CleaningOptions",
    "PreparedData",
    "fill_placeholders",
    "load_conversations",
    "mix_datasets",
    "placeholder_hint",
    "prepare_samples",
    "split_validation",
    "strip_thinking",
]

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_THINKING = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
UNFILLED = "unfilled placeholder"
# what a format parser may raise on a value of a shape it did not foresee: still one bad row, never the whole run
_PARSER_FAULTS = (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError)


@dataclass
class PreparedData:
    """Rendered training and validation samples plus the report of what happened to every row."""

    train: list[RenderedSample]
    val: list[RenderedSample]
    report: DataReport = field(default_factory=DataReport)


@dataclass(frozen=True)
class CleaningOptions:
    """How rows are read and cleaned before rendering (from the data config section)."""

    fmt: str = "auto"
    variables: dict[str, str] = field(default_factory=dict)
    max_samples: int | None = None
    keep_thinking: bool = True
    dedup: str = "exact"
    shuffle: bool = True
    seed: int = 42
    placeholders: str = "error"


def fill_placeholders(value: Any, variables: dict[str, str]) -> Any:
    """Replace {{key}} placeholders (spaces inside the braces allowed) for every key in `variables`."""
    if not variables:
        return value
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [fill_placeholders(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: fill_placeholders(item, variables) for key, item in value.items()}
    return value


def strip_thinking(message: Message | None) -> Message | None:
    """The message without <think>…</think> blocks (assistant turns only)."""
    if message is None or message.role != "assistant" or "<think>" not in message.content:
        return message
    return replace(message, content=_THINKING.sub("", message.content))


def _texts(conversation: Conversation) -> list[str]:
    texts = [conversation.text or ""] + [m.content for m in conversation.messages]
    return texts + [m.content for m in (conversation.chosen, conversation.rejected) if m is not None]


def _check_placeholders(conversation: Conversation) -> None:
    """A {{name}} left after filling (no value in data.variables) would train literally: the row is dropped."""
    names = list(dict.fromkeys(found for text in _texts(conversation) for found in _PLACEHOLDER.findall(text)))
    if not names:
        return
    listed = ", ".join(f"{{{{{name}}}}}" for name in names)
    settings = " and ".join(f"data.variables.{name}=YourValue" for name in names)
    verb = "has" if len(names) == 1 else "have"
    raise RowError(
        UNFILLED,
        f"{listed} {verb} no value in data.variables: set {settings}, or set data.placeholders: keep to train "
        "such text as written",
    )


def placeholder_hint(report: DataReport) -> str:
    """For identity-style data: which data.variables to set, when rows were dropped for placeholders without one."""
    names: Counter[str] = Counter()
    for problem in report.issues:
        if problem.reason == UNFILLED:
            names.update(_PLACEHOLDER.findall(problem.detail))
    if not names:
        return ""
    uses = ", ".join(f"{{{{{name}}}}} in {count}" for name, count in names.most_common())
    settings = " and ".join(f"data.variables.{name}=YourValue" for name in names)
    return (
        f" Rows use placeholders that have no value ({uses} rows): set {settings} (identity data needs them), "
        "or set data.placeholders: keep to train the text as written."
    )


def _check_thinking(conversation: Conversation) -> None:
    """With keep_thinking off, an answer still holding <think> has a block never closed: half a trace would train."""
    answers = [m for m in [*conversation.messages, conversation.chosen, conversation.rejected] if m is not None]
    for message in answers:
        if message.role == "assistant" and "<think>" in message.content:
            raise RowError("unclosed thinking", "an assistant answer has <think> without </think>")


def _row_format(raw: RawRow, source: DataSource, fmt: str) -> str:
    chosen = source.formatting or fmt
    if chosen != "auto":
        return chosen
    detected = detect_format(raw.value)
    if detected is None:
        raise RowError("unknown format", f"cannot tell the format from keys {sorted(raw.value)[:6]}")
    return detected


def _validate(conversation: Conversation) -> None:
    if conversation.kind in ("text", "classify"):
        if not (conversation.text or "").strip():
            raise RowError("empty text", "the text is empty")
        return
    if conversation.kind == "preference":
        check_roles(conversation.messages, needs_answer=False)
        check_answer(conversation.chosen, "chosen")
        check_answer(conversation.rejected, "rejected")
        return
    check_roles(conversation.messages)


def _parse(raw: RawRow, source: DataSource, options: CleaningOptions) -> ParsedRow:
    row_format = _row_format(raw, source, options.fmt)
    parser = FORMATS.get(row_format)
    try:
        value = fill_placeholders(raw.value, options.variables)
        return parser(value, source.columns) if source.columns is not None else parser(value)
    except RowError:
        raise
    except _PARSER_FAULTS as err:
        detail = f"it cannot be read as {row_format} ({type(err).__name__}: {err})"
        raise RowError("malformed row", detail) from err


def parse_row(raw: RawRow, source: DataSource, options: CleaningOptions) -> Conversation:
    """One raw row → a checked Conversation; a RowError says why the row cannot be used."""
    if raw.error:
        raise RowError(raw.reason or _read_reason(source), raw.error)
    if not isinstance(raw.value, dict):
        raise RowError("malformed row", f"expected an object, got {json_type(raw.value)}")
    parsed = _parse(raw, source, options)
    conversation = Conversation(
        parsed.messages,
        source=raw.where(source.path),
        dataset=source.dataset,
        tools=parsed.tools,
        chosen=parsed.chosen,
        rejected=parsed.rejected,
        label=parsed.label,
        text=parsed.text,
        category=parsed.category,
    )
    if not options.keep_thinking:
        conversation.messages = [strip_thinking(m) for m in conversation.messages]  # type: ignore[misc]
        conversation.chosen, conversation.rejected = strip_thinking(parsed.chosen), strip_thinking(parsed.rejected)
        _check_thinking(conversation)
    _validate(conversation)
    if options.placeholders != "keep":
        _check_placeholders(conversation)
    return conversation


def _read_reason(source: DataSource) -> str:
    return "malformed row" if source.path.suffix.lower() == ".csv" else "malformed JSON"


def _selected_rows(source: DataSource, options: CleaningOptions, report: DataReport) -> list[RawRow]:
    rows, note = catalog_rows(list(read_rows(source.path)), source, options.seed)
    report.notes += [note] if note else []
    limit = options.max_samples
    if limit is None or len(rows) <= limit:
        return rows
    if options.shuffle:
        keep = sorted(random.Random(options.seed).sample(range(len(rows)), limit))
        rows = [rows[i] for i in keep]
    else:
        rows = rows[:limit]
    report.notes.append(f"{source.name}: data.max_samples={limit} used {limit} of its rows")
    return rows


def read_sources(
    sources: list[DataSource], options: CleaningOptions, report: DataReport, finder: DuplicateFinder | None = None
) -> list[Conversation]:
    """Every usable row of every source; bad rows and duplicates are counted in the report, never lost."""
    finder = finder or DuplicateFinder()
    conversations: list[Conversation] = []
    for source in sources:
        report.notes += [note for note in source.notes if note not in report.notes]
        for raw in _selected_rows(source, options, report):
            report.total += 1
            report.read_per_dataset[source.dataset] += 1
            try:
                conversation = parse_row(raw, source, options)
            except RowError as err:
                report.drop(raw.where(source.path), err.reason, err.detail)
                continue
            if _is_duplicate(conversation, finder, options.dedup, report):
                continue
            conversations.append(conversation)
    note = loss_weight_note(conversations)
    report.notes += [note] if note else []
    return conversations


def _is_duplicate(conversation: Conversation, finder: DuplicateFinder, dedup: str, report: DataReport) -> bool:
    found = finder.check(conversation)
    if found is None:
        return False
    reason, first = found
    detail = f"same as {first}"
    drop = dedup == "normalized" or (dedup == "exact" and reason == "exact duplicate")
    if drop:
        report.drop(conversation.source, reason, detail)
    else:
        report.flag(conversation.source, reason, detail)
    return drop


def load_conversations(
    entries: list[str],
    fmt: str = "auto",
    variables: dict[str, str] | None = None,
    max_samples: int | None = None,
    base_dir: Path | None = None,
    report: DataReport | None = None,
    **cleaning: Any,
) -> tuple[list[Conversation], DataReport]:
    """Read data files / folders / bundled names into Conversations (see `read_sources`)."""
    report = report or DataReport()
    options = CleaningOptions(fmt=fmt, variables=variables or {}, max_samples=max_samples, **cleaning)
    return read_sources(resolve_sources(entries, base_dir), options, report), report


def prepare_samples(
    conversations: list[Conversation],
    tokenizer: Any,
    cutoff_len: int,
    report: DataReport,
    mask: MaskOptions | None = None,
    overlength: str = "truncate",
    min_tokens: int = 0,
) -> list[RenderedSample]:
    """Render conversations into samples; rows that cannot be rendered are counted, truncations reported."""
    samples = []
    rendered = render_samples(tokenizer, conversations, cutoff_len, mask, faults=(RowError, *_PARSER_FAULTS))
    for conversation, sample in zip(conversations, rendered, strict=True):
        if isinstance(sample, RowError):
            report.drop(conversation.source, sample.reason, sample.detail)
            continue
        if isinstance(sample, Exception):  # a template or tokenizer choking on this row's content
            report.drop(conversation.source, "cannot be rendered", f"{type(sample).__name__}: {sample}")
            continue
        if sample.truncated and overlength == "drop":
            report.drop(conversation.source, "over the cutoff length", f"longer than data.cutoff_len={cutoff_len}")
            continue
        if len(sample.input_ids) < min_tokens:
            report.drop(
                conversation.source, "too short", f"{len(sample.input_ids)} tokens < data.min_tokens={min_tokens}"
            )
            continue
        if sample.truncated:
            report.truncate(conversation.source, f"longer than data.cutoff_len={cutoff_len} tokens, cut to it")
        report.keep(conversation.dataset, sample.truncated)
        samples.append(sample)
    if not samples:
        details = "; ".join(report.problems[:3])
        raise UserError(
            f"no training samples left after filtering ({report.summary()}).{placeholder_hint(report)} "
            f"First problems: {details}"
        )
    return samples


def mix_datasets(
    samples: list[RenderedSample], order: list[str], ratios: list[float] | None, seed: int, report: DataReport
) -> list[RenderedSample]:
    """Concatenate, or sample the datasets named in `order` to `ratios` (largest mix without repeating rows).

    Samples of datasets not in `order` (e.g. self-replay) are always kept in full. The realised mix is noted.
    """
    if not ratios:
        return samples
    groups: dict[str, list[RenderedSample]] = defaultdict(list)
    for sample in samples:
        groups[sample.dataset].append(sample)
    weights = [r / sum(ratios) for r in ratios]
    empty = [name for name, weight in zip(order, weights, strict=True) if weight > 0 and not groups[name]]
    if empty:  # its share of nothing would scale every other dataset down to nothing too
        raise UserError(
            f"data.mix_ratios gives {', '.join(empty)} a share, but no usable rows of it are left "
            f"({report.summary()}); fix that data or give it ratio 0"
        )
    total = min(len(groups[name]) / weight for name, weight in zip(order, weights, strict=True) if weight > 0)
    rng = random.Random(seed)
    mixed = [s for s in samples if s.dataset not in order]
    counts = {}
    for name, weight in zip(order, weights, strict=True):
        counts[name] = min(len(groups[name]), int(round(total * weight)))
        chosen = rng.sample(range(len(groups[name])), counts[name])
        mixed += [groups[name][i] for i in chosen]
        for index in sorted(set(range(len(groups[name]))) - set(chosen)):
            report.unkeep(groups[name][index], "left out by the mix", f"data.mix_ratios uses {counts[name]} of {name}")
    used = sum(counts.values()) or 1
    shares = ", ".join(f"{name} {count} ({100 * count / used:.1f}%)" for name, count in counts.items())
    report.notes.append(f"mix {':'.join(f'{r:g}' for r in ratios)} realised as {shares}")
    report.mixed = counts
    return mixed


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
