"""LLaMA-Factory's dataset catalog (data.dataset + data.dataset_dir) over the real demo files, read unchanged."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from fixtures.shared_data import LLAMAFACTORY, needs_llamafactory
from fixtures.tiny_models import write_json, write_jsonl
from tuneforge.config.schema import DataSection
from tuneforge.data.build import build_dataset, data_sources
from tuneforge.data.catalog import DataSource
from tuneforge.data.formats import Columns
from tuneforge.data.llamafactory import catalog_columns, load_catalog, resolve_catalog
from tuneforge.data.pipeline import PreparedData
from tuneforge.errors import UserError

INFO = LLAMAFACTORY / "dataset_info.json"
VARIABLES = {"name": "Conch", "author": "ACME"}


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def build_catalog(tokenizer: Any, names: list[str], **options: Any) -> PreparedData:
    options = {"cutoff_len": 100_000, "max_drop_ratio": 1.0, "val_size": 0, "variables": VARIABLES, **options}
    data = DataSection(dataset=names, dataset_dir=str(LLAMAFACTORY), **options)
    prepared, cached = build_dataset(data, tokenizer, seed=0)
    assert cached is False
    assert prepared.report.balanced, prepared.report.summary()
    return prepared


def file_rows(path: Path) -> list[Any]:
    """The rows of a demo file, read independently of tuneforge."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [line for line in text.split("\n") if line.strip()]
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.split("\n") if line.strip()]
    return json.loads(text)


def repeated_rows(rows: list[Any]) -> int:
    """How many rows repeat an earlier row word for word."""
    seen: set[str] = set()
    repeats = 0
    for row in rows:
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        repeats += key in seen
        seen.add(key)
    return repeats


# name → (file, kind of every sample, rows in the file, exact duplicate rows)
LOCAL_TEXT_DATASETS = {
    "identity": ("identity.json", "chat", 91, 0),
    "alpaca_en_demo": ("alpaca_en_demo.json", "chat", 999, 14),
    "alpaca_zh_demo": ("alpaca_zh_demo.json", "chat", 1000, 8),
    "glaive_toolcall_en_demo": ("glaive_toolcall_en_demo.json", "chat", 300, 35),
    "dpo_en_demo": ("dpo_en_demo.json", "preference", 300, 5),
    "kto_en_demo": ("kto_en_demo.json", "kto", 300, 0),
    "wiki_demo": ("wiki_demo.txt", "text", 30, 0),
    "c4_demo": ("c4_demo.jsonl", "text", 300, 0),
}


@needs_llamafactory
def test_every_local_text_dataset_of_the_catalog_is_covered():
    catalog = load_catalog(LLAMAFACTORY)
    local = {
        name
        for name, entry in catalog.items()
        if "file_name" in entry and (LLAMAFACTORY / entry["file_name"]).exists()
    }
    assert local == set(LOCAL_TEXT_DATASETS)
    for name, (file_name, *_rest) in LOCAL_TEXT_DATASETS.items():
        assert catalog[name]["file_name"] == file_name


@needs_llamafactory
@pytest.mark.parametrize("name", list(LOCAL_TEXT_DATASETS))
def test_catalog_dataset_loads_with_the_right_kind_and_counts(tokenizer, name):
    file_name, kind, row_count, repeats = LOCAL_TEXT_DATASETS[name]
    path = LLAMAFACTORY / file_name
    rows = file_rows(path)
    assert len(rows) == row_count
    assert repeated_rows(rows) == repeats

    prepared = build_catalog(tokenizer, [name])
    report = prepared.report
    samples = prepared.train
    assert prepared.val == []
    assert report.total == row_count
    assert report.read_per_dataset == {name: row_count}
    assert report.dropped == ({"exact duplicate": repeats} if repeats else {})
    assert (report.kept, report.truncated) == (row_count - repeats, 0)
    assert len(samples) == row_count - repeats
    assert {s.kind for s in samples} == {kind}
    assert {s.dataset for s in samples} == {name}
    assert all(s.source.startswith(f"{path}:") for s in samples)
    assert all(s.supervised_tokens > 0 for s in samples)
    if kind == "preference":
        assert all(s.rejected is not None and s.rejected.supervised_tokens > 0 for s in samples)
        assert all(s.rejected.input_ids != s.input_ids for s in samples)
    else:
        assert all(s.rejected is None for s in samples)
    if kind == "kto":
        assert Counter(s.label for s in samples) == Counter(row["label"] for row in rows) == {True: 150, False: 150}
    else:
        assert all(s.label is None for s in samples)
    if kind == "text":
        eos = tokenizer.eos_token_id
        assert all(s.labels == s.input_ids and s.input_ids[-1] == eos for s in samples)


@needs_llamafactory
def test_text_datasets_keep_each_line_and_row_in_order(tokenizer):
    prepared = build_catalog(tokenizer, ["wiki_demo"], shuffle=False)
    lines = file_rows(LLAMAFACTORY / "wiki_demo.txt")
    by_source = {s.source: s for s in prepared.train}
    first = by_source[f"{LLAMAFACTORY / 'wiki_demo.txt'}:1"]
    assert first.input_ids == tokenizer(lines[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    c4 = build_catalog(tokenizer, ["c4_demo"], max_samples=5, shuffle=False)
    assert sorted(s.source for s in c4.train) == sorted(f"{LLAMAFACTORY / 'c4_demo.jsonl'}:{n}" for n in range(1, 6))


@needs_llamafactory
def test_identity_needs_its_variables(tokenizer):
    prepared = build_catalog(tokenizer, ["identity"], max_samples=3)
    texts = [tokenizer.decode(s.input_ids) for s in prepared.train]
    assert all("Conch" in t and "{{" not in t for t in texts)
    with pytest.raises(UserError, match=r"\{\{name\}\}.*data\.variables\.name="):
        build_catalog(tokenizer, ["identity"], variables={}, max_drop_ratio=0.05)


@needs_llamafactory
def test_several_catalog_datasets_and_train_files_together(tokenizer, tmp_path):
    extra = write_jsonl(tmp_path / "mine.jsonl", [{"instruction": "Who are you?", "output": "A test row."}])
    data = DataSection(
        train=[str(extra)],
        dataset="identity, wiki_demo",
        dataset_dir=str(LLAMAFACTORY),
        variables=VARIABLES,
        val_size=0,
        max_samples=4,
        cutoff_len=100_000,
    )
    assert data.dataset == ["identity", "wiki_demo"]
    sources = data_sources(data, None)
    assert [(s.name, s.dataset, s.formatting) for s in sources] == [
        (str(extra), str(extra), None),
        ("identity", "identity", "alpaca"),
        ("wiki_demo", "wiki_demo", "alpaca"),
    ]
    prepared, _ = build_dataset(data, tokenizer, seed=0)
    assert prepared.report.read_per_dataset == {str(extra): 1, "identity": 4, "wiki_demo": 4}
    assert Counter(s.kind for s in prepared.train) == {"chat": 5, "text": 4}
    assert prepared.report.balanced


# ---------------------------------------------------------------------------------------------------- errors


@needs_llamafactory
def test_unknown_name_suggests_the_closest():
    with pytest.raises(UserError) as info:
        resolve_catalog(["alpaca_en_dmeo"], LLAMAFACTORY)
    assert str(info.value) == f"dataset 'alpaca_en_dmeo' is not in {INFO}. Did you mean 'alpaca_en_demo'?"
    with pytest.raises(UserError) as info:
        resolve_catalog(["zzzzzzzz"], LLAMAFACTORY)
    assert str(info.value) == f"dataset 'zzzzzzzz' is not in {INFO}."


@needs_llamafactory
def test_hub_only_entry_is_refused_saying_local_files_only(tokenizer):
    data = DataSection(dataset=["alpaca_en"], dataset_dir=str(LLAMAFACTORY))
    with pytest.raises(UserError) as info:
        build_dataset(data, tokenizer, seed=0)
    assert str(info.value) == (
        "no dataset of data.dataset can be read: dataset 'alpaca_en' is not available offline: it is on the Hugging "
        f'Face hub (llamafactory/alpaca_en); download it into {LLAMAFACTORY} and point its "file_name" in {INFO} at '
        "the file (JSON, JSONL, CSV, ...)"
    )


@needs_llamafactory
def test_entry_whose_file_is_missing_names_the_file(tokenizer):
    assert not (LLAMAFACTORY / "glaive_toolcall_zh_demo.json").exists()
    data = DataSection(
        dataset=["identity", "glaive_toolcall_zh_demo"], dataset_dir=str(LLAMAFACTORY), variables=VARIABLES
    )
    prepared, _ = build_dataset(data, tokenizer, seed=0)  # the other dataset still loads
    assert prepared.report.read_per_dataset == {"identity": 91}
    assert prepared.report.notes == [
        f"skipped: dataset 'glaive_toolcall_zh_demo' is not available offline: its file "
        f'{LLAMAFACTORY / "glaive_toolcall_zh_demo.json"} is not there; put it there or fix "file_name" in {INFO}'
    ]


def test_catalog_without_dataset_dir_is_an_error(tokenizer, tmp_path):
    with pytest.raises(UserError, match=r"^data\.dataset names catalog datasets: set data\.dataset_dir"):
        build_dataset(DataSection(dataset=["identity"]), tokenizer, seed=0)
    with pytest.raises(UserError) as info:
        build_dataset(DataSection(dataset=["identity"], dataset_dir=str(tmp_path)), tokenizer, seed=0)
    assert str(info.value) == (
        f"{tmp_path / 'dataset_info.json'} not found: data.dataset_dir must be a folder holding LLaMA-Factory's "
        "dataset_info.json"
    )
    with pytest.raises(UserError, match=r"^no training data"):
        build_dataset(DataSection(), tokenizer, seed=0)


def test_dataset_dir_relative_to_the_config_folder(tokenizer, tmp_path):
    folder = tmp_path / "cfg" / "catalog"
    write_json(folder / "dataset_info.json", {"tiny": {"file_name": "tiny.jsonl"}})
    write_jsonl(folder / "tiny.jsonl", [{"instruction": "q", "output": "a"}])
    data = DataSection(dataset=["tiny"], dataset_dir="catalog", val_size=0)
    assert data_sources(data, tmp_path / "cfg")[0].path == folder / "tiny.jsonl"
    prepared, _ = build_dataset(data, tokenizer, seed=0, base_dir=tmp_path / "cfg")
    assert [s.source for s in prepared.train] == [f"{folder / 'tiny.jsonl'}:1"]


# ---------------------------------------------------------------------------------------------------- columns


@needs_llamafactory
def test_catalog_columns_of_the_demo_entries():
    catalog = load_catalog(LLAMAFACTORY)
    assert catalog_columns(catalog["alpaca_en_demo"]) == Columns(
        prompt="instruction",
        query="input",
        response="output",
        history="history",
        system="system",
        tools="tools",
        messages=None,
        chosen=None,
        rejected=None,
        kto_tag=None,
        text=None,
    )
    kto = catalog_columns(catalog["kto_en_demo"])
    assert (kto.messages, kto.kto_tag, kto.chosen, kto.prompt) == ("messages", "label", None, None)
    assert kto.tags == {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    dpo = catalog_columns(catalog["dpo_en_demo"])
    assert (dpo.messages, dpo.chosen, dpo.rejected, dpo.kto_tag) == ("conversations", "chosen", "rejected", None)
    wiki = catalog_columns(catalog["wiki_demo"])
    assert (wiki.prompt, wiki.response, wiki.query, wiki.messages) == ("text", None, None, None)
    glaive = catalog_columns(catalog["glaive_toolcall_en_demo"])
    assert (glaive.messages, glaive.tools, glaive.system) == ("conversations", "tools", None)


def test_custom_catalog_entries(tokenizer, tmp_path):
    write_json(
        tmp_path / "dataset_info.json",
        {
            "pairs": {
                "file_name": "pairs.jsonl",
                "ranking": True,
                "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"},
            },
            "folder": {"file_name": "parts"},
            "weird": {"file_name": "pairs.jsonl", "formatting": "csv"},
        },
    )
    write_jsonl(tmp_path / "pairs.jsonl", [{"question": "Sky?", "good": "Blue.", "bad": "Green."}])
    write_jsonl(tmp_path / "parts" / "b.jsonl", [{"instruction": "b", "output": "2"}])
    write_jsonl(tmp_path / "parts" / "a.jsonl", [{"instruction": "a", "output": "1"}])
    assert resolve_catalog(["folder"], tmp_path) == [
        DataSource(tmp_path / "parts" / "a.jsonl", "folder/a.jsonl", "alpaca", catalog_columns({}), "folder"),
        DataSource(tmp_path / "parts" / "b.jsonl", "folder/b.jsonl", "alpaca", catalog_columns({}), "folder"),
    ]
    with pytest.raises(UserError, match=r"^dataset 'weird': unknown formatting 'csv'; LLaMA-Factory uses alpaca"):
        resolve_catalog(["weird"], tmp_path)
    data = DataSection(dataset=["pairs", "folder"], dataset_dir=str(tmp_path), val_size=0)
    prepared, _ = build_dataset(data, tokenizer, seed=0)
    kinds = Counter((s.dataset, s.kind) for s in prepared.train)
    assert kinds == {("pairs", "preference"): 1, ("folder", "chat"): 2}
    pair = next(s for s in prepared.train if s.kind == "preference")
    assert tokenizer.decode(pair.input_ids).endswith(
        "<|im_start|>user\nSky?<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n"
    )
    assert tokenizer.decode(pair.rejected.input_ids).endswith("<|im_start|>assistant\nGreen.<|im_end|>\n")
