"""The file a tokenised dataset is cached in: one JSON header line, then every sample's token ids as raw int32.

Samples are written and read back one at a time, so neither side holds a second copy of the token data, and a cache
hit costs reading the ids back: no tokenising and no JSON parsing of token lists. Labels are stored as the runs of
supervised positions where they copy input_ids (what rendering makes), as a second id array otherwise. The header
holds everything else (each sample's source, kind, lengths; the data report). A file that does not read back
exactly as written is not an entry: the caller rebuilds it.
"""

from __future__ import annotations

import gc
import json
import sys
from array import array
from collections import Counter
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tuneforge.atomic import atomic_output
from tuneforge.data.pipeline import PreparedData
from tuneforge.data.quality import DataReport, Problem
from tuneforge.data.render import IGNORE_INDEX, RenderedSample

__all__ = ["CACHE_SUFFIX", "load_prepared", "save_prepared", "supervised_runs"]

CACHE_SUFFIX = ".samples"
_FORMAT = "tuneforge-samples"
_VERSION = 1
_ITEM = "i"  # int32 on every platform Python supports; checked on load through the header
_COUNTERS = ("dropped", "flagged", "per_dataset", "read_per_dataset")


def supervised_runs(input_ids: list[int], labels: list[int]) -> list[list[int]] | None:
    """[start, end) runs of positions whose label is their own input id; None when a label is anything else but
    IGNORE_INDEX (those labels are then stored in full)."""
    if len(labels) != len(input_ids):
        return None
    label_array = np.asarray(labels, dtype=np.int64)
    supervised = label_array != IGNORE_INDEX
    if not np.array_equal(label_array[supervised], np.asarray(input_ids, dtype=np.int64)[supervised]):
        return None
    edges = np.flatnonzero(np.diff(np.concatenate(([False], supervised, [False])).astype(np.int8)))
    return edges.reshape(-1, 2).tolist()


def _sample_meta(sample: RenderedSample) -> dict[str, Any]:
    runs = supervised_runs(sample.input_ids, sample.labels)
    meta: dict[str, Any] = {
        "n": len(sample.input_ids),
        "source": sample.source,
        "dataset": sample.dataset,
        "truncated": sample.truncated,
        "kind": sample.kind,
        "label": sample.label,
        "reference_logp": sample.reference_logp,
        "category": sample.category,
    }
    meta["runs" if runs is not None else "labels"] = runs if runs is not None else len(sample.labels)
    meta["rejected"] = _sample_meta(sample.rejected) if sample.rejected is not None else None
    return meta


def _write_ids(handle: BinaryIO, sample: RenderedSample, meta: dict[str, Any]) -> None:
    array(_ITEM, sample.input_ids).tofile(handle)
    if "labels" in meta:
        array(_ITEM, sample.labels).tofile(handle)
    if sample.rejected is not None:
        _write_ids(handle, sample.rejected, meta["rejected"])


def _report_dict(report: DataReport) -> dict[str, Any]:
    body = {f.name: getattr(report, f.name) for f in fields(DataReport)}
    body["issues"] = [asdict(problem) for problem in report.issues]
    return body


def save_prepared(prepared: PreparedData, path: Path) -> None:
    """Write `prepared` to `path` atomically, one sample at a time."""
    samples = [*prepared.train, *prepared.val]
    metas = [_sample_meta(sample) for sample in samples]
    header = {
        "format": _FORMAT,
        "version": _VERSION,
        "byteorder": sys.byteorder,
        "itemsize": array(_ITEM).itemsize,
        "train": len(prepared.train),
        "samples": metas,
        "report": _report_dict(prepared.report),
    }
    with atomic_output(path) as temporary, temporary.open("xb") as handle:
        handle.write(json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
        for sample, meta in zip(samples, metas, strict=True):
            _write_ids(handle, sample, meta)


def _read_ids(handle: BinaryIO, count: int) -> list[int]:
    ids = array(_ITEM)
    ids.fromfile(handle, count)  # EOFError when the file is shorter than its header says
    return ids.tolist()


def _read_sample(handle: BinaryIO, meta: dict[str, Any]) -> RenderedSample:
    input_ids = _read_ids(handle, meta["n"])
    if "runs" in meta:
        labels = [IGNORE_INDEX] * len(input_ids)
        for start, end in meta["runs"]:
            labels[start:end] = input_ids[start:end]  # the same int objects, as rendering shares them
    else:
        labels = _read_ids(handle, meta["labels"])
    rejected = _read_sample(handle, meta["rejected"]) if meta["rejected"] is not None else None
    return RenderedSample(
        input_ids,
        labels,
        source=meta["source"],
        truncated=meta["truncated"],
        dataset=meta["dataset"],
        kind=meta["kind"],
        label=meta["label"],
        rejected=rejected,
        reference_logp=meta["reference_logp"],
        category=meta.get("category"),
    )


def _report_from(body: dict[str, Any]) -> DataReport:
    report = DataReport(**{key: value for key, value in body.items() if key != "issues"})
    for name in _COUNTERS:
        setattr(report, name, Counter(body[name]))
    report.issues = [Problem(**problem) for problem in body["issues"]]
    return report


def _current(header: Any) -> bool:
    expected = (_FORMAT, _VERSION, sys.byteorder, array(_ITEM).itemsize)
    keys = ("format", "version", "byteorder", "itemsize")
    return isinstance(header, dict) and tuple(header.get(key) for key in keys) == expected


def load_prepared(path: Path) -> PreparedData | None:
    """The data saved at `path`; None when the file is missing, of another format or version, or damaged."""
    collecting = gc.isenabled()
    gc.disable()  # millions of new lists and ints: cycle collections in between would only rescan them
    try:
        with path.open("rb") as handle:
            header = json.loads(handle.readline())
            if not _current(header):
                return None
            samples = [_read_sample(handle, meta) for meta in header["samples"]]
            if handle.read(1):
                return None
            report = _report_from(header["report"])
    except (OSError, EOFError, ValueError, KeyError, TypeError):
        return None
    finally:
        if collecting:
            gc.enable()
    split = header["train"]
    return PreparedData(samples[:split], samples[split:], report)
