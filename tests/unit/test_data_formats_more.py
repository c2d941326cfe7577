"""tuneforge.data: CSV/Parquet/TXT files and folders, preference/KTO/text rows, thinking traces, loss masks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from fixtures.tiny_models import write_json, write_jsonl
from tuneforge.data import IGNORE_INDEX, Conversation, DataReport, Message, RowError, load_conversations
from tuneforge.data.files import RawRow, read_rows
from tuneforge.data.formats import FORMATS
from tuneforge.data.pipeline import prepare_samples, strip_thinking
from tuneforge.data.render import MaskOptions, render_sample
from tuneforge.errors import UserError

DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def expected_from_pieces(tokenizer: Any, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """Encode each (text, supervised) piece on its own; labels = ids where supervised, else IGNORE_INDEX."""
    ids: list[int] = []
    labels: list[int] = []
    for text, supervised in pieces:
        piece = encode(tokenizer, text)
        ids += piece
        labels += piece if supervised else [IGNORE_INDEX] * len(piece)
    return ids, labels


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def load_one(tmp_path: Path, row: dict[str, Any], **options: Any) -> tuple[list[Conversation], DataReport, Path]:
    path = write_jsonl(tmp_path / "row.jsonl", [row])
    conversations, report = load_conversations([str(path)], **options)
    return conversations, report, path


# ---------------------------------------------------------------------------------------------------- CSV


def test_csv_rows_use_the_header_and_report_line_numbers(tmp_path):
    path = write_text(
        tmp_path / "rows.csv",
        "instruction,input,output\n"  # 1
        "Say hi,,hi\n"  # 2
        'Add,"2, 3",5\n'  # 3: a quoted comma stays inside the field
        "Too,many,fields,here\n"  # 4
        "Short,,\n",  # 5: empty output
    )
    rows = list(read_rows(path))
    assert rows == [
        RawRow(line=2, value={"instruction": "Say hi", "input": "", "output": "hi"}),
        RawRow(line=3, value={"instruction": "Add", "input": "2, 3", "output": "5"}),
        RawRow(line=4, error="more fields than the 3 header columns"),
        RawRow(line=5, value={"instruction": "Short", "input": "", "output": ""}),
    ]
    conversations, report = load_conversations([str(path)])
    assert report.total == 4
    assert [c.source for c in conversations] == [f"{path}:2", f"{path}:3"]
    assert conversations[1].messages == [Message("user", "Add\n\n2, 3"), Message("assistant", "5")]
    assert report.dropped == {"malformed row": 1, "empty answer": 1}
    assert report.problems == [
        f"{path}:4: malformed row: more fields than the 3 header columns",
        f"{path}:5: empty answer: message 2 (assistant) is empty",
    ]


def test_csv_multi_line_field_keeps_the_start_line_of_later_rows(tmp_path):
    path = write_text(
        tmp_path / "multi.csv",
        "instruction,output\n"  # 1
        '"Write a poem\nabout the sea\nin three lines",Waves\n'  # 2-4
        "Next,row\n"  # 5
        '"Two\nlines","Answer\nalso two"\n'  # 6-8: two fields of two lines each
        "Last,one\n",  # 9
    )
    rows = list(read_rows(path))
    assert [r.line for r in rows] == [2, 5, 6, 9]
    assert rows[0].value == {"instruction": "Write a poem\nabout the sea\nin three lines", "output": "Waves"}
    assert rows[2].value == {"instruction": "Two\nlines", "output": "Answer\nalso two"}
    assert rows[3].value == {"instruction": "Last", "output": "one"}


def test_csv_rows_after_a_blank_line_keep_their_own_line(tmp_path):
    path = write_text(tmp_path / "gaps.csv", "instruction,output\nq1,a1\n\nq2,a2\n\n\nq3,a3\n")
    assert [(r.line, r.value["instruction"]) for r in read_rows(path)] == [(2, "q1"), (4, "q2"), (7, "q3")]


def test_csv_unicode_line_separator_inside_a_field_is_not_a_row_break(tmp_path):
    path = write_text(tmp_path / "sep.csv", "instruction,output\nfirst\u2028part,a1\nq2,a2\n")
    assert list(read_rows(path)) == [
        RawRow(line=2, value={"instruction": "first\u2028part", "output": "a1"}),
        RawRow(line=3, value={"instruction": "q2", "output": "a2"}),
    ]


# ---------------------------------------------------------------------------------------------------- JSONL / Parquet / TXT


def test_jsonl_unicode_line_separator_inside_a_string_is_one_row(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028 / U+2029 unescaped: legal JSON, still a single line
    path = write_jsonl(
        tmp_path / "sep.jsonl",
        [{"instruction": "one\u2028two", "output": "a\u2029b"}, {"instruction": "q", "output": "a"}],
    )
    rows = list(read_rows(path))
    assert rows == [
        RawRow(line=1, value={"instruction": "one\u2028two", "output": "a\u2029b"}),
        RawRow(line=2, value={"instruction": "q", "output": "a"}),
    ]


def test_parquet_rows_are_located_by_row_number(tmp_path):
    path = write_parquet(
        tmp_path / "rows.parquet",
        [
            {"instruction": "Say hi", "input": "", "output": "hi"},
            {"instruction": "Add", "input": "2 and 3", "output": None},
            {"instruction": "Capital of France?", "input": None, "output": "Paris."},
        ],
    )
    rows = list(read_rows(path))
    assert [(r.line, r.unit) for r in rows] == [(1, "row"), (2, "row"), (3, "row")]
    assert rows[0].where(path) == f"{path}:row 1"
    conversations, report = load_conversations([str(path)])
    assert report.total == 3
    assert [c.source for c in conversations] == [f"{path}:row 1", f"{path}:row 3"]
    assert conversations[1].messages == [Message("user", "Capital of France?"), Message("assistant", "Paris.")]
    assert report.problems == [f"{path}:row 2: missing field: missing field 'output'"]


def test_unreadable_parquet_is_a_user_error(tmp_path):
    path = write_text(tmp_path / "fake.parquet", "not parquet at all")
    with pytest.raises(UserError, match=rf"^cannot read Parquet file {re.escape(str(path))}: "):
        list(read_rows(path))


def test_txt_lines_become_raw_text_samples(tmp_path):
    path = write_text(tmp_path / "corpus.txt", "First document.\n\n   \nSecond document, longer.\nThird.\n")
    conversations, report = load_conversations([str(path)])
    assert report.total == 3 and report.problems == []
    assert [(c.source, c.text, c.kind) for c in conversations] == [
        (f"{path}:1", "First document.", "text"),
        (f"{path}:4", "Second document, longer.", "text"),
        (f"{path}:5", "Third.", "text"),
    ]
    assert all(c.messages == [] for c in conversations)


def test_folder_of_mixed_files_is_one_dataset_in_name_order(tmp_path):
    folder = tmp_path / "mixed"
    write_text(folder / "a.csv", "instruction,output\ncsv q,csv a\n")
    write_json(folder / "b.json", [{"instruction": "json q", "output": "json a"}])
    write_jsonl(
        folder / "c.jsonl",
        [{"messages": [{"role": "user", "content": "jsonl q"}, {"role": "assistant", "content": "jsonl a"}]}],
    )
    write_parquet(folder / "d.parquet", [{"prompt": "parquet q", "completion": "parquet a", "label": True}])
    write_text(folder / "e.txt", "a plain line of text\n")
    write_text(folder / "notes.md", "not data\n")
    conversations, report = load_conversations([str(folder)])
    assert report.total == 5 and report.problems == []
    assert [c.source for c in conversations] == [
        f"{folder / 'a.csv'}:2",
        f"{folder / 'b.json'}:2",
        f"{folder / 'c.jsonl'}:1",
        f"{folder / 'd.parquet'}:row 1",
        f"{folder / 'e.txt'}:1",
    ]
    assert [c.kind for c in conversations] == ["chat", "chat", "chat", "kto", "text"]
    assert {c.dataset for c in conversations} == {str(folder)}
    assert report.read_per_dataset == {str(folder): 5}
    assert conversations[3].messages == [Message("user", "parquet q"), Message("assistant", "parquet a")]
    assert conversations[3].label is True


# ---------------------------------------------------------------------------------------------------- preference


def test_alpaca_preference_row(tmp_path):
    row = {
        "instruction": "Greet me",
        "input": "politely",
        "chosen": "Good morning!",
        "rejected": "What?",
        "system": "S",
    }
    conversations, report, path = load_one(tmp_path, row)
    assert report.problems == []
    (conversation,) = conversations
    assert conversation.kind == "preference"
    assert conversation.messages == [Message("system", "S"), Message("user", "Greet me\n\npolitely")]
    assert conversation.chosen == Message("assistant", "Good morning!")
    assert conversation.rejected == Message("assistant", "What?")
    assert conversation.label is None and conversation.text is None
    assert conversation.source == f"{path}:1"


def test_sharegpt_preference_row_llamafactory_style(tmp_path):
    row = {
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "Capital of France?"},
        ],
        "chosen": {"from": "gpt", "value": "Paris."},
        "rejected": {"from": "gpt", "value": "London."},
    }
    conversations, report, _ = load_one(tmp_path, row)
    assert report.problems == []
    (conversation,) = conversations
    assert conversation.kind == "preference"
    assert conversation.messages == [
        Message("user", "Hi"),
        Message("assistant", "Hello"),
        Message("user", "Capital of France?"),
    ]
    assert conversation.chosen == Message("assistant", "Paris.")
    assert conversation.rejected == Message("assistant", "London.")


def test_bad_preference_rows_are_reported(tmp_path):
    prompt = [{"from": "human", "value": "Q"}]
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {
                "conversations": [*prompt, {"from": "gpt", "value": "A"}],
                "chosen": {"from": "gpt", "value": "c"},
                "rejected": {"from": "gpt", "value": "r"},
            },
            {
                "conversations": prompt,
                "chosen": {"from": "human", "value": "c"},
                "rejected": {"from": "gpt", "value": "r"},
            },
            {
                "conversations": prompt,
                "chosen": {"from": "gpt", "value": "c"},
                "rejected": {"from": "gpt", "value": "  "},
            },
            {
                "conversations": prompt,
                "chosen": {"from": "gpt", "value": "c"},
                "rejected": {"from": "gpt", "value": "r"},
            },
        ],
    )
    conversations, report = load_conversations([str(path)])
    assert [c.source for c in conversations] == [f"{path}:4"]
    assert report.problems == [
        f"{path}:1: wrong role order: a preference prompt must end with a user (or tool) message",
        f"{path}:2: wrong role order: the chosen answer comes from 'user', expected assistant",
        f"{path}:3: empty answer: the rejected answer is empty",
    ]
    assert report.dropped == {"wrong role order": 2, "empty answer": 1}


def test_trl_preference_with_strings_and_with_message_lists(tmp_path):
    path = write_jsonl(
        tmp_path / "trl.jsonl",
        [
            {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."},
            {
                "prompt": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2 + 2?"}],
                "chosen": [{"role": "assistant", "content": "4"}],
                "rejected": [{"role": "assistant", "content": "5"}],
            },
        ],
    )
    conversations, report = load_conversations([str(path)])
    assert report.problems == []
    first, second = conversations
    assert first.kind == second.kind == "preference"
    assert first.messages == [Message("user", "Capital of France?")]
    assert (first.chosen, first.rejected) == (Message("assistant", "Paris."), Message("assistant", "Rome."))
    assert second.messages == [Message("system", "Be terse."), Message("user", "2 + 2?")]
    assert (second.chosen, second.rejected) == (Message("assistant", "4"), Message("assistant", "5"))


def test_trl_implicit_prompt_shared_prefix_and_differing_prefix(tmp_path):
    shared = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Sky?"},
    ]
    path = write_jsonl(
        tmp_path / "implicit.jsonl",
        [
            {
                "chosen": [*shared, {"role": "assistant", "content": "Blue."}],
                "rejected": [*shared, {"role": "assistant", "content": "Green."}],
            },
            {
                "chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
                "rejected": [{"role": "user", "content": "Grass?"}, {"role": "assistant", "content": "Green."}],
            },
        ],
    )
    conversations, report = load_conversations([str(path)])
    (conversation,) = conversations
    assert conversation.kind == "preference"
    assert conversation.messages == [Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Sky?")]
    assert conversation.chosen == Message("assistant", "Blue.")
    assert conversation.rejected == Message("assistant", "Green.")
    assert report.problems == [
        f"{path}:2: malformed field: chosen and rejected conversations differ before the last turn"
    ]


# ---------------------------------------------------------------------------------------------------- KTO


def test_kto_rows_openai_style_and_prompt_completion(tmp_path):
    path = write_jsonl(
        tmp_path / "kto.jsonl",
        [
            {
                "messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}],
                "label": True,
            },
            {"prompt": "3 + 3?", "completion": "7", "label": False},
            {
                "prompt": [{"role": "user", "content": "Hi"}],
                "completion": [{"role": "assistant", "content": "Hey"}],
                "label": 1,
            },
        ],
    )
    conversations, report = load_conversations([str(path)])
    assert report.problems == []
    assert [(c.kind, c.label) for c in conversations] == [("kto", True), ("kto", False), ("kto", True)]
    assert conversations[0].messages == [Message("user", "2 + 2?"), Message("assistant", "4")]
    assert conversations[1].messages == [Message("user", "3 + 3?"), Message("assistant", "7")]
    assert conversations[2].messages == [Message("user", "Hi"), Message("assistant", "Hey")]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (1.0, True),
        ("true", True),
        ("False", False),
        (" TRUE ", True),
        ("1", True),
        ("0", False),
    ],
)
def test_kto_label_forms(label, expected):
    parsed = FORMATS.get("prompt_completion")({"prompt": "q", "completion": "a", "label": label})
    assert parsed.label is expected
    parsed = FORMATS.get("openai")(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": label}
    )
    assert parsed.label is expected


def test_absent_or_empty_label_is_a_plain_chat_row(tmp_path):
    path = write_jsonl(
        tmp_path / "nolabel.jsonl",
        [
            {"prompt": "q1", "completion": "a1"},
            {"prompt": "q2", "completion": "a2", "label": None},
            {"prompt": "q3", "completion": "a3", "label": ""},
        ],
    )
    conversations, _ = load_conversations([str(path)])
    assert [(c.kind, c.label) for c in conversations] == [("chat", None)] * 3


def test_invalid_kto_label_is_a_problem_row(tmp_path):
    path = write_jsonl(
        tmp_path / "badlabel.jsonl",
        [
            {"prompt": "q1", "completion": "a1", "label": "yes"},
            {"prompt": "q2", "completion": "a2", "label": 2},
            {"messages": [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"}], "label": [True]},
            {"prompt": "q4", "completion": "a4", "label": "true"},
        ],
    )
    conversations, report = load_conversations([str(path)])
    assert [(c.source, c.label) for c in conversations] == [(f"{path}:4", True)]
    assert report.dropped == {"malformed field": 3}
    assert report.problems == [
        f"{path}:1: malformed field: KTO label must be true or false, got 'yes'",
        f"{path}:2: malformed field: KTO label must be true or false, got 2",
        f"{path}:3: malformed field: KTO label must be true or false, got [True]",
    ]


# ---------------------------------------------------------------------------------------------------- text, weights, thinking


def test_raw_text_rows(tmp_path):
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": "Once upon a time."}, {"text": "   "}, {"text": 5}])
    conversations, report = load_conversations([str(path)])
    (conversation,) = conversations
    assert (conversation.kind, conversation.text, conversation.messages) == ("text", "Once upon a time.", [])
    assert report.problems == [
        f"{path}:2: empty text: the text is empty",
        f"{path}:3: malformed field: field 'text' must be a string, got a number",
    ]


def test_openai_weight_zero_marks_an_assistant_turn(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "Hi", "weight": 0},
            {"role": "assistant", "content": "Hello", "weight": 0},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye", "weight": 1},
        ]
    }
    conversations, report, _ = load_one(tmp_path, row)
    assert report.problems == []
    assert conversations[0].messages == [
        Message("user", "Hi"),  # weight only means something on assistant turns
        Message("assistant", "Hello", weight=0),
        Message("user", "Bye"),
        Message("assistant", "Goodbye", weight=1),
    ]
    assert conversations[0].kind == "chat"
    bad = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "weight": 0.5}]}
    _, report, path = load_one(tmp_path, bad)
    assert report.problems == [f"{path}:1: malformed field: messages[1].weight must be 0 or 1"]


def test_reasoning_content_becomes_a_leading_think_block(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "Capital of France?", "reasoning_content": "ignored on user turns"},
            {"role": "assistant", "content": "Paris.", "reasoning_content": "  France's capital is Paris.  "},
        ]
    }
    conversations, _, _ = load_one(tmp_path, row)
    assert conversations[0].messages == [
        Message("user", "Capital of France?"),
        Message("assistant", "<think>\nFrance's capital is Paris.\n</think>\n\nParis."),
    ]
    stripped, _, _ = load_one(tmp_path, row, keep_thinking=False)
    assert stripped[0].messages[1] == Message("assistant", "Paris.")


THINKING_ROWS = [
    {
        "messages": [
            {"role": "user", "content": "Keep <think>this</think> user text"},
            {"role": "assistant", "content": "<think>\nstep one\n</think>\n\nFour."},
            {"role": "user", "content": "And 3 + 3?"},
            {"role": "assistant", "content": "<think>a</think>Six, <think>b</think> surely."},
        ]
    },
    {
        "prompt": "Q",
        "chosen": "<think>good reasoning</think>\n\nRight.",
        "rejected": "<think>bad reasoning</think> Wrong.",
    },
    {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>only thinking</think>"}]},
]


def test_keep_thinking_false_strips_think_blocks_from_answers(tmp_path):
    path = write_jsonl(tmp_path / "think.jsonl", THINKING_ROWS)
    conversations, report = load_conversations([str(path)], keep_thinking=False)
    chat, pair = conversations
    assert [m.content for m in chat.messages] == [
        "Keep <think>this</think> user text",
        "Four.",
        "And 3 + 3?",
        "Six, surely.",
    ]
    assert pair.chosen == Message("assistant", "Right.")
    assert pair.rejected == Message("assistant", "Wrong.")
    # an answer that was nothing but thinking is empty once stripped
    assert report.problems == [f"{path}:3: empty answer: message 2 (assistant) is empty"]


def test_keep_thinking_true_keeps_think_blocks(tmp_path):
    path = write_jsonl(tmp_path / "think.jsonl", THINKING_ROWS)
    conversations, report = load_conversations([str(path)], keep_thinking=True)
    chat, pair, only = conversations
    assert [m.content for m in chat.messages] == [m["content"] for m in THINKING_ROWS[0]["messages"]]
    assert pair.chosen.content == "<think>good reasoning</think>\n\nRight."
    assert pair.rejected.content == "<think>bad reasoning</think> Wrong."
    assert only.messages[1].content == "<think>only thinking</think>"
    assert report.problems == []


def test_strip_thinking_only_touches_assistant_messages():
    assert strip_thinking(None) is None
    user = Message("user", "<think>x</think>y")
    assert strip_thinking(user) is user
    assert strip_thinking(Message("assistant", "<think>\nmulti\nline\n</think>  \n answer")) == Message(
        "assistant", "answer"
    )
    weighted = Message("assistant", "<think>x</think>y", weight=0)
    assert strip_thinking(weighted) == Message("assistant", "y", weight=0)


# ---------------------------------------------------------------------------------------------------- masks

TWO_TURNS = [("user", "Hi"), ("assistant", "Hello!"), ("user", "Capital of France?"), ("assistant", "Paris.")]


def chat(turns: list[tuple[str, str]], weights: dict[int, float] | None = None, **kwargs: Any) -> Conversation:
    weights = weights or {}
    return Conversation([Message(r, c, weight=weights.get(i)) for i, (r, c) in enumerate(turns)], **kwargs)


def two_turn_pieces(first: bool, second: bool, prompt: bool = False) -> list[tuple[str, bool]]:
    return [
        (DEFAULT_SYSTEM, prompt),
        ("<|im_start|>user\nHi<|im_end|>\n", prompt),
        ("<|im_start|>assistant\n", prompt),
        ("Hello!<|im_end|>\n", first),
        ("<|im_start|>user\nCapital of France?<|im_end|>\n", prompt),
        ("<|im_start|>assistant\n", prompt),
        ("Paris.<|im_end|>\n", second),
    ]


@pytest.mark.parametrize(
    ("options", "weights", "pieces"),
    [
        (MaskOptions(), None, two_turn_pieces(True, True)),
        (MaskOptions(mask_history=True), None, two_turn_pieces(False, True)),
        (MaskOptions(train_on_prompt=True), None, two_turn_pieces(True, True, prompt=True)),
        (MaskOptions(), {1: 0}, two_turn_pieces(False, True)),
        (MaskOptions(), {3: 0}, two_turn_pieces(True, False)),
        (MaskOptions(), {1: 1, 3: 1}, two_turn_pieces(True, True)),
        (MaskOptions(train_on_prompt=True), {1: 0, 3: 0}, two_turn_pieces(True, True, prompt=True)),
    ],
    ids=["default", "mask_history", "train_on_prompt", "weight0-first", "weight0-last", "weight1", "prompt-weight0"],
)
def test_chat_masks(tokenizer, options, weights, pieces):
    sample = render_sample(tokenizer, chat(TWO_TURNS, weights), 512, options)
    ids, labels = expected_from_pieces(tokenizer, pieces)
    assert sample.input_ids == ids
    assert sample.labels == labels
    assert sample.kind == "chat" and sample.rejected is None and sample.label is None


def test_all_weight_zero_conversation_is_a_problem_row(tokenizer):
    conversation = chat(TWO_TURNS, {1: 0, 3: 0}, source="w.jsonl:7", dataset="w")
    with pytest.raises(RowError) as info:
        render_sample(tokenizer, conversation, 512)
    assert info.value.reason == "all labels masked"
    good = chat(TWO_TURNS, source="w.jsonl:8", dataset="w")
    report = DataReport(total=2)
    samples = prepare_samples([conversation, good], tokenizer, 512, report)
    assert [s.source for s in samples] == ["w.jsonl:8"]
    assert report.problems == ["w.jsonl:7: all labels masked: no assistant turn is supervised (all have weight 0)"]
    assert report.dropped == {"all labels masked": 1} and report.kept == 1 and report.balanced


def test_preference_rendering_supervises_only_the_answer(tokenizer):
    pair = Conversation(
        [Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "Capital of France?")],
        chosen=Message("assistant", "Paris."),
        rejected=Message("assistant", "Rome."),
        source="p.jsonl:1",
        dataset="p",
    )
    sample = render_sample(tokenizer, pair, 512)
    ids, labels = expected_from_pieces(tokenizer, two_turn_pieces(False, True))
    assert (sample.input_ids, sample.labels) == (ids, labels)
    assert sample.kind == "preference" and sample.source == "p.jsonl:1" and sample.dataset == "p"
    rejected_pieces = [*two_turn_pieces(False, False)[:-1], ("Rome.<|im_end|>\n", True)]
    ids, labels = expected_from_pieces(tokenizer, rejected_pieces)
    assert (sample.rejected.input_ids, sample.rejected.labels) == (ids, labels)
    assert sample.rejected.kind == "preference" and sample.rejected.rejected is None
    # train_on_prompt still supervises every token of both answers' sequences
    everything = render_sample(tokenizer, pair, 512, MaskOptions(train_on_prompt=True))
    assert everything.labels == everything.input_ids
    assert everything.rejected.labels == everything.rejected.input_ids


def test_preference_truncation_of_the_rejected_side_marks_the_pair(tokenizer):
    pair = Conversation(
        [Message("user", "Q")],
        chosen=Message("assistant", "A."),
        rejected=Message("assistant", "Once upon a time, in a quiet village near the mountains, there lived a baker."),
    )
    chosen_length = len(render_sample(tokenizer, pair, 512).input_ids)
    sample = render_sample(tokenizer, pair, chosen_length)
    assert len(sample.input_ids) == chosen_length
    assert len(sample.rejected.input_ids) == chosen_length
    assert sample.truncated is True and sample.rejected.truncated is True


def test_kto_sample_carries_its_label(tokenizer):
    conversation = chat(TWO_TURNS[:2], label=False)
    sample = render_sample(tokenizer, conversation, 512)
    ids, labels = expected_from_pieces(tokenizer, two_turn_pieces(True, False)[:4])
    assert (sample.input_ids, sample.labels) == (ids, labels)
    assert (sample.kind, sample.label) == ("kto", False)


def test_raw_text_supervises_every_token_and_ends_with_eos(tokenizer):
    text = "The quick brown fox jumps over the lazy dog."
    sample = render_sample(tokenizer, Conversation([], text=text, source="t.txt:3", dataset="t"), 512)
    expected = encode(tokenizer, text) + [tokenizer.eos_token_id]
    assert sample.input_ids == expected
    assert sample.labels == expected
    assert sample.input_ids[-1] == tokenizer.eos_token_id == 2
    assert (sample.kind, sample.source, sample.dataset, sample.truncated) == ("text", "t.txt:3", "t", False)
    cut = render_sample(tokenizer, Conversation([], text=text), 4)
    assert cut.input_ids == cut.labels == expected[:4]
    assert cut.truncated is True


def test_raw_text_file_renders_through_the_pipeline(tokenizer, tmp_path):
    path = write_text(
        tmp_path / "doc.txt", "Water boils at one hundred degrees Celsius.\nThe weather today is sunny.\n"
    )
    conversations, report = load_conversations([str(path)])
    samples = prepare_samples(conversations, tokenizer, 512, report)
    assert [s.kind for s in samples] == ["text", "text"]
    assert samples[1].input_ids == encode(tokenizer, "The weather today is sunny.") + [tokenizer.eos_token_id]
    assert all(s.labels == s.input_ids for s in samples)
    assert report.kept == report.total == 2 and report.balanced
    assert [s.source for s in samples] == [f"{path}:1", f"{path}:2"]
