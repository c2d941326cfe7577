"""The whole data path of a run from its `data` config section, with a tokenised cache keyed by content hash.

The cache key covers the bytes of every data file, the tokenizer (vocabulary and chat template), every data option
and the seed, so a change to any of them re-tokenises; an unchanged run reuses the samples and their report.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tuneforge.config.schema import DataSection
from tuneforge.data.catalog import DataSource, resolve_sources
from tuneforge.data.llamafactory import resolve_catalog
from tuneforge.data.messages import Conversation
from tuneforge.data.pipeline import (
    CleaningOptions,
    PreparedData,
    mix_datasets,
    placeholder_hint,
    prepare_samples,
    read_sources,
    split_validation,
)
from tuneforge.data.quality import DataReport, DuplicateFinder
from tuneforge.data.render import MaskOptions, RenderedSample
from tuneforge.data.sample_cache import CACHE_SUFFIX, load_prepared, save_prepared
from tuneforge.errors import UserError

__all__ = ["build_dataset", "check_drop_ratio", "cleaning_options", "data_sources", "tokenizer_fingerprint"]

CACHE_VERSION = 3  # 2: rows of a wrong shape are dropped (counted) rather than read loosely; 3: the .samples file
_NOT_ERRORS = {"exact duplicate", "near-duplicate", "too short", "over the cutoff length", "left out by the mix"}


def data_sources(data: DataSection, base_dir: Path | None) -> list[DataSource]:
    """The files of `data.train` and of the catalog datasets in `data.dataset`."""
    sources = resolve_sources(data.train, base_dir) if data.train else []
    if data.columns or data.tags:
        sources = [_with_columns(source, data) for source in sources]
    if data.dataset:
        if not data.dataset_dir:
            raise UserError(
                "data.dataset names catalog datasets: set data.dataset_dir to the folder of dataset_info.json"
            )
        folder = Path(data.dataset_dir).expanduser()
        if not folder.is_absolute() and base_dir is not None and not folder.exists():
            folder = base_dir / folder
        sources += resolve_catalog(data.dataset, folder)
    if not sources:
        raise UserError("no training data: set data.train (files, folders, bundled names) or data.dataset")
    return sources


def _with_columns(source: DataSource, data: DataSection) -> DataSource:
    """Apply data.columns / data.tags to a data.train file, as a catalog entry would."""
    from dataclasses import replace

    from tuneforge.data.llamafactory import catalog_columns

    formatting = data.format
    if formatting == "classification" and not data.tags:
        from tuneforge.data.formats.classification import classification_columns

        return replace(source, formatting=formatting, columns=classification_columns(data.columns))
    if formatting == "auto":
        formatting = "sharegpt" if data.tags or "messages" in (data.columns or {}) else "alpaca"
    if formatting not in ("alpaca", "sharegpt"):
        raise UserError(
            f"data.columns and data.tags apply to the alpaca and sharegpt formats (data.columns also to "
            f"classification), not {formatting!r}"
        )
    entry = {"formatting": formatting, "columns": data.columns, "tags": data.tags, "ranking": False}
    if data.columns and "chosen" in data.columns:
        entry["ranking"] = True
    if data.columns is None:
        entry.pop("columns")
    return replace(source, formatting=formatting, columns=catalog_columns(entry))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides tokenisation: the vocabulary/merges, special tokens and the chat template."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))).encode())
    digest.update(repr((tokenizer.chat_template, tokenizer.bos_token_id, tokenizer.eos_token_id)).encode())
    return digest.hexdigest()


def _cache_key(
    data: DataSection,
    sources: list[DataSource],
    eval_sources: list[DataSource],
    extra: list[Conversation],
    **more: Any,
) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for source in [*sources, None, *eval_sources]:
        if source is not None:
            digest.update(hashlib.sha256(source.path.read_bytes()).digest())
            digest.update(repr((source.name, source.dataset, source.formatting, source.columns)).encode())
            digest.update(repr((source.num_samples, source.notes)).encode())
    digest.update(data.model_dump_json(exclude={"train", "dataset", "dataset_dir", "eval", "cache"}).encode())
    digest.update(repr([c.content_key() for c in extra]).encode())
    digest.update(json.dumps(more, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def cleaning_options(data: DataSection, seed: int) -> CleaningOptions:
    """How the rows of `data` are read and cleaned."""
    return CleaningOptions(
        fmt=data.format,
        variables=data.variables,
        max_samples=data.max_samples,
        keep_thinking=data.keep_thinking,
        dedup=data.dedup,
        shuffle=data.shuffle,
        seed=seed,
        placeholders=data.placeholders,
    )


def check_drop_ratio(report: DataReport, limit: float) -> None:
    """Stop when more than `limit` of the rows are unusable (duplicates and length filters do not count)."""
    errors = sum(count for reason, count in report.dropped.items() if reason not in _NOT_ERRORS)
    if report.total and errors / report.total > limit:
        reasons = ", ".join(f"{r} {c}" for r, c in report.dropped.most_common() if r not in _NOT_ERRORS)
        first = "; ".join(str(p) for p in report.issues if p.dropped and p.reason not in _NOT_ERRORS)
        raise UserError(
            f"{errors} of {report.total} rows ({100 * errors / report.total:.1f}%) are unusable ({reasons}), more "
            f"than data.max_drop_ratio={limit:g}. Run `tuneforge data validate` for the full list, fix the data, or "
            f"raise data.max_drop_ratio.{placeholder_hint(report)} First: {first[:500]}"
        )


def _render_all(
    data: DataSection, conversations: list[Conversation], tokenizer: Any, report: DataReport
) -> list[RenderedSample]:
    mask = MaskOptions(train_on_prompt=data.train_on_prompt, mask_history=data.mask_history)
    return prepare_samples(conversations, tokenizer, data.cutoff_len, report, mask, data.overlength, data.min_tokens)


def _build(
    data: DataSection,
    tokenizer: Any,
    seed: int,
    sources: list[DataSource],
    eval_sources: list[DataSource],
    extra: list[Conversation],
) -> PreparedData:
    options = cleaning_options(data, seed)
    report = DataReport()
    conversations = read_sources(sources, options, report, DuplicateFinder())
    for conversation in extra:
        report.total += 1
        report.read_per_dataset[conversation.dataset] += 1
    samples = _render_all(data, conversations + extra, tokenizer, report)
    check_drop_ratio(report, data.max_drop_ratio)
    order = list(dict.fromkeys(s.dataset for s in sources))
    if data.mix_ratios is not None and len(data.mix_ratios) != len(order):
        raise UserError(
            f"data.mix_ratios has {len(data.mix_ratios)} numbers but there are {len(order)} datasets "
            f"({', '.join(order)})"
        )
    samples = mix_datasets(samples, order, data.mix_ratios, seed, report)
    if eval_sources:
        eval_report = DataReport()
        val = _render_all(data, read_sources(eval_sources, options, eval_report), tokenizer, eval_report)
        report.notes.append(f"validation data: {eval_report.summary()}")
        return PreparedData(samples, val, report)
    train, val = split_validation(samples, data.val_size, seed)
    return PreparedData(train, val, report)


def build_dataset(
    data: DataSection,
    tokenizer: Any,
    seed: int,
    base_dir: Path | None = None,
    extra: list[Conversation] | None = None,
    cache_dir: Path | None = None,
) -> tuple[PreparedData, bool]:
    """Prepared train/validation samples for `data`, and whether they came from the cache."""
    extra = extra or []
    sources = data_sources(data, base_dir)
    eval_sources = resolve_sources(data.eval, base_dir) if data.eval else []
    path = None
    if data.cache and cache_dir is not None:
        key = _cache_key(data, sources, eval_sources, extra, seed=seed, tokenizer=tokenizer_fingerprint(tokenizer))
        path = cache_dir / f"{key}{CACHE_SUFFIX}"
        cached = load_prepared(path) if path.is_file() else None
        if cached is not None:
            return cached, True
    prepared = _build(data, tokenizer, seed, sources, eval_sources, extra)
    if path is not None:
        save_prepared(prepared, path)
    return prepared, False
