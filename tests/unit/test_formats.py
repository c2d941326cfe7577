"""tuneforge.data: row formats, file reading with line numbers, sources, placeholders, the row report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.shared_data import LLAMAFACTORY, needs_llamafactory
from fixtures.tiny_models import write_json, write_jsonl
from tuneforge.data import Message, load_conversations
from tuneforge.data.catalog import DataSource, bundled_names, bundled_path, resolve_sources
from tuneforge.data.files import read_rows
from tuneforge.data.formats import FORMATS, detect_format
from tuneforge.data.messages import RowError
from tuneforge.data.pipeline import fill_placeholders
from tuneforge.errors import UserError


def element_start_lines(path: Path) -> list[int]:
    """Line numbers (1-based) of '  {' lines: where each element of a pretty-printed JSON array starts."""
    return [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if line == "  {"]


# ---------------------------------------------------------------------------------------------------- real files


@needs_llamafactory
def test_alpaca_en_demo_every_row_parses_exactly():
    path = LLAMAFACTORY / "alpaca_en_demo.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    conversations, report = load_conversations([str(path)], dedup="none")
    assert len(conversations) == len(rows) == report.total == 999
    assert report.dropped_total == 0
    # the file repeats 14 rows word for word: reported, not dropped, when dedup is off
    assert report.flagged == {"exact duplicate": 14}
    assert report.problems[0] == f"{path}:1377: exact duplicate: same as {path}:587"

    first = conversations[0]
    assert rows[0]["input"] == ""
    assert first.messages == [
        Message("user", rows[0]["instruction"]),
        Message("assistant", rows[0]["output"]),
    ]
    with_input = next(i for i, row in enumerate(rows) if row["input"].strip())
    assert conversations[with_input].messages[0] == Message(
        "user", rows[with_input]["instruction"] + "\n\n" + rows[with_input]["input"]
    )
    for row, conversation in zip(rows, conversations, strict=True):
        prompt = row["instruction"] + ("\n\n" + row["input"] if row["input"].strip() else "")
        assert conversation.messages == [Message("user", prompt), Message("assistant", row["output"])]
        assert conversation.tools is None
    # every conversation points at the line its JSON object starts on
    lines = element_start_lines(path)
    assert [c.source for c in conversations] == [f"{path}:{n}" for n in lines]
    assert {c.dataset for c in conversations} == {str(path)}


@needs_llamafactory
def test_identity_with_variables_fills_every_placeholder():
    path = LLAMAFACTORY / "identity.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    conversations, report = load_conversations([str(path)], variables={"name": "Conch", "author": "ACME"})
    assert len(conversations) == len(rows) == report.total == 91
    texts = [m.content for c in conversations for m in c.messages]
    assert not any("{{" in t or "}}" in t for t in texts)
    assert sum("Conch" in t for t in texts) == sum("{{name}}" in json.dumps(r) for r in rows) == 77
    assert sum("ACME" in t for t in texts) == 60
    assert conversations[0].messages == [
        Message("user", "hi"),
        Message("assistant", "Hello! I am Conch, an AI assistant developed by ACME. How can I assist you today?"),
    ]


@needs_llamafactory
def test_identity_without_variables_drops_each_placeholder_row_at_its_line():
    path = LLAMAFACTORY / "identity.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    lines = element_start_lines(path)
    uses = [("{{name}}" in json.dumps(r), "{{author}}" in json.dumps(r)) for r in rows]
    conversations, report = load_conversations([str(path)])
    assert report.total == 91 and report.dropped == {"unfilled placeholder": 85}
    assert [p.where for p in report.issues] == [f"{path}:{n}" for n, use in zip(lines, uses, strict=True) if any(use)]
    assert [c.source for c in conversations] == [
        f"{path}:{n}" for n, use in zip(lines, uses, strict=True) if not any(use)
    ]
    assert report.problems[0] == (
        f"{path}:2: unfilled placeholder: {{{{name}}}}, {{{{author}}}} have no value in data.variables: "
        "set data.variables.name=YourValue and data.variables.author=YourValue, "
        "or set data.placeholders: keep to train such text as written"
    )
    assert not any("{{" in m.content for c in conversations for m in c.messages)

    conversations, report = load_conversations([str(path)], variables={"name": "Conch"})
    assert report.dropped == {"unfilled placeholder": 60}
    only_author = next(i for i, (name, author) in enumerate(uses) if author and not name)
    assert (
        f"{path}:{lines[only_author]}: unfilled placeholder: {{{{author}}}} has no value in data.variables: "
        + ("set data.variables.author=YourValue, or set data.placeholders: keep to train such text as written")
        in report.problems
    )
    kept = [r for r, (_, author) in zip(rows, uses, strict=True) if not author]
    assert [m.content for c in conversations for m in c.messages] == [
        text.replace("{{name}}", "Conch")
        for r in kept
        for text in (r["instruction"] + (f"\n\n{r['input']}" if r["input"].strip() else ""), r["output"])
    ]


@needs_llamafactory
def test_glaive_toolcall_sharegpt_with_tools():
    path = LLAMAFACTORY / "glaive_toolcall_en_demo.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    conversations, report = load_conversations([str(path)], dedup="none")
    assert len(conversations) == report.total == len(rows) == 300
    assert report.dropped_total == 0 and report.flagged == {"exact duplicate": 35}

    calls = results = with_tools = 0
    for row, conversation in zip(rows, conversations, strict=True):
        if row["tools"] == "[]":  # 109 rows declare no tools
            assert not conversation.tools
        else:
            with_tools += 1
            assert conversation.tools == [{"type": "function", "function": t} for t in json.loads(row["tools"])]
        assert len(conversation.messages) == len(row["conversations"])
        for turn, message in zip(row["conversations"], conversation.messages, strict=True):
            if turn["from"] == "function_call":
                call = json.loads(turn["value"])
                assert message == Message(
                    "assistant", "", tool_calls=[{"name": call["name"], "arguments": call["arguments"]}]
                )
                calls += 1
            elif turn["from"] == "observation":
                assert message == Message("tool", turn["value"])
                results += 1
            else:
                assert message == Message({"human": "user", "gpt": "assistant"}[turn["from"]], turn["value"])
    assert calls == results == 211
    assert with_tools == 191

    first = conversations[0]
    assert first.tools[0]["type"] == "function"
    assert first.tools[0]["function"]["name"] == "search_recipes"
    assert [m.role for m in first.messages] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    assert first.messages[3].tool_calls == [
        {"name": "search_recipes", "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]}}
    ]


# ---------------------------------------------------------------------------------------------------- OpenAI


TOOL = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_openai_messages_jsonl_parses_exactly(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                ]
            },
            {
                "messages": [
                    {"role": "developer", "content": "Answer in Chinese."},
                    {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "hi"}]},
                    {"role": "assistant", "content": "你好！"},
                    {"role": "user", "content": "Again"},
                    {"role": "assistant", "content": "你好，世界！"},
                ]
            },
            {
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
                    {"role": "assistant", "content": "It is 21 degrees."},
                ],
                "tools": [{"type": "function", "function": TOOL}],
            },
        ],
    )
    conversations, report = load_conversations([str(path)])
    assert report.total == 3 and report.problems == []
    assert [c.source for c in conversations] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert conversations[0].messages == [
        Message("system", "Be terse."),
        Message("user", "What is the capital of France?"),
        Message("assistant", "Paris."),
    ]
    assert conversations[0].tools is None
    assert conversations[1].messages == [
        Message("system", "Answer in Chinese."),
        Message("user", "Hello, hi"),
        Message("assistant", "你好！"),
        Message("user", "Again"),
        Message("assistant", "你好，世界！"),
    ]
    assert conversations[2].messages == [
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]),
        Message("tool", '{"temp": 21}'),
        Message("assistant", "It is 21 degrees."),
    ]
    assert conversations[2].tools == [{"type": "function", "function": TOOL}]
    # the template form uses the OpenAI / transformers tool-call layout
    assert conversations[2].to_template()[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    }


def test_bare_tool_definitions_are_wrapped():
    parsed = FORMATS.get("sharegpt")(
        {
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
            "tools": json.dumps([TOOL]),
            "system": "Sys",
        }
    )
    assert parsed.tools == [{"type": "function", "function": TOOL}]
    assert parsed.messages == [Message("system", "Sys"), Message("user", "hi"), Message("assistant", "hello")]


def test_parse_tools():
    from tuneforge.data.formats.sharegpt import parse_tools

    assert parse_tools(None) is None
    assert parse_tools("") is None
    assert parse_tools([]) is None
    assert parse_tools([TOOL]) == [{"type": "function", "function": TOOL}]
    assert parse_tools([{"type": "function", "function": TOOL}]) == [{"type": "function", "function": TOOL}]
    with pytest.raises(RowError, match="not valid JSON"):
        parse_tools("[{")
    with pytest.raises(RowError, match="list of tool definitions"):
        parse_tools({"name": "x"})


def test_parse_tools_empty_json_string_means_none():
    from tuneforge.data.formats.sharegpt import parse_tools

    assert parse_tools("[]") is None


def test_detect_format():
    assert detect_format({"messages": []}) == "openai"
    assert detect_format({"conversations": []}) == "sharegpt"
    assert detect_format({"instruction": "a", "output": "b"}) == "alpaca"
    assert detect_format({"instruction": "a"}) == "alpaca"  # the parser then names the missing field
    assert detect_format({"prompt": "a", "chosen": "b", "rejected": "c"}) == "prompt_completion"
    assert detect_format({"text": "a"}) == "text"
    assert detect_format({"question": "a"}) is None
    assert detect_format([1, 2]) is None


def test_alpaca_system_and_history():
    parsed = FORMATS.get("alpaca")(
        {"instruction": "Q3", "input": "  ", "output": "A3", "system": "S", "history": [["Q1", "A1"], ["Q2", "A2"]]}
    )
    assert parsed.messages == [
        Message("system", "S"),
        Message("user", "Q1"),
        Message("assistant", "A1"),
        Message("user", "Q2"),
        Message("assistant", "A2"),
        Message("user", "Q3"),  # whitespace-only input adds nothing
        Message("assistant", "A3"),
    ]
    with pytest.raises(RowError) as info:
        FORMATS.get("alpaca")({"instruction": "Q", "output": 3})
    assert info.value.reason == "malformed field"


# ---------------------------------------------------------------------------------------------------- bad rows


def test_bad_alpaca_rows_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"instruction": "Say hi", "output": "hi"}),  # 1 ok
                '{"instruction": "broken", "output": "x"',  # 2 malformed JSON
                json.dumps({"instruction": "no output here"}),  # 3 missing output
                json.dumps({"instruction": "q", "input": "", "output": "   "}),  # 4 empty answer
                "",  # 5 blank: skipped, not a row
                json.dumps({"instruction": "q2", "input": "ctx", "output": "a2"}),  # 6 ok
                "[1, 2]",  # 7 not an object
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    conversations, report = load_conversations([str(path)], fmt="alpaca")
    assert report.total == 6
    assert [c.source for c in conversations] == [f"{path}:1", f"{path}:6"]
    assert conversations[1].messages == [Message("user", "q2\n\nctx"), Message("assistant", "a2")]
    assert report.dropped == {"malformed JSON": 1, "missing field": 1, "empty answer": 1, "malformed row": 1}
    assert report.dropped_total == 4
    assert len(report.problems) == 4
    assert report.problems[0].startswith(f"{path}:2: malformed JSON: malformed JSON (")
    assert report.problems[1:] == [
        f"{path}:3: missing field: missing field 'output'",
        f"{path}:4: empty answer: message 2 (assistant) is empty",
        f"{path}:7: malformed row: expected an object, got a list",
    ]


def test_bad_openai_rows_are_reported_with_file_and_line(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]},
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "b"},
                ]
            },
            {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]},
            {"foo": 1},
            {"messages": [{"role": "system", "content": "s"}]},
            {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}]},
        ],
    )
    conversations, report = load_conversations([str(path)])
    assert report.total == 8
    assert [c.source for c in conversations] == [f"{path}:1"]
    assert report.dropped == {
        "wrong role order": 3,
        "unsupported role": 1,
        "unknown format": 1,
        "empty conversation": 1,
        "empty prompt": 1,
    }
    assert report.problems == [
        f"{path}:2: wrong role order: message 1 is 'assistant', expected user",
        f"{path}:3: wrong role order: message 2 is 'user', expected assistant",
        f"{path}:4: wrong role order: the conversation must end with an assistant answer",
        f"{path}:5: unsupported role: messages[1] has role 'bot'",
        f"{path}:6: unknown format: cannot tell the format from keys ['foo']",
        f"{path}:7: empty conversation: no user/assistant messages",
        f"{path}:8: empty prompt: message 1 (user) is empty",
    ]
    assert report.summary().startswith("kept 0 + truncated 0 + dropped 7 = 8 rows (dropped: wrong role order 3")


def test_missing_output_with_auto_format_names_the_field(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}, {"instruction": "no output"}])
    conversations, report = load_conversations([str(path)])
    assert len(conversations) == 1
    assert report.problems == [f"{path}:2: missing field: missing field 'output'"]


def test_json_array_reports_the_line_where_the_element_starts(tmp_path):
    rows = [
        {"instruction": "a", "output": "1"},
        {"instruction": "b", "output": "2"},
        {"instruction": "c", "output": ""},
        {"instruction": "d", "output": "4"},
    ]
    path = write_json(tmp_path / "arr.json", rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    # indent=2: '[' then 4 lines per element, so element 2 starts on line 10
    assert lines[9] == "  {" and lines[10] == '    "instruction": "c",'
    assert [r.line for r in read_rows(path)] == [2, 6, 10, 14]
    conversations, report = load_conversations([str(path)])
    assert report.total == 4
    assert [c.source for c in conversations] == [f"{path}:2", f"{path}:6", f"{path}:14"]
    assert report.dropped == {"empty answer": 1}
    assert report.problems == [f"{path}:10: empty answer: message 2 (assistant) is empty"]


def test_json_array_with_a_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"instruction": "a", "output": "1"},\n  {"instruction": "b" "output": "2"}\n]\n')
    with pytest.raises(UserError, match=rf"^{path}:3: invalid JSON"):
        list(read_rows(path))
    unclosed = tmp_path / "unclosed.json"
    unclosed.write_text('[\n  {"instruction": "a", "output": "1"}\n')
    with pytest.raises(UserError, match="not closed"):
        list(read_rows(unclosed))


def test_json_file_holding_json_lines_and_bom(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text(
        "\ufeff"
        + json.dumps({"instruction": "a", "output": "1"})
        + "\n"
        + json.dumps({"instruction": "b", "output": "2"}),
        encoding="utf-8",
    )
    assert [(r.line, r.value["instruction"]) for r in read_rows(path)] == [(1, "a"), (2, "b")]


def test_unsupported_and_missing_files(tmp_path):
    xml = tmp_path / "data.xml"
    xml.write_text("<a/>\n")
    with pytest.raises(UserError, match=r"unsupported file type '\.xml'"):
        list(read_rows(xml))
    with pytest.raises(UserError, match="not found"):
        list(read_rows(tmp_path / "missing.jsonl"))


# ---------------------------------------------------------------------------------------------------- sources


def test_resolve_sources_folder_bundled_and_missing(tmp_path):
    folder = tmp_path / "data"
    write_jsonl(folder / "b.jsonl", [{"instruction": "x", "output": "y"}])
    write_json(folder / "a.json", [{"instruction": "x", "output": "y"}])
    (folder / "notes.md").write_text("not data")
    (folder / "sub").mkdir()

    sources = resolve_sources([str(folder), "identity"])
    assert sources == [
        DataSource(folder / "a.json", f"{folder}/a.json", group=str(folder)),
        DataSource(folder / "b.jsonl", f"{folder}/b.jsonl", group=str(folder)),
        DataSource(bundled_path("identity"), "identity", group="identity"),
    ]
    assert bundled_path("identity").name == "identity.json"
    assert {"identity", "demo_questions", "general_prompts"} <= set(bundled_names())

    missing = str(tmp_path / "nowhere.jsonl")
    with pytest.raises(UserError) as info:
        resolve_sources([missing])
    assert repr(missing) in str(info.value)
    with pytest.raises(UserError, match="Did you mean 'identity'"):
        resolve_sources(["identiti"])
    with pytest.raises(UserError, match="data.train is empty"):
        resolve_sources([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no"):
        resolve_sources([str(tmp_path / "empty")])


def test_resolve_sources_relative_to_base_dir(tmp_path):
    write_jsonl(tmp_path / "cfg" / "rows.jsonl", [{"instruction": "x", "output": "y"}])
    sources = resolve_sources(["rows.jsonl"], base_dir=tmp_path / "cfg")
    assert sources == [DataSource(tmp_path / "cfg" / "rows.jsonl", "rows.jsonl", group="rows.jsonl")]


def test_max_samples_limits_rows_per_file(tmp_path):
    first = write_jsonl(tmp_path / "d" / "1.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(5)])
    write_jsonl(tmp_path / "d" / "2.jsonl", [{"instruction": f"r{i}", "output": f"b{i}"} for i in range(5)])
    conversations, report = load_conversations([str(tmp_path / "d")], max_samples=2, shuffle=False)
    assert report.total == 4
    assert [c.messages[0].content for c in conversations] == ["q0", "q1", "r0", "r1"]
    assert {c.dataset for c in conversations} == {str(tmp_path / "d")}
    shuffled, _ = load_conversations([str(tmp_path / "d")], max_samples=2, seed=1)
    again, _ = load_conversations([str(tmp_path / "d")], max_samples=2, seed=1)
    assert [c.source for c in shuffled] == [c.source for c in again]  # a seeded, repeatable choice
    assert len(shuffled) == 4
    conversations, report = load_conversations([str(first)], max_samples=10)
    assert report.total == 5 and len(conversations) == 5


def test_bundled_identity_loads_by_name():
    conversations, report = load_conversations(["identity"], variables={"name": "Conch", "author": "ACME"})
    rows = json.loads(bundled_path("identity").read_text(encoding="utf-8"))
    assert len(conversations) == report.total == len(rows) == 76
    assert all(c.dataset == "identity" for c in conversations)
    assert [c.messages[-1].content for c in conversations] == [
        r["output"].replace("{{name}}", "Conch").replace("{{author}}", "ACME") for r in rows
    ]


# ---------------------------------------------------------------------------------------------------- placeholders


def test_fill_placeholders_nested():
    row = {"a": "I am {{name}} by {{author}}", "b": ["{{name}}!", 3, None], "c": {"d": "{{other}}"}}
    assert fill_placeholders(row, {"name": "Conch", "author": "ACME"}) == {
        "a": "I am Conch by ACME",
        "b": ["Conch!", 3, None],
        "c": {"d": "{{other}}"},
    }
    assert fill_placeholders("no placeholders", {"name": "x"}) == "no placeholders"


def test_placeholder_with_spaces_is_filled(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Who?", "output": "I am {{ name }}."}])
    conversations, _ = load_conversations([str(path)], variables={"name": "Conch"})
    assert conversations[0].messages[-1].content == "I am Conch."


ANSIBLE = "- name: install packages\n  apt: name={{ item }} state=present\n  loop: {{ packages }}"


def test_unfilled_placeholder_is_a_located_drop_and_keep_trains_it_as_written(tmp_path):
    rows = [
        {"instruction": "Write an Ansible loop task.", "output": ANSIBLE},
        {"instruction": "Who are you?", "output": "I am {{name}}."},
        {"instruction": "Jinja filters?", "output": "Write {{ user.name }} or {{ x | upper }}."},  # no bare name
        {"instruction": "Say hi", "output": "Hi!"},
    ]
    path = write_jsonl(tmp_path / "code.jsonl", rows)
    conversations, report = load_conversations([str(path)], variables={"name": "Conch"})
    assert [c.messages[-1].content for c in conversations] == [
        "I am Conch.",
        "Write {{ user.name }} or {{ x | upper }}.",
        "Hi!",
    ]
    assert report.dropped == {"unfilled placeholder": 1}
    assert report.problems == [
        f"{path}:1: unfilled placeholder: {{{{item}}}}, {{{{packages}}}} have no value in data.variables: "
        "set data.variables.item=YourValue and data.variables.packages=YourValue, "
        "or set data.placeholders: keep to train such text as written"
    ]

    kept, report = load_conversations([str(path)], variables={"name": "Conch"}, placeholders="keep")
    assert report.problems == []
    assert [c.messages[-1].content for c in kept] == [
        ANSIBLE,  # trained as written, braces and all
        "I am Conch.",  # a placeholder with a value is still filled
        "Write {{ user.name }} or {{ x | upper }}.",
        "Hi!",
    ]


def test_placeholders_in_every_kind_of_text_are_checked(tmp_path):
    rows = [
        {"text": "Hello {{who}}"},
        {"prompt": "{{q}}", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "a", "rejected": "{{r}}"},
        {
            "messages": [
                {"role": "system", "content": "{{sys}}"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"},
            ]
        },
    ]
    path = write_jsonl(tmp_path / "kinds.jsonl", rows)
    conversations, report = load_conversations([str(path)])
    assert conversations == []
    assert [(p.where, p.detail.split(" ha")[0]) for p in report.issues] == [
        (f"{path}:1", "{{who}}"),
        (f"{path}:2", "{{q}}"),
        (f"{path}:3", "{{r}}"),
        (f"{path}:4", "{{sys}}"),
    ]
