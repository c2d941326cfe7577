"""LLaMA-Factory's dataset catalog: `data.dataset: name1,name2` with `data.dataset_dir` holding dataset_info.json.

Each entry names a local file or folder (`file_name`), its `formatting` (alpaca, sharegpt or openai), whether it
is preference data (`ranking`), `columns` / `tags` that rename the fields, and `num_samples` (how many rows to
use). `split` picks a split of a hub dataset: a local file is read whole, as LLaMA-Factory reads it.

Entries that cannot be read offline (on a hub: hf_hub_url, ms_hub_url, om_hub_url; built by a script: script_url;
in cloud storage: cloud_file_name; a file_name that is not there; images, videos or audio) are skipped with a note
in the data report that names the entry and what to do; the other datasets named still load. Only when none of
them can be read is it an error.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from tuneforge.data.catalog import DataSource, folder_files
from tuneforge.data.files import SUPPORTED_SUFFIXES, read_rows
from tuneforge.data.formats import Columns
from tuneforge.errors import UserError
from tuneforge.registry import closest

__all__ = ["FORMATTINGS", "catalog_columns", "catalog_rows", "load_catalog", "resolve_catalog", "unavailable_reason"]

FORMATTINGS = ("alpaca", "sharegpt", "openai")
_ALPACA_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output"}
_COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected")
_TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")
_HUBS = {"hf_hub_url": "the Hugging Face hub", "ms_hub_url": "the ModelScope hub", "om_hub_url": "the Modelers hub"}
_MEDIA_COLUMNS = ("images", "videos", "audios")
Row = TypeVar("Row")


def load_catalog(dataset_dir: Path) -> dict[str, dict[str, Any]]:
    """The parsed dataset_info.json of `dataset_dir`."""
    info = dataset_dir / "dataset_info.json"
    if not info.is_file():
        raise UserError(
            f"{info} not found: data.dataset_dir must be a folder holding LLaMA-Factory's dataset_info.json"
        )
    try:
        catalog = json.loads(info.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{info}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(catalog, dict):
        raise UserError(f"{info}: expected an object mapping dataset names to their descriptions")
    return catalog


def catalog_columns(entry: dict[str, Any]) -> Columns:
    """The column mapping of a catalog entry, following LLaMA-Factory's defaults.

    Without `columns`, Alpaca files use instruction/input/output, ShareGPT files `conversations` and OpenAI ones
    `messages`; once `columns` is given, the fields it does not name are absent (so `{"prompt": "text"}` alone
    means raw text).
    """
    formatting = entry.get("formatting", "alpaca")
    given = entry.get("columns")
    messages = "messages" if formatting == "openai" else "conversations"
    if given is None:
        names: dict[str, str | None] = dict(_ALPACA_DEFAULTS) if formatting == "alpaca" else {}
        names.update(system="system", tools="tools", history="history")
        if formatting != "alpaca":
            names["messages"] = messages
    else:
        names = {key: given.get(key) for key in _COLUMN_KEYS}
        if formatting != "alpaca":
            names["messages"] = given.get("messages", messages)
    names.setdefault("chosen", "chosen" if entry.get("ranking") else None)
    names.setdefault("rejected", "rejected" if entry.get("ranking") else None)
    if not entry.get("ranking"):
        names["chosen"] = names["rejected"] = None
    tags = {key: str(value) for key, value in (entry.get("tags") or {}).items() if key in _TAG_KEYS}
    kto = (given or {}).get("kto_tag")
    return Columns(
        prompt=names.get("prompt"),
        query=names.get("query"),
        response=names.get("response"),
        history=names.get("history"),
        system=names.get("system"),
        tools=names.get("tools"),
        messages=names.get("messages"),
        chosen=names.get("chosen"),
        rejected=names.get("rejected"),
        kto_tag=kto,
        text=None,
        tags=tags,
    )


def unavailable_reason(entry: dict[str, Any], dataset_dir: Path) -> str:
    """Why a catalog entry cannot be read here and what to do, to follow "dataset NAME " ("" when it can be read).

    A local `file_name` wins over a hub address: it is the copy to read offline.
    """
    file_name = entry.get("file_name")
    path = dataset_dir / str(file_name) if file_name else None
    media = [key for key in _MEDIA_COLUMNS if (entry.get("columns") or {}).get(key)]
    if media:
        return (
            f"is multimodal (media files in its {'/'.join(media)} column{'s' if len(media) > 1 else ''}) and "
            "tuneforge trains text models on text alone: leave it out of data.dataset"
        )
    if path is not None and path.is_file():
        return ""
    if path is not None and path.is_dir():
        if any(p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES for p in path.iterdir()):
            return ""
        return f"is not available offline: its folder {path} holds no data files ({', '.join(SUPPORTED_SUFFIXES)})"
    info = dataset_dir / "dataset_info.json"
    fix = f'download it into {dataset_dir} and point its "file_name" in {info} at the file (JSON, JSONL, CSV, ...)'
    for key, hub in _HUBS.items():
        if entry.get(key):
            return f"is not available offline: it is on {hub} ({entry[key]}); {fix}"
    if entry.get("script_url"):
        return f"is not available offline: a loading script ({entry['script_url']}) builds it; {fix}"
    if entry.get("cloud_file_name"):
        return f"is not available offline: it is in cloud storage ({entry['cloud_file_name']}); {fix}"
    if path is not None:
        return f'is not available offline: its file {path} is not there; put it there or fix "file_name" in {info}'
    return f'is not available offline: it has no "file_name"; {fix}'


def _num_samples(name: str, entry: dict[str, Any]) -> int | None:
    value = entry.get("num_samples")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"dataset {name!r}: num_samples must be a whole number of rows >= 1, got {value!r}")
    return value


def _formatting(name: str, entry: dict[str, Any]) -> str:
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise UserError(
            f"dataset {name!r}: unknown formatting {formatting!r}; LLaMA-Factory uses {', '.join(FORMATTINGS)}"
        )
    if formatting == "openai" and entry.get("ranking"):
        raise UserError(
            f"dataset {name!r}: ranking data with formatting 'openai' is not supported; use formatting 'sharegpt' "
            'with tags {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": '
            '"assistant"}'
        )
    return formatting


def _folder_quotas(files: list[Path], wanted: int | None) -> tuple[list[int | None], str]:
    """How many rows each file of a folder dataset gives to `wanted` (proportional to its rows), and a note."""
    if wanted is None:
        return [None] * len(files), ""
    counts = [sum(1 for _ in read_rows(path)) for path in files]
    total = sum(counts)
    if wanted >= total:
        return [None] * len(files), _more_than_rows(wanted, total) if wanted > total else ""
    shares = [wanted * count / total for count in counts]
    quotas = [int(share) for share in shares]
    by_remainder = sorted(range(len(files)), key=lambda i: quotas[i] - shares[i])
    for index in by_remainder[: wanted - sum(quotas)]:
        quotas[index] += 1
    return list(quotas), ""


def _more_than_rows(wanted: int, rows: int) -> str:
    return f"num_samples={wanted} is more than its {rows} rows: each row is used once (tuneforge repeats no row)"


def _entry_sources(name: str, entry: dict[str, Any], dataset_dir: Path) -> list[DataSource]:
    """The files of an entry that can be read (see `unavailable_reason`), with its notes on the first one."""
    formatting = _formatting(name, entry)
    columns = catalog_columns(entry)
    wanted = _num_samples(name, entry)
    path = dataset_dir / str(entry["file_name"])
    notes = []
    split = entry.get("split", "train")
    if split != "train":
        notes.append(f"dataset {name!r}: split {split!r} names a split of a hub dataset; its local file is read whole")
    if path.is_dir():
        files = folder_files(path)
        quotas, note = _folder_quotas(files, wanted)
        notes += [f"dataset {name!r}: {note}"] if note else []
        sources = [
            DataSource(p, f"{name}/{p.name}", formatting, columns, name, quota)
            for p, quota in zip(files, quotas, strict=True)
        ]
    else:
        sources = [DataSource(path, name, formatting, columns, name, wanted)]
    sources[0] = _with_notes(sources[0], notes)
    return sources


def _with_notes(source: DataSource, notes: list[str]) -> DataSource:
    return replace(source, notes=(*source.notes, *notes)) if notes else source


def resolve_catalog(names: list[str], dataset_dir: Path) -> list[DataSource]:
    """The files of the named catalog datasets, each with its formatting and column mapping.

    Datasets that cannot be read offline are skipped, each with a note (carried by the first file read) naming
    it and what to do; when none of them can be read, that is a UserError listing why.
    """
    catalog = load_catalog(dataset_dir)
    info = dataset_dir / "dataset_info.json"
    sources: list[DataSource] = []
    skipped: list[str] = []
    for name in names:
        if name not in catalog:
            hint = closest(name, list(catalog))
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise UserError(f"dataset {name!r} is not in {info}.{did_you_mean}")
        entry = catalog[name]
        if not isinstance(entry, dict):
            raise UserError(f"dataset {name!r} in {info}: expected an object describing it, got {entry!r}")
        for key in ("columns", "tags"):
            if not isinstance(entry.get(key) or {}, dict):
                raise UserError(f"dataset {name!r} in {info}: {key!r} must be an object, got {entry[key]!r}")
        reason = unavailable_reason(entry, dataset_dir)
        if reason:
            skipped.append(f"dataset {name!r} {reason}")
            continue
        sources += _entry_sources(name, entry, dataset_dir)
    if skipped and not sources:
        raise UserError(f"no dataset of data.dataset can be read: {'; '.join(skipped)}")
    if skipped:
        sources[0] = _with_notes(sources[0], [f"skipped: {line}" for line in skipped])
    return sources


def catalog_rows(rows: list[Row], source: DataSource, seed: int) -> tuple[list[Row], str]:
    """The rows of `source` its catalog entry's `num_samples` picks (at random, in file order), and a note on it.

    LLaMA-Factory repeats rows when num_samples is larger than the file; tuneforge uses each row once and says so.
    """
    wanted = source.num_samples
    if wanted is None or wanted == len(rows):
        return rows, ""
    if wanted > len(rows):
        return rows, f"{source.name}: {_more_than_rows(wanted, len(rows))}"
    keep = sorted(random.Random(seed).sample(range(len(rows)), wanted))
    return [rows[i] for i in keep], f"{source.name}: num_samples={wanted} used {wanted} of its {len(rows)} rows"
