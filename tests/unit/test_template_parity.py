"""Chat templates: render_conversation equals apply_chat_template token for token and supervises only assistant turns.

Covered: Qwen3-, Llama-3- and Mistral-style templates on tokenizers holding their control tokens, the four bundled
templates on such tokenizers and on one where their markers are plain text, templates that are not prefix-stable,
and the choice between a bundled template and the tokenizer's own (`ensure_chat_template`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from fixtures.chat_templates import (
    LLAMA3_STYLE_TEMPLATE,
    MISTRAL_STYLE_TEMPLATE,
    MISTRAL_V03_TEMPLATE,
    QWEN3_STYLE_TEMPLATE,
    QWEN3_TEMPLATE,
    family_tokenizer,
)
from tuneforge.data import IGNORE_INDEX, Conversation, Message, RowError, render_conversation
from tuneforge.data.render import RenderedSample
from tuneforge.data.templates import TEMPLATES, bundled_template, ensure_chat_template
from tuneforge.errors import UserError

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "Local time", "parameters": {"type": "object", "properties": {}}},
}


def weather(city: str) -> dict[str, Any]:
    return {"name": "get_weather", "arguments": {"city": city}}


CONVERSATIONS = {
    "multi_turn": Conversation(
        [
            Message("user", "What is the capital of France?"),
            Message("assistant", "The capital of France is Paris."),
            Message("user", "你好！"),
            Message("assistant", "你好，世界！今天天气很好。"),
            Message("user", "How many legs does a spider have?"),
            Message("assistant", "A spider has eight legs."),
        ]
    ),
    "system": Conversation(
        [
            Message("system", "Please answer the question briefly and politely."),
            Message("user", "At what temperature does water boil?"),
            Message("assistant", "Water boils at one hundred degrees Celsius."),
            Message("user", "And in Fahrenheit?"),
            Message("assistant", "At 212 degrees Fahrenheit."),
        ]
    ),
    "tools": Conversation(
        [
            Message("system", "Be terse."),
            Message("user", "What is the weather in Paris?"),
            Message("assistant", "", tool_calls=[weather("Paris")]),
            Message("tool", '{"temp": 21, "sky": "sunny"}'),
            Message("assistant", "It is 21 degrees and sunny in Paris."),
            Message("user", "And in Berlin and Rome?"),
            Message("assistant", "Let me check both.", tool_calls=[weather("Berlin"), weather("Rome")]),
            Message("tool", '{"temp": 15}'),
            Message("tool", '{"temp": 25}'),
            Message("assistant", "Berlin has 15 degrees, Rome 25."),
        ],
        tools=[WEATHER_TOOL, TIME_TOOL],
    ),
    "thinking": Conversation(
        [
            Message("user", "What is 2 + 2?"),
            Message("assistant", "<think>\nThe user wants a sum: 2 + 2 = 4.\n</think>\n\nThe answer is 4."),
            Message("user", "And 3 * 7?"),
            Message("assistant", "<think>\nMultiply: 3 * 7 = 21.\n</think>\n\n3 * 7 = 21."),
        ]
    ),
}


@dataclass(frozen=True)
class Case:
    """A template on a tokenizer, and how the template writes an assistant turn."""

    family: str  # which control tokens the tokenizer has (fixtures.chat_templates.FAMILY_TOKENS)
    template: str
    end: str  # what closes an assistant turn
    call: str  # one tool call, formatted with name= and arguments= (JSON)
    lead: str = ""  # what comes between the generation prompt and the assistant's text
    exact: bool = True  # markers are tokens: a supervised run is exactly lead + text + end


CHATML_CALL = '<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'
LLAMA3_CALL = '{{"name": "{name}", "parameters": {arguments}}}'
MISTRAL_CALL = '{{"name": "{name}", "arguments": {arguments}}}'
GEMMA_CALL = '```tool_call\n{{"name": "{name}", "arguments": {arguments}}}\n```'

CASES = {
    "qwen3-style": Case("qwen3", QWEN3_STYLE_TEMPLATE, "<|im_end|>\n", CHATML_CALL),
    "llama3-style": Case("llama3", LLAMA3_STYLE_TEMPLATE, "<|eot_id|>", LLAMA3_CALL),
    "mistral-style": Case("mistral", MISTRAL_STYLE_TEMPLATE, "</s>", MISTRAL_CALL, lead=" "),
    "chatml": Case("qwen3", bundled_template("chatml"), "<|im_end|>\n", CHATML_CALL),
    "llama3": Case("llama3", bundled_template("llama3"), "<|eot_id|>", LLAMA3_CALL),
    "mistral": Case("mistral", bundled_template("mistral"), "</s>", MISTRAL_CALL, lead=" "),
    "gemma": Case("gemma", bundled_template("gemma"), "<end_of_turn>\n", GEMMA_CALL),
    # bundled templates on the plain tiny tokenizer, where only <|im_start|> and <|im_end|> (eos) are tokens; the other
    # markers are text, which BPE may merge with the text next to them, so those runs are only checked for content
    "chatml-text": Case("chatml", bundled_template("chatml"), "<|im_end|>\n", CHATML_CALL),
    "llama3-text": Case("chatml", bundled_template("llama3"), "<|eot_id|>", LLAMA3_CALL, exact=False),
    "mistral-text": Case("chatml", bundled_template("mistral"), "<|im_end|>", MISTRAL_CALL, lead=" ", exact=False),
    "gemma-text": Case("chatml", bundled_template("gemma"), "<end_of_turn>\n", GEMMA_CALL, exact=False),
}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return {
        name: family_tokenizer(tmp_path_factory.mktemp(name), case.family, case.template)
        for name, case in CASES.items()
    }


def template_ids(tokenizer: Any, conversation: Conversation) -> list[int]:
    """`apply_chat_template(..., tokenize=True)` ids, whether it returns a list or a BatchEncoding."""
    out = tokenizer.apply_chat_template(conversation.to_template(), tools=conversation.tools, tokenize=True)
    return list(out["input_ids"] if isinstance(out, Mapping) else out)


def supervised_runs(tokenizer: Any, sample: RenderedSample) -> list[str]:
    """The decoded text of each contiguous run of supervised tokens."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in sample.labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("conversation_name", list(CONVERSATIONS))
@pytest.mark.parametrize("case_name", list(CASES))
def test_render_equals_apply_chat_template(tokenizers, case_name: str, conversation_name: str):
    tokenizer, conversation = tokenizers[case_name], CONVERSATIONS[conversation_name]
    sample = render_conversation(tokenizer, conversation, cutoff_len=4096)
    assert sample.input_ids == template_ids(tokenizer, conversation)
    assert len(sample.labels) == len(sample.input_ids) and not sample.truncated


@pytest.mark.parametrize("conversation_name", list(CONVERSATIONS))
@pytest.mark.parametrize("case_name", list(CASES))
def test_supervised_tokens_are_the_assistant_turns(tokenizers, case_name: str, conversation_name: str):
    case, tokenizer, conversation = CASES[case_name], tokenizers[case_name], CONVERSATIONS[conversation_name]
    runs = supervised_runs(tokenizer, render_conversation(tokenizer, conversation, cutoff_len=4096))
    answers = [m for m in conversation.messages if m.role == "assistant"]
    assert len(runs) == len(answers)
    supervised = "".join(runs)
    for message in conversation.messages:
        if message.role != "assistant":
            assert message.content not in supervised
    for run, answer in zip(runs, answers, strict=True):
        assert answer.content in run
        assert case.end in run
        for call in answer.tool_calls or []:
            arguments = json.dumps(call["arguments"], ensure_ascii=False)
            assert case.call.format(name=call["name"], arguments=arguments) in run
        if case.exact:
            assert run.endswith(case.end)
            if not answer.tool_calls:
                assert run == case.lead + answer.content + case.end


@pytest.mark.parametrize("conversation_name", list(CONVERSATIONS))
@pytest.mark.parametrize("name", TEMPLATES.names())
def test_bundled_templates_are_prefix_stable(tokenizers, name: str, conversation_name: str):
    tokenizer, conversation = tokenizers[name], CONVERSATIONS[conversation_name]
    messages, tools = conversation.to_template(), conversation.tools

    def render(upto: int, generation: bool = False) -> str:
        return tokenizer.apply_chat_template(
            messages[:upto], tools=tools, tokenize=False, add_generation_prompt=generation
        )

    full = render(len(messages))
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            assert full.startswith(render(index, generation=True))
            assert full.startswith(render(index + 1))


@pytest.mark.parametrize(
    ("name", "prompt_end"),
    [
        ("chatml", "<|im_end|>\n<|im_start|>assistant\n"),
        ("llama3", "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("mistral", "Hi[/INST]"),
        ("gemma", "<end_of_turn>\n<start_of_turn>model\n"),
    ],
)
def test_bundled_generation_prompt(tokenizers, name: str, prompt_end: str):
    tokenizer = tokenizers[name]
    messages = [{"role": "user", "content": "Hi"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith(prompt_end)
    assert prompt.startswith(tokenizer.apply_chat_template(messages, tokenize=False))


def test_gemma_folds_the_system_prompt_into_the_first_user_turn(tokenizers):
    tokenizer = tokenizers["gemma"]
    text = tokenizer.decode(render_conversation(tokenizer, CONVERSATIONS["system"], 4096).input_ids)
    assert text.startswith(
        "<bos><start_of_turn>user\nPlease answer the question briefly and politely.\n\n"
        "At what temperature does water boil?<end_of_turn>\n"
        "<start_of_turn>model\nWater boils at one hundred degrees Celsius.<end_of_turn>\n"
    )
    assert "system" not in text and "assistant" not in text


def test_qwen3_style_keeps_thinking_in_every_turn(tokenizers):
    tokenizer = tokenizers["qwen3-style"]
    runs = supervised_runs(tokenizer, render_conversation(tokenizer, CONVERSATIONS["thinking"], 4096))
    assert [run.count("<think>") for run in runs] == [1, 1]


@pytest.mark.parametrize(
    ("family", "template", "conversation_name"),
    [("qwen3", QWEN3_TEMPLATE, "thinking"), ("mistral", MISTRAL_V03_TEMPLATE, "system")],
    ids=["qwen3-drops-old-thinking", "mistral-v03-moves-system"],
)
def test_template_that_is_not_prefix_stable_is_rejected(tmp_path, family: str, template: str, conversation_name):
    tokenizer = family_tokenizer(tmp_path, family, template)
    conversation = CONVERSATIONS[conversation_name]
    single_turn = Conversation([m for m in conversation.messages if m.role != "system"][:2])
    assert render_conversation(tokenizer, single_turn, 4096).input_ids == template_ids(tokenizer, single_turn)
    with pytest.raises(RowError) as info:
        render_conversation(tokenizer, conversation, 4096)
    assert info.value.reason == "template not prefix-stable"


# ---------------------------------------------------------------------------------------------------- choice


def test_bundled_templates_take_tools_natively():
    assert TEMPLATES.names() == ["chatml", "gemma", "llama3", "mistral"]
    for name in TEMPLATES.names():
        text = bundled_template(name)
        assert "tool_calls" in text and "tools" in text
        # Mistral prompts end with [/INST] or [/TOOL_RESULTS], which already ask for the answer
        assert ("add_generation_prompt" in text) == (name != "mistral")


def test_unknown_template_name_suggests_the_closest(tmp_path):
    with pytest.raises(UserError, match=r"unknown chat template 'lama3'\. Did you mean 'llama3'\?") as info:
        bundled_template("lama3")
    assert "Known: chatml, gemma, llama3, mistral." in str(info.value)
    tokenizer = family_tokenizer(tmp_path, "chatml", QWEN3_STYLE_TEMPLATE)
    with pytest.raises(UserError, match="Did you mean 'gemma'"):
        ensure_chat_template(tokenizer, "gema")
    assert tokenizer.chat_template == QWEN3_STYLE_TEMPLATE


def test_explicit_template_wins_over_the_tokenizers_own(tmp_path):
    tokenizer = family_tokenizer(tmp_path, "chatml", QWEN3_STYLE_TEMPLATE)
    description = ensure_chat_template(tokenizer, "llama3")
    assert "llama3" in description
    assert tokenizer.chat_template == bundled_template("llama3")


def test_tokenizer_template_is_kept_without_a_name(tmp_path):
    tokenizer = family_tokenizer(tmp_path, "chatml", QWEN3_STYLE_TEMPLATE)
    assert "own" in ensure_chat_template(tokenizer, None)
    assert tokenizer.chat_template == QWEN3_STYLE_TEMPLATE


def test_tokenizer_without_template_needs_a_name(tmp_path):
    tokenizer = family_tokenizer(tmp_path, "chatml", QWEN3_STYLE_TEMPLATE)
    tokenizer.chat_template = None
    with pytest.raises(UserError, match="no chat template; set data.template") as info:
        ensure_chat_template(tokenizer, None)
    assert all(name in str(info.value) for name in TEMPLATES.names())
    ensure_chat_template(tokenizer, "chatml")
    sample = render_conversation(tokenizer, CONVERSATIONS["tools"], 4096)
    assert sample.input_ids == template_ids(tokenizer, CONVERSATIONS["tools"])
