"""LLaMA-Factory's dataset catalog: `data.dataset: name1,name2` with `data.dataset_dir` holding dataset_info.json.

Each entry names a local file or folder (`file_name`), its `formatting` (alpaca or sharegpt), whether it is
preference data (`ranking`), and `columns` / `tags` that rename the fields. Entries that only point at a hub
(hf_hub_url, ms_hub_url, ...) cannot be read offline and are refused with a message saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.data.catalog import DataSource, folder_files
from tuneforge.data.formats import Columns
from tuneforge.errors import UserError
from tuneforge.registry import closest

__all__ = ["catalog_columns", "load_catalog", "resolve_catalog"]

_ALPACA_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output"}
_COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected")
_TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")


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

    Without `columns`, Alpaca files use instruction/input/output and ShareGPT files `conversations`; once `columns`
    is given, the fields it does not name are absent (so `{"prompt": "text"}` alone means raw text).
    """
    formatting = entry.get("formatting", "alpaca")
    given = entry.get("columns")
    if given is None:
        names: dict[str, str | None] = dict(_ALPACA_DEFAULTS) if formatting == "alpaca" else {}
        names.update(system="system", tools="tools", history="history")
        if formatting != "alpaca":
            names["messages"] = "conversations"
    else:
        names = {key: given.get(key) for key in _COLUMN_KEYS}
        if formatting != "alpaca":
            names["messages"] = given.get("messages", "conversations")
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


def _entry_sources(name: str, entry: dict[str, Any], dataset_dir: Path) -> list[DataSource]:
    file_name = entry.get("file_name")
    if not file_name:
        hubs = [entry[k] for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url") if k in entry]
        where = f" (it lives at {hubs[0]})" if hubs else ""
        raise UserError(
            f"dataset {name!r} in {dataset_dir / 'dataset_info.json'} has no local file_name{where}; tuneforge reads "
            'local files only: download it into data.dataset_dir and add "file_name" to its entry'
        )
    path = dataset_dir / file_name
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise UserError(f"dataset {name!r}: unknown formatting {formatting!r}; LLaMA-Factory uses alpaca or sharegpt")
    columns = catalog_columns(entry)
    if path.is_dir():
        return [DataSource(p, f"{name}/{p.name}", formatting, columns, name) for p in folder_files(path)]
    if not path.is_file():
        raise UserError(f"dataset {name!r}: file {path} not found (file_name in {dataset_dir / 'dataset_info.json'})")
    return [DataSource(path, name, formatting, columns, name)]


def resolve_catalog(names: list[str], dataset_dir: Path) -> list[DataSource]:
    """The files of the named catalog datasets, each with its formatting and column mapping."""
    catalog = load_catalog(dataset_dir)
    sources: list[DataSource] = []
    for name in names:
        if name not in catalog:
            hint = closest(name, list(catalog))
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise UserError(f"dataset {name!r} is not in {dataset_dir / 'dataset_info.json'}.{did_you_mean}")
        sources += _entry_sources(name, catalog[name], dataset_dir)
    return sources
