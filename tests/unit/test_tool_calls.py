"""Tool calls read back from an answer in the form each chat template trains them, for every bundled template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fixtures.shared_data import LLAMAFACTORY, needs_llamafactory
from fixtures.tiny_models import build_tokenizer
from tuneforge.data.messages import Conversation, Message
from tuneforge.data.pipeline import load_conversations
from tuneforge.data.render import conversation_text
from tuneforge.data.templates import TEMPLATES, bundled_template
from tuneforge.data.tool_calls import read_call_pieces, split_tool_calls

CALLS = [{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}, {"name": "now", "arguments": {}}]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def _answer(tokenizer: Any, content: str, calls: list[dict[str, Any]], earlier: Conversation | None = None) -> str:
    """The text of an assistant turn after `earlier` (a user question by default) as a model trained on it writes
    it, up to its end-of-turn token."""
    before = earlier or Conversation([Message("user", "weather?")])
    head = conversation_text(tokenizer, before, generation=True)
    marked = conversation_text(
        tokenizer, Conversation([*before.messages, Message("assistant", "MARK")], tools=before.tools)
    )
    end_of_turn = marked[marked.index("MARK") + len("MARK") :]
    turn = conversation_text(
        tokenizer,
        Conversation([*before.messages, Message("assistant", content, tool_calls=calls)], tools=before.tools),
    )
    assert turn.startswith(head) and turn.endswith(end_of_turn)
    return turn[len(head) : len(turn) - len(end_of_turn)]


@pytest.mark.parametrize("template", TEMPLATES.names())
def test_calls_written_as_trained_read_back_whole(tokenizer: Any, template: str) -> None:
    tokenizer.chat_template = bundled_template(template)
    pieces = read_call_pieces(tokenizer)
    assert pieces is not None
    assert split_tool_calls(_answer(tokenizer, "Let me look.", CALLS), pieces) == ("Let me look.", CALLS)
    assert split_tool_calls(_answer(tokenizer, "", CALLS[:1]), pieces) == ("", CALLS[:1])
    plain = _answer(tokenizer, "It is sunny.", [])
    assert split_tool_calls(plain, pieces) == (plain, [])


def test_a_template_without_tool_support_reads_the_tool_call_blocks_it_trains(tokenizer: Any) -> None:
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    pieces = read_call_pieces(tokenizer)
    assert pieces is not None and pieces.prefix == '<tool_call>\n{"name": '
    answer = 'Sure.\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    assert split_tool_calls(answer, pieces) == ("Sure.", CALLS[1:])


def test_spacing_a_cut_suffix_and_text_after_the_calls(tokenizer: Any) -> None:
    tokenizer.chat_template = bundled_template("chatml")
    pieces = read_call_pieces(tokenizer)
    squeezed = '<tool_call>{"name":"now","arguments":{}}</tool_call>  <tool_call> {"name" : "now" , "arguments": {}}'
    assert split_tool_calls(squeezed, pieces) == ("", [CALLS[1], CALLS[1]])  # the last one cut before its suffix
    trailing = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>\nand then I said more'
    assert split_tool_calls(trailing, pieces) == (trailing, [])
    for broken in (
        '<tool_call>\n{"name": "now", "arguments": [1]}\n</tool_call>',  # arguments must be an object
        '<tool_call>\n{"name": "", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "now", "arguments": {"a": </tool_call>',
        "I would use <tool_call> here",
    ):
        assert split_tool_calls(broken, pieces) == (broken, [])
    assert split_tool_calls("anything", None) == ("anything", [])


def test_no_chat_template_means_no_calls_are_read(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(tmp_path)
    tokenizer.chat_template = None
    assert read_call_pieces(tokenizer) is None


@needs_llamafactory
@pytest.mark.parametrize("template", TEMPLATES.names())
def test_every_call_of_llamafactorys_glaive_demo_reads_back_as_trained(tokenizer: Any, template: str) -> None:
    tokenizer.chat_template = bundled_template(template)
    pieces = read_call_pieces(tokenizer)
    conversations, _ = load_conversations([str(LLAMAFACTORY / "glaive_toolcall_en_demo.json")], dedup="none")
    read_back = []
    for conversation in conversations:
        for index, message in enumerate(conversation.messages):
            if message.tool_calls:
                earlier = Conversation(conversation.messages[:index], tools=conversation.tools)
                answer = _answer(tokenizer, message.content, message.tool_calls, earlier)
                read_back.append(split_tool_calls(answer, pieces) == (message.content.strip(), message.tool_calls))
    assert len(read_back) == 211 and all(read_back)
