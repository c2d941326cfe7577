"""Every layout LLaMA-Factory documents, read unchanged: dataset_info.json entries (README layouts, num_samples,
split, folders, hub / script / cloud / missing entries reported as not available offline) and v1 message rows."""

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
from tuneforge.data import IGNORE_INDEX, Conversation, DataReport, Message, load_conversations
from tuneforge.data.build import build_dataset, cleaning_options, data_sources
from tuneforge.data.formats import detect_format
from tuneforge.data.llamafactory import load_catalog, resolve_catalog
from tuneforge.data.pipeline import prepare_samples, read_sources
from tuneforge.data.render import render_sample
from tuneforge.errors import UserError

INFO = LLAMAFACTORY / "dataset_info.json"
VARIABLES = {"name": "Conch", "author": "ACME"}
TOOL = {"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object"}}
FUNCTION = {"type": "function", "function": TOOL}


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def read_catalog(folder: Path, names: list[str], **options: Any) -> tuple[list[Conversation], DataReport]:
    """Parse (no tokenizer) the named catalog datasets of `folder` the way a run reads them."""
    data = DataSection(dataset=names, dataset_dir=str(folder), **options)
    report = DataReport()
    conversations = read_sources(data_sources(data, None), cleaning_options(data, seed=0), report)
    return conversations, report


def turns(conversation: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages]


# ---------------------------------------------------------------------------------------------------- the demo catalog


@needs_llamafactory
def test_the_real_catalog_loads_every_local_entry_and_reports_the_rest():
    catalog = load_catalog(LLAMAFACTORY)
    local = [name for name, entry in catalog.items() if (LLAMAFACTORY / entry.get("file_name", "-")).is_file()]
    rows = {"identity": 91, "alpaca_en_demo": 999, "alpaca_zh_demo": 1000, "glaive_toolcall_en_demo": 300}
    rows |= {"dpo_en_demo": 300, "kto_en_demo": 300, "wiki_demo": 30, "c4_demo": 300}
    assert sorted(local) == sorted(rows)

    conversations, report = read_catalog(LLAMAFACTORY, list(catalog), variables=VARIABLES, dedup="none")
    assert report.read_per_dataset == rows
    assert report.dropped == {}
    kinds = Counter((c.dataset, c.kind) for c in conversations)
    assert kinds == {
        ("identity", "chat"): 91,
        ("alpaca_en_demo", "chat"): 999,
        ("alpaca_zh_demo", "chat"): 1000,
        ("glaive_toolcall_en_demo", "chat"): 300,
        ("dpo_en_demo", "preference"): 300,
        ("kto_en_demo", "kto"): 300,
        ("wiki_demo", "text"): 30,
        ("c4_demo", "text"): 300,
    }
    skipped = {note.split("'")[1]: note for note in report.notes if note.startswith("skipped: dataset '")}
    assert len(report.notes) == len(skipped) == len(catalog) - len(local)
    assert set(skipped) == set(catalog) - set(local)
    hub_only = [name for name, entry in catalog.items() if "file_name" not in entry]
    assert len(hub_only) > 80
    for name in hub_only:
        entry = catalog[name]
        address = entry.get("hf_hub_url") or entry.get("ms_hub_url") or entry.get("om_hub_url")
        if "images" in entry.get("columns", {}):
            assert " is multimodal (media files in its images column) " in skipped[name]
            continue
        assert skipped[name] == (
            f"skipped: dataset {name!r} is not available offline: it is on the "
            f"{'Hugging Face' if 'hf_hub_url' in entry else 'ModelScope'} hub ({address}); download it into "
            f'{LLAMAFACTORY} and point its "file_name" in {INFO} at the file (JSON, JSONL, CSV, ...)'
        )
    assert skipped["dpo_zh_demo"] == (
        f"skipped: dataset 'dpo_zh_demo' is not available offline: its file {LLAMAFACTORY / 'dpo_zh_demo.json'} is "
        f'not there; put it there or fix "file_name" in {INFO}'
    )


@needs_llamafactory
def test_skipped_entries_reach_the_report_of_a_run(tokenizer):
    names = ["alpaca_en", "identity", "glaive_toolcall_zh_demo", "wiki_demo"]
    data = DataSection(dataset=names, dataset_dir=str(LLAMAFACTORY), variables=VARIABLES, max_samples=2, val_size=0)
    prepared, _ = build_dataset(data, tokenizer, seed=0)
    report = prepared.report
    assert report.read_per_dataset == {"identity": 2, "wiki_demo": 2}
    assert Counter(s.dataset for s in prepared.train) == {"identity": 2, "wiki_demo": 2}
    assert [n for n in report.notes if n.startswith("skipped")] == [
        "skipped: dataset 'alpaca_en' is not available offline: it is on the Hugging Face hub "
        f'(llamafactory/alpaca_en); download it into {LLAMAFACTORY} and point its "file_name" in {INFO} at the file '
        "(JSON, JSONL, CSV, ...)",
        f"skipped: dataset 'glaive_toolcall_zh_demo' is not available offline: its file "
        f'{LLAMAFACTORY / "glaive_toolcall_zh_demo.json"} is not there; put it there or fix "file_name" in {INFO}',
    ]
    assert all(note in report.full_text() for note in report.notes)


@needs_llamafactory
def test_only_unavailable_entries_is_an_error_naming_each():
    with pytest.raises(UserError) as info:
        resolve_catalog(["alpaca_en", "mllm_demo"], LLAMAFACTORY)
    assert str(info.value) == (
        "no dataset of data.dataset can be read: dataset 'alpaca_en' is not available offline: it is on the Hugging "
        f'Face hub (llamafactory/alpaca_en); download it into {LLAMAFACTORY} and point its "file_name" in {INFO} at '
        "the file (JSON, JSONL, CSV, ...); dataset 'mllm_demo' is multimodal (media files in its images column) and "
        "tuneforge trains text models on text alone: leave it out of data.dataset"
    )


# ---------------------------------------------------------------------------------------------------- entry kinds


def test_every_kind_of_unavailable_entry_names_where_it_lives(tmp_path):
    write_jsonl(tmp_path / "local.jsonl", [{"instruction": "q", "output": "a"}])
    write_jsonl(tmp_path / "downloaded.jsonl", [{"instruction": "q2", "output": "a2"}])
    (tmp_path / "empty_folder").mkdir()
    write_json(
        tmp_path / "dataset_info.json",
        {
            "local": {"file_name": "local.jsonl"},
            "downloaded": {"hf_hub_url": "org/set", "file_name": "downloaded.jsonl"},  # the local copy wins
            "ms": {"ms_hub_url": "org/ms_set"},
            "om": {"om_hub_url": "org/om_set"},
            "script": {"script_url": "hh_rlhf_en"},
            "cloud": {"cloud_file_name": "s3://bucket/data.json"},
            "gone": {"file_name": "gone.json"},
            "empty": {"file_name": "empty_folder"},
            "nothing": {"formatting": "alpaca"},
            "audio": {"file_name": "local.jsonl", "columns": {"messages": "messages", "audios": "audios"}},
        },
    )
    names = ["local", "downloaded", "ms", "om", "script", "cloud", "gone", "empty", "nothing", "audio"]
    conversations, report = read_catalog(tmp_path, names)
    assert [turns(c) for c in conversations] == [
        [("user", "q"), ("assistant", "a")],
        [("user", "q2"), ("assistant", "a2")],
    ]
    info = tmp_path / "dataset_info.json"
    fix = f'download it into {tmp_path} and point its "file_name" in {info} at the file (JSON, JSONL, CSV, ...)'
    assert report.notes == [
        f"skipped: dataset 'ms' is not available offline: it is on the ModelScope hub (org/ms_set); {fix}",
        f"skipped: dataset 'om' is not available offline: it is on the Modelers hub (org/om_set); {fix}",
        f"skipped: dataset 'script' is not available offline: a loading script (hh_rlhf_en) builds it; {fix}",
        f"skipped: dataset 'cloud' is not available offline: it is in cloud storage (s3://bucket/data.json); {fix}",
        f"skipped: dataset 'gone' is not available offline: its file {tmp_path / 'gone.json'} is not there; put it "
        f'there or fix "file_name" in {info}',
        f"skipped: dataset 'empty' is not available offline: its folder {tmp_path / 'empty_folder'} holds no data "
        "files (.json, .jsonl, .csv, .parquet, .txt)",
        f"skipped: dataset 'nothing' is not available offline: it has no \"file_name\"; {fix}",
        "skipped: dataset 'audio' is multimodal (media files in its audios column) and tuneforge trains text models "
        "on text alone: leave it out of data.dataset",
    ]


def test_num_samples_picks_that_many_rows_and_says_so(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    write_jsonl(tmp_path / "ten.jsonl", rows)
    write_jsonl(tmp_path / "parts" / "a.jsonl", rows[:6])
    write_jsonl(tmp_path / "parts" / "b.jsonl", rows[6:])
    write_json(
        tmp_path / "dataset_info.json",
        {
            "four": {"file_name": "ten.jsonl", "num_samples": 4},
            "many": {"file_name": "ten.jsonl", "num_samples": 25},
            "folder": {"file_name": "parts", "num_samples": 5},
            "bad": {"file_name": "ten.jsonl", "num_samples": "4"},
        },
    )
    four, report = read_catalog(tmp_path, ["four"], dedup="none")
    assert report.total == len(four) == 4
    assert report.notes == ["four: num_samples=4 used 4 of its 10 rows"]
    picked = [int(c.messages[0].content[1:]) for c in four]
    assert picked == sorted(picked) and len(set(picked)) == 4  # a random pick, kept in file order
    again, _ = read_catalog(tmp_path, ["four"], dedup="none")
    assert [turns(c) for c in again] == [turns(c) for c in four]  # the same pick for the same seed

    many, report = read_catalog(tmp_path, ["many"])
    assert len(many) == 10
    assert report.notes == [
        "many: num_samples=25 is more than its 10 rows: each row is used once (tuneforge repeats no row)"
    ]

    folder, report = read_catalog(tmp_path, ["folder"], dedup="none")
    assert Counter(c.source.split(":")[0] for c in folder) == {
        str(tmp_path / "parts" / "a.jsonl"): 3,
        str(tmp_path / "parts" / "b.jsonl"): 2,
    }
    assert report.notes == [
        "folder/a.jsonl: num_samples=3 used 3 of its 6 rows",
        "folder/b.jsonl: num_samples=2 used 2 of its 4 rows",
    ]
    with pytest.raises(UserError, match=r"^dataset 'bad': num_samples must be a whole number of rows >= 1, got '4'$"):
        read_catalog(tmp_path, ["bad"])


def test_num_samples_is_part_of_the_cache_key(tokenizer, tmp_path):
    write_jsonl(tmp_path / "ten.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)])
    cache = tmp_path / "cache"
    for count, cached in ((4, False), (4, True), (6, False)):
        write_json(tmp_path / "dataset_info.json", {"d": {"file_name": "ten.jsonl", "num_samples": count}})
        data = DataSection(dataset=["d"], dataset_dir=str(tmp_path), val_size=0)
        prepared, hit = build_dataset(data, tokenizer, seed=0, cache_dir=cache)
        assert (hit, len(prepared.train)) == (cached, count)


def test_split_of_a_local_file_reads_it_whole_with_a_note(tmp_path):
    write_jsonl(tmp_path / "eval.jsonl", [{"content": "c1", "summary": "s1"}, {"content": "c2", "summary": "s2"}])
    write_json(
        tmp_path / "dataset_info.json",
        {
            "adgen_eval": {
                "hf_hub_url": "HasturOfficial/adgen",
                "file_name": "eval.jsonl",
                "split": "validation",
                "columns": {"prompt": "content", "response": "summary"},
            },
            "adgen_train": {"file_name": "eval.jsonl", "split": "train", "columns": {"prompt": "content"}},
        },
    )
    conversations, report = read_catalog(tmp_path, ["adgen_eval"])
    assert [turns(c) for c in conversations] == [
        [("user", "c1"), ("assistant", "s1")],
        [("user", "c2"), ("assistant", "s2")],
    ]
    assert report.notes == [
        "dataset 'adgen_eval': split 'validation' names a split of a hub dataset; its local file is read whole"
    ]
    _, report = read_catalog(tmp_path, ["adgen_train"])
    assert report.notes == []


# ---------------------------------------------------------------------------------------------------- README layouts

README_LAYOUTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "alpaca_sft": (
        {
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
                "history": "history",
            }
        },
        {"instruction": "Sum?", "input": "1 2", "output": "3", "system": "Be brief.", "history": [["Hi", "Hello"]]},
    ),
    "alpaca_pretrain": ({"columns": {"prompt": "text"}}, {"text": "A document."}),
    "alpaca_preference": (
        {
            "ranking": True,
            "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
        },
        {"instruction": "Sky?", "input": "", "chosen": "Blue.", "rejected": "Green."},
    ),
    "sharegpt_sft": (
        {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system", "tools": "tools"}},
        {
            "conversations": [
                {"from": "human", "value": "Weather in Paris?"},
                {
                    "from": "function_call",
                    "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}}),
                },
                {"from": "observation", "value": "sunny"},
                {"from": "gpt", "value": "Sunny."},
            ],
            "system": "You check weather.",
            "tools": json.dumps([TOOL]),
        },
    ),
    "sharegpt_preference": (
        {
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        },
        {
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello"},
                {"from": "human", "value": "Sky?"},
            ],
            "chosen": {"from": "gpt", "value": "Blue."},
            "rejected": {"from": "gpt", "value": "Green."},
        },
    ),
    "sharegpt_kto": (
        {"formatting": "sharegpt", "columns": {"messages": "conversations", "kto_tag": "kto_tag"}},
        {"conversations": [{"from": "human", "value": "Sky?"}, {"from": "gpt", "value": "Blue."}], "kto_tag": True},
    ),
    "openai_as_sharegpt": (
        {
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        },
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "A"},
            ]
        },
    ),
    "sharegpt_custom_tags": (
        {
            "formatting": "sharegpt",
            "columns": {"messages": "dialog"},
            "tags": {
                "role_tag": "who",
                "content_tag": "said",
                "user_tag": "client",
                "assistant_tag": "agent",
                "function_tag": "call",
                "observation_tag": "result",
            },
        },
        {
            "dialog": [
                {"who": "client", "said": "Weather in Paris?"},
                {"who": "call", "said": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
                {"who": "result", "said": "sunny"},
                {"who": "agent", "said": "Sunny."},
            ]
        },
    ),
    "system_tag_overrides_the_system_column": (
        {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system"}},
        {
            "conversations": [
                {"from": "system", "value": "S1"},
                {"from": "human", "value": "Q"},
                {"from": "gpt", "value": "A"},
            ],
            "system": "S0",
        },
    ),
    "openai_formatting_default_columns": (
        {"formatting": "openai"},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
    ),
    "openai_formatting": (
        {"formatting": "openai", "columns": {"messages": "messages", "tools": "tools"}},
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
                    ],
                },
                {"role": "tool", "content": "sunny"},
                {"role": "assistant", "content": "Sunny."},
            ],
            "tools": [FUNCTION],
        },
    ),
}
CALL = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
WEATHER = [("user", "Weather in Paris?"), ("assistant", ""), ("tool", "sunny"), ("assistant", "Sunny.")]
EXPECTED: dict[str, dict[str, Any]] = {
    "alpaca_sft": {
        "turns": [
            ("system", "Be brief."),
            ("user", "Hi"),
            ("assistant", "Hello"),
            ("user", "Sum?\n\n1 2"),
            ("assistant", "3"),
        ]
    },
    "alpaca_pretrain": {"kind": "text", "text": "A document.", "turns": []},
    "alpaca_preference": {"kind": "preference", "turns": [("user", "Sky?")], "answers": ("Blue.", "Green.")},
    "sharegpt_sft": {"turns": [("system", "You check weather."), *WEATHER], "calls": CALL, "tools": [FUNCTION]},
    "sharegpt_preference": {
        "kind": "preference",
        "turns": [("user", "Hi"), ("assistant", "Hello"), ("user", "Sky?")],
        "answers": ("Blue.", "Green."),
    },
    "sharegpt_kto": {"kind": "kto", "label": True, "turns": [("user", "Sky?"), ("assistant", "Blue.")]},
    "openai_as_sharegpt": {"turns": [("system", "S"), ("user", "Q"), ("assistant", "A")]},
    "sharegpt_custom_tags": {"turns": WEATHER, "calls": CALL},
    "system_tag_overrides_the_system_column": {"turns": [("system", "S1"), ("user", "Q"), ("assistant", "A")]},
    "openai_formatting_default_columns": {"turns": [("user", "Q"), ("assistant", "A")]},
    "openai_formatting": {"turns": WEATHER, "calls": CALL, "tools": [FUNCTION]},
}


@pytest.mark.parametrize("layout", list(README_LAYOUTS))
def test_readme_layouts_read_unchanged(tmp_path, layout):
    entry, row = README_LAYOUTS[layout]
    write_json(tmp_path / "data.json", [row])
    write_json(tmp_path / "dataset_info.json", {layout: {"file_name": "data.json", **entry}})
    conversations, report = read_catalog(tmp_path, [layout])
    assert report.problems == []
    [conversation] = conversations
    expected = EXPECTED[layout]
    assert conversation.kind == expected.get("kind", "chat")
    assert turns(conversation) == expected["turns"]
    assert conversation.text == expected.get("text")
    assert conversation.label == expected.get("label")
    assert conversation.tools == expected.get("tools")
    assert [m.tool_calls for m in conversation.messages if m.tool_calls] == (
        [expected["calls"]] if "calls" in expected else []
    )
    answers = (conversation.chosen, conversation.rejected)
    assert tuple(m.content for m in answers if m) == expected.get("answers", ())


def test_a_folder_entry_reads_every_file_of_it_as_one_dataset(tmp_path):
    write_jsonl(
        tmp_path / "chats" / "b.jsonl",
        [{"conversations": [{"from": "human", "value": "b"}, {"from": "gpt", "value": "2"}]}],
    )
    write_json(
        tmp_path / "chats" / "a.json",
        [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "1"}]}],
    )
    write_json(tmp_path / "dataset_info.json", {"chats": {"file_name": "chats", "formatting": "sharegpt"}})
    conversations, report = read_catalog(tmp_path, ["chats"])
    assert [turns(c) for c in conversations] == [
        [("user", "a"), ("assistant", "1")],
        [("user", "b"), ("assistant", "2")],
    ]
    assert report.read_per_dataset == {"chats": 2}


def test_malformed_entries_are_refused_with_the_fix(tmp_path):
    write_json(tmp_path / "p.json", [])
    write_json(
        tmp_path / "dataset_info.json",
        {
            "p": {"file_name": "p.json", "formatting": "openai", "ranking": True},
            "cols": {"file_name": "p.json", "columns": ["prompt"]},
        },
    )
    with pytest.raises(UserError, match=r"^dataset 'cols' in .*: 'columns' must be an object, got \['prompt'\]$"):
        resolve_catalog(["cols"], tmp_path)
    with pytest.raises(
        UserError,
        match=r"^dataset 'p': ranking data with formatting 'openai' is not supported; use formatting 'sharegpt'",
    ):
        resolve_catalog(["p"], tmp_path)


# ---------------------------------------------------------------------------------------------------- v1 messages


def part(kind: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "value": value}


def v1(role: str, *parts: dict[str, Any], weight: float | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role, "content": list(parts)}
    if weight is not None:
        message["loss_weight"] = weight
    return message


def load_v1(tmp_path: Path, rows: list[dict[str, Any]], **options: Any) -> tuple[list[Conversation], DataReport, Path]:
    path = write_jsonl(tmp_path / "v1.jsonl", rows)
    conversations, report = load_conversations([str(path)], **options)
    return conversations, report, path


def test_detect_format_tells_v1_rows_from_openai_rows():
    assert detect_format({"messages": [v1("user", part("text", "q"))]}) == "llamafactory_v1"
    assert detect_format({"messages": [{"role": "user", "content": "q", "loss_weight": 0.0}]}) == "llamafactory_v1"
    assert detect_format({"chosen_messages": [], "rejected_messages": []}) == "llamafactory_v1"
    assert detect_format({"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}) == "openai"
    assert detect_format({"messages": [{"role": "user", "content": "q"}]}) == "openai"
    assert detect_format({"messages": "not a list"}) == "openai"


def test_v1_text_parts_join_and_reasoning_becomes_the_thinking_trace(tmp_path, tokenizer):
    rows = [
        {
            "messages": [
                v1("system", part("text", "Be exact."), weight=0.0),
                v1("user", part("text", "Capital "), part("text", "of France?"), weight=0.0),
                v1(
                    "assistant",
                    part("reasoning", "  It is Paris.  "),
                    part("text", "Paris"),
                    part("text", "."),
                    weight=1.0,
                ),
            ]
        }
    ]
    [conversation], report, _ = load_v1(tmp_path, rows)
    assert report.problems == [] and report.notes == []
    assert turns(conversation) == [
        ("system", "Be exact."),
        ("user", "Capital of France?"),
        ("assistant", "<think>\nIt is Paris.\n</think>\n\nParis."),
    ]
    openai = {
        "messages": [
            {"role": "system", "content": "Be exact."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris.", "reasoning_content": "It is Paris."},
        ]
    }
    [same], _ = load_conversations([str(write_jsonl(tmp_path / "openai.jsonl", [openai]))])
    mine, theirs = render_sample(tokenizer, conversation, 4096), render_sample(tokenizer, same, 4096)
    assert (mine.input_ids, mine.labels) == (theirs.input_ids, theirs.labels)
    [stripped], _, _ = load_v1(tmp_path, rows, keep_thinking=False)
    assert stripped.messages[-1].content == "Paris."


def test_v1_loss_weight_zero_masks_that_turn(tmp_path, tokenizer):
    row = {
        "messages": [
            v1("user", part("text", "Hi"), weight=0.0),
            v1("assistant", part("text", "Hello"), weight=0.0),
            v1("user", part("text", "Bye"), weight=0.0),
            v1("assistant", part("text", "Goodbye"), weight=1.0),
        ]
    }
    [conversation], report, _ = load_v1(tmp_path, [row])
    assert [m.weight for m in conversation.messages] == [0.0, 0.0, 0.0, 1.0]
    assert report.notes == []
    sample = render_sample(tokenizer, conversation, 4096)
    supervised = tokenizer.decode(
        [t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label != IGNORE_INDEX]
    )
    assert supervised == "Goodbye<|im_end|>\n"
    unweighted = Conversation(
        [
            Message("user", "Hi"),
            Message("assistant", "Hello", weight=0),
            Message("user", "Bye"),
            Message("assistant", "Goodbye"),
        ]
    )
    assert render_sample(tokenizer, unweighted, 4096).labels == sample.labels


def test_v1_weights_other_than_0_and_1_train_at_weight_1_and_are_counted_once(tmp_path, tokenizer):
    half = {"messages": [v1("user", part("text", "Q1")), v1("assistant", part("text", "A1"), weight=0.5)]}
    heavy = {"messages": [v1("user", part("text", "Q2")), v1("assistant", part("text", "A2"), weight=2)]}
    prompt = {"messages": [v1("user", part("text", "Q3"), weight=1.0), v1("assistant", part("text", "A3"))]}
    plain = {"messages": [v1("user", part("text", "Q4")), v1("assistant", part("text", "A4"), weight=1)]}
    conversations, report, path = load_v1(tmp_path, [half, heavy, prompt, plain])
    assert len(conversations) == 4 and report.problems == []
    assert report.notes == [
        f"loss_weight values other than 0 and 1 are trained at weight 1 (2 rows, first {path}:1); "
        f"loss_weight on user/system/tool messages is not trained (1 rows, first {path}:3): tuneforge trains "
        "assistant turns; data.train_on_prompt trains every token"
    ]
    sample = render_sample(tokenizer, conversations[0], 4096)
    supervised = tokenizer.decode(
        [t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label != IGNORE_INDEX]
    )
    assert supervised == "A1<|im_end|>\n"


def test_v1_tools_and_tool_calls(tmp_path):
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
    row = {
        "messages": [
            v1("user", part("text", "Weather in Paris?")),
            v1("assistant", part("reasoning", "Ask the tool."), part("tool_call", call)),
            v1("tool", part("text", "sunny")),
            v1("assistant", part("text", "Sunny.")),
        ],
        "tools": json.dumps([TOOL]),
    }
    older = {  # the first v1 converters: tools inside the system message, function calls as "tool_calls" parts
        "messages": [
            v1("system", part("tools", json.dumps([TOOL])), weight=0.0),
            v1("user", part("text", "Weather in Rome?"), weight=0.0),
            v1(
                "assistant",
                part("tool_calls", json.dumps([{"name": "get_weather", "arguments": '{"city": "Rome"}'}])),
                weight=1.0,
            ),
            v1("tool", part("text", "rain"), weight=0.0),
            v1("assistant", part("text", "Rain."), weight=1.0),
        ]
    }
    (new, old), report, _ = load_v1(tmp_path, [row, older])
    assert report.problems == []
    assert new.tools == old.tools == [FUNCTION]
    assert turns(new) == [
        ("user", "Weather in Paris?"),
        ("assistant", "<think>\nAsk the tool.\n</think>\n\n"),
        ("tool", "sunny"),
        ("assistant", "Sunny."),
    ]
    assert new.messages[1].tool_calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert turns(old) == [("user", "Weather in Rome?"), ("assistant", ""), ("tool", "rain"), ("assistant", "Rain.")]
    assert old.messages[1].tool_calls == [{"name": "get_weather", "arguments": {"city": "Rome"}}]


def test_v1_preference_and_kto_rows(tmp_path):
    prompt = [v1("user", part("text", "Sky?"), weight=0.0)]
    pair = {
        "chosen_messages": [*prompt, v1("assistant", part("text", "Blue."))],
        "rejected_messages": [*prompt, v1("assistant", part("text", "Green."))],
    }
    kto = {"messages": [*prompt, v1("assistant", part("text", "Blue."))], "label": False}
    (preference, labelled), report, _ = load_v1(tmp_path, [pair, kto])
    assert report.problems == []
    assert preference.kind == "preference" and turns(preference) == [("user", "Sky?")]
    assert (preference.chosen.content, preference.rejected.content) == ("Blue.", "Green.")
    assert (labelled.kind, labelled.label) == ("kto", False)


def test_v1_bad_rows_are_counted_located_drops(tmp_path, tokenizer):
    good = {"messages": [v1("user", part("text", "Q")), v1("assistant", part("text", "A"))]}
    bad_rows = [
        {
            "messages": [
                v1("user", part("text", "Look"), part("image_url", "cat.png")),
                v1("assistant", part("text", "A cat")),
            ]
        },
        {"messages": [v1("user", part("text", "Q")), v1("assistant", part("html", "<b>A</b>"))]},
        {"messages": [v1("user", part("text", "Q")), v1("assistant", part("text", "A"), weight=-1)]},
        {"messages": [v1("user", part("text", "Q")), v1("assistant", part("text", "A"), weight=True)]},
        {"messages": [v1("user", part("text", "Q")), v1("assistant", part("text", "A"), weight=10**400)]},
        {"messages": [v1("user", {"type": "text"}), v1("assistant", part("text", "A"))]},
        {"messages": [v1("user", part("text", 3)), v1("assistant", part("text", "A"))]},
        {
            "messages": [
                {"role": "user", "content": {"type": "text"}, "loss_weight": 0},
                v1("assistant", part("text", "A")),
            ]
        },
        {"messages": [v1("user", part("reasoning", "hmm")), v1("assistant", part("text", "A"))]},
        {"messages": [v1("user", part("text", "Q")), v1("assistant", part("tool_call", "{not json"))]},
        {"messages": [v1("user", part("text", "Q")), v1("assistant", part("tool_call", '{"arguments": {}}'))]},
        {"messages": [v1("narrator", part("text", "Q")), v1("assistant", part("text", "A"))]},
        {"messages": [v1("user", part("text", "Q")), v1("assistant", part("text", "A"))], "tools": "{broken"},
        {
            "chosen_messages": [v1("user", part("text", "Q1")), v1("assistant", part("text", "A"))],
            "rejected_messages": [v1("user", part("text", "Q2")), v1("assistant", part("text", "B"))],
        },
        {"chosen_messages": [], "rejected_messages": []},
        {"messages": [v1("assistant", part("text", "A"))]},
        {"messages": [v1("user", part("text", "Unused")), v1("assistant", part("text", "Answer"), weight=0.0)]},
    ]
    conversations, report, path = load_v1(
        tmp_path,
        [good, *bad_rows, {"messages": [v1("user", part("text", "Q2")), v1("assistant", part("text", "A2"))]}],
    )
    assert [c.source for c in conversations] == [f"{path}:1", f"{path}:18", f"{path}:19"]
    assert {p.where: (p.reason, p.detail) for p in report.issues} == {
        f"{path}:2": (
            "unsupported content",
            "messages[0].content[1] is an image_url part: tuneforge trains text models on text alone",
        ),
        f"{path}:3": (
            "unsupported content",
            "messages[1].content[0] has type 'html' (text, reasoning, tool_call, tools)",
        ),
        f"{path}:4": ("malformed field", "messages[1].loss_weight must be a number >= 0, got -1"),
        f"{path}:5": ("malformed field", "messages[1].loss_weight must be a number >= 0, got true/false"),
        f"{path}:6": ("malformed field", "messages[1].loss_weight must be a number >= 0, got inf"),
        f"{path}:7": ("malformed field", "messages[0].content[0] (text) has no 'value'"),
        f"{path}:8": ("malformed field", "messages[0].content[0].value must be a string, got a number"),
        f"{path}:9": ("malformed field", "messages[0].content must be a list of content parts, got an object"),
        f"{path}:10": ("malformed field", "messages[0] is a 'user' message: only assistant messages reason or call"),
        f"{path}:11": ("malformed field", "messages[1].content[0].value is not valid JSON"),
        f"{path}:12": ("malformed field", "messages[1].content[0] needs a function name (a string), got null"),
        f"{path}:13": ("unsupported role", "messages[0] has role 'narrator' (system, user, assistant, tool)"),
        f"{path}:14": (
            "malformed field",
            "field 'tools' is not valid JSON (Expecting property name enclosed in double quotes)",
        ),
        f"{path}:15": ("malformed field", "chosen_messages and rejected_messages differ before the last message"),
        f"{path}:16": ("missing field", "chosen_messages and rejected_messages must each end with an answer"),
        f"{path}:17": ("wrong role order", "message 1 is 'assistant', expected user"),
    }
    assert (report.total, report.dropped_total) == (19, 16)
    samples = prepare_samples(conversations, tokenizer, 4096, report)  # the answer of line 18 has loss_weight 0
    assert [s.source for s in samples] == [f"{path}:1", f"{path}:19"]
    assert (
        str(report.issues[-1]) == f"{path}:18: all labels masked: no assistant turn is supervised (all have weight 0)"
    )
    assert report.balanced and report.kept == 2
