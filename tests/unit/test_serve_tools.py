"""Tool calling through the official `openai` client: tools and tool messages reach the prompt as in training, and
an answer ending in tool calls comes back as `tool_calls` (streamed or not)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from serve_live import assert_openai_error, live_server, request

from fixtures.tiny_models import build_tokenizer
from tuneforge.data.messages import Conversation, Message
from tuneforge.data.render import conversation_text
from tuneforge.data.templates import bundled_template
from tuneforge.serve.app import create_app
from tuneforge.serve.catalog import Catalog
from tuneforge.serve.engines.base import Engine, Job, Tokens
from tuneforge.serve.scheduler import Scheduler

openai = pytest.importorskip("openai")

ANSWER = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


class ScriptEngine(Engine):
    """Answers every prompt with `answer` (one token per character) and keeps each prompt's rendered text."""

    context_length = 4096

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.answer, self.prompts = tokenizer, ANSWER, []

    def encode_chat(self, conversation: Conversation) -> list[int]:
        self.prompts.append(conversation_text(self.tokenizer, conversation, generation=True))
        return [0]

    def encode_text(self, text: str) -> list[int]:
        return [0]

    def decode(self, tokens: list[int]) -> str:
        return "".join(map(chr, tokens))

    def generate_tokens(self, jobs: list[Job]) -> list[list[Tokens]]:
        return [[([ord(c) for c in self.answer][: job.max_tokens], True)] * job.n for job in jobs]

    def stream_tokens(self, job: Job, take: Callable[[int], bool]) -> bool:
        return all(take(ord(c)) for c in self.answer)


@dataclass
class Live:
    url: str
    engine: ScriptEngine
    client: Any


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tokenizer = build_tokenizer(tmp_path_factory.mktemp("tok"))
    tokenizer.chat_template = bundled_template("chatml")
    engine = ScriptEngine(tokenizer)
    scheduler = Scheduler(engine, max_batch_size=2, batch_wait_s=0.0, max_queue=4)
    with live_server(create_app(engine, Catalog("agent"), scheduler, default_max_tokens=512)) as url:
        yield Live(url, engine, openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30))


@pytest.fixture(autouse=True)
def _scripted(live: Live) -> Iterator[None]:
    live.engine.answer = ANSWER
    yield


def test_an_answer_ending_in_a_call_comes_back_as_tool_calls(live: Live) -> None:
    reply = live.client.chat.completions.create(model="agent", messages=ASK, tools=[WEATHER])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    tools = Conversation([Message("user", ASK[0]["content"])], tools=[WEATHER])
    assert live.engine.prompts[-1] == conversation_text(live.engine.tokenizer, tools, generation=True)
    assert '"name": "get_weather"' in live.engine.prompts[-1]  # the model sees the tool it may call


def test_the_call_and_its_result_are_rendered_as_in_training(live: Live) -> None:
    first = live.client.chat.completions.create(model="agent", messages=ASK, tools=[WEATHER])
    messages = [*ASK, first.choices[0].message.model_dump(exclude_none=True)]  # what an agent loop sends back
    messages.append({"role": "tool", "tool_call_id": first.choices[0].message.tool_calls[0].id, "content": "sunny"})
    live.engine.answer = "It is sunny in Paris."
    final = live.client.chat.completions.create(model="agent", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == "It is sunny in Paris." and final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.tool_calls is None
    trained = Conversation(
        [
            Message("user", ASK[0]["content"]),
            Message(
                "assistant", "Let me check.", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]
            ),
            Message("tool", "sunny"),
        ],
        tools=[WEATHER],
    )
    assert live.engine.prompts[-1] == conversation_text(live.engine.tokenizer, trained, generation=True)


def test_streamed_tool_calls_arrive_as_deltas_the_client_assembles(live: Live) -> None:
    stream = live.client.chat.completions.create(model="agent", messages=ASK, tools=[WEATHER], stream=True)
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert content == "Let me check."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_without_tools_or_with_tool_choice_none_the_text_is_the_answer(live: Live) -> None:
    for options in ({}, {"tools": [WEATHER], "tool_choice": "none"}):
        reply = live.client.chat.completions.create(model="agent", messages=ASK, **options)
        assert reply.choices[0].message.content == ANSWER and reply.choices[0].finish_reason == "stop"
        assert reply.choices[0].message.tool_calls is None
        assert "get_weather" not in live.engine.prompts[-1]  # "none": the tools are left out of the prompt


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"tool_choice": "required"}, "tool_choice", "the model decides whether to call a tool"),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice", '"auto"'),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools", "function name"),
        (
            {
                "messages": [
                    *ASK,
                    {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]},
                ]
            },
            "messages.1.tool_calls.0",
            "arguments are not JSON",
        ),
        (
            {"messages": [{"role": "user", "content": "hi", "tool_calls": [{"function": {"name": "f"}}]}]},
            "messages.0.tool_calls",
            "only assistant messages carry tool_calls",
        ),
    ],
)
def test_malformed_tool_requests_are_400s_naming_the_field(live: Live, body: dict, param: str, says: str) -> None:
    reply = request(live.url, "POST", "/v1/chat/completions", {"model": "agent", "messages": ASK, **body})
    assert says in assert_openai_error(reply, 400, param=param)
