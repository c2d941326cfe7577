"""Hostile requests against the app on a real (tiny) model: each gets a 4xx in OpenAI's error shape, never a 500 or a
hang, and the server answers as before afterwards."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serve_live import Reply, assert_openai_error, live_server, read_reply, request

from tuneforge.serve.app import create_app
from tuneforge.serve.guards import DEFAULT_MAX_BODY_BYTES
from tuneforge.serve.loading import open_engine
from tuneforge.serve.plan import plan_serving
from tuneforge.serve.scheduler import Scheduler

MAX_BATCH, MAX_QUEUE = 4, 8
CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
ASK = {"model": "tiny", "messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 6}
PROMPT = {"model": "tiny", "prompt": "The sky is", "max_tokens": 6}


@dataclass(frozen=True)
class Case:
    """A hostile request and the answer it must get: `status`, and `param` when not None."""

    why: str
    path: str
    body: dict[str, Any] | bytes | None
    status: int
    param: str | None = None
    method: str = "POST"
    headers: tuple[tuple[str, str | None], ...] = (("Content-Type", "application/json"),)


def _chat(**fields: Any) -> dict[str, Any]:
    return {**ASK, **fields}


def _text(**fields: Any) -> dict[str, Any]:
    return {**PROMPT, **fields}


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


CASES = [
    Case("truncated JSON", CHAT, b'{"model": "tiny", "messages": [', 400),
    Case("JSON array", CHAT, b"[1, 2]", 400),
    Case("JSON string", CHAT, b'"hello"', 400),
    Case("bytes that are no UTF-8", CHAT, b'{"model": "\xff\xfe"}', 400),
    Case("NaN temperature", TEXT, b'{"model": "tiny", "prompt": "a", "temperature": NaN}', 400, "temperature"),
    Case("infinite max_tokens", TEXT, b'{"model": "tiny", "prompt": "a", "max_tokens": Infinity}', 400, "max_tokens"),
    Case(
        "nested 100000 deep",
        TEXT,
        b'{"model": "tiny", "prompt": "a", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}",
        400,
    ),
    Case(
        "nested 5000 deep", TEXT, b'{"model": "tiny", "prompt": "a", "x": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001, 400
    ),
    Case("no body", CHAT, None, 400),
    Case("no Content-Type", CHAT, json.dumps(ASK).encode(), 400, headers=(("Content-Type", None),)),
    Case("text/plain body", CHAT, json.dumps(ASK).encode(), 400, headers=(("Content-Type", "text/plain"),)),
    Case("messages as a string", CHAT, _chat(messages="hi"), 400, "messages"),
    Case("no messages", CHAT, _chat(messages=[]), 400, "messages"),
    Case("unknown role", CHAT, _chat(messages=[{"role": "hacker", "content": "x"}]), 400),
    Case("content as a number", CHAT, _chat(messages=[{"role": "user", "content": 5}]), 400),
    Case("no model", CHAT, {"messages": ASK["messages"]}, 400, "model"),
    Case("n as text", CHAT, _chat(n="many"), 400, "n"),
    Case("temperature as text", CHAT, _chat(temperature="hot"), 400, "temperature"),
    Case("prompt as a number", TEXT, _text(prompt=5), 400, "prompt"),
    Case("prompt as token ids", TEXT, _text(prompt=[1, 2, 3]), 400, "prompt"),
    Case("prompts as lists of token ids", TEXT, _text(prompt=[[1, 2], [3]]), 400, "prompt"),
    Case("chat logprobs", CHAT, _chat(logprobs=True, top_logprobs=3), 400, "logprobs"),
    Case("top_logprobs alone", CHAT, _chat(top_logprobs=2), 400, "top_logprobs"),
    Case("completion logprobs", TEXT, _text(logprobs=5), 400, "logprobs"),
    Case("echo", TEXT, _text(echo=True), 400, "echo"),
    Case("tool_choice required", CHAT, _chat(tool_choice="required"), 400, "tool_choice"),
    Case("tools as a string", CHAT, _chat(tools="all of them"), 400, "tools"),
    Case("huge n", CHAT, _chat(n=10**9), 400, "n"),
    Case("n beyond the batch", CHAT, _chat(n=MAX_BATCH + 1), 400, "n"),
    Case("n of zero", CHAT, _chat(n=0), 400, "n"),
    Case("negative n", TEXT, _text(n=-1), 400, "n"),
    Case("huge max_tokens", CHAT, _chat(max_tokens=10**12), 400, "max_tokens"),
    Case("max_tokens past the context", TEXT, _text(max_tokens=600), 400, "max_tokens"),
    Case("zero max_tokens", TEXT, _text(max_tokens=0), 400, "max_tokens"),
    Case("negative max_tokens", CHAT, _chat(max_tokens=-5), 400, "max_tokens"),
    Case("negative max_completion_tokens", CHAT, _chat(max_completion_tokens=-1), 400, "max_completion_tokens"),
    Case("negative temperature", CHAT, _chat(temperature=-1), 400, "temperature"),
    Case("top_p of zero", CHAT, _chat(top_p=0), 400, "top_p"),
    Case("seed of 2**64", CHAT, _chat(seed=2**64), 400, "seed"),
    Case("seed below -2**63", TEXT, _text(seed=-(2**63) - 1), 400, "seed"),
    Case("seed of 10**30", TEXT, _text(seed=10**30, temperature=1.0), 400, "seed"),
    Case("seed as text", CHAT, _chat(seed="abc"), 400, "seed"),
    Case("fractional seed", CHAT, _chat(seed=1.5), 400, "seed"),
    Case("seed of 5000 digits", TEXT, b'{"model": "tiny", "prompt": "a", "seed": ' + b"9" * 5000 + b"}", 400),
    Case("lone surrogate in a prompt", TEXT, _raw('{"model": "tiny", "prompt": "\\ud800"}'), 400, "prompt"),
    Case("lone surrogate in one of the prompts", TEXT, _text(prompt=["ok", "a\udc00"]), 400, "prompt"),
    Case("lone surrogate in a message", CHAT, _chat(messages=[{"role": "user", "content": "a\udfffb"}]), 400),
    Case(
        "lone surrogate in a content part",
        CHAT,
        _chat(messages=[{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]),
        400,
    ),
    Case("lone surrogate in a stop", TEXT, _text(stop=["\ud800"]), 400, "stop"),
    Case("lone surrogate as the model", TEXT, _text(model="\ud800"), 404, "model"),
    Case("empty prompt", TEXT, _text(prompt=""), 400, "prompt"),
    Case("no prompts", TEXT, _text(prompt=[]), 400, "prompt"),
    Case("one empty prompt of two", TEXT, _text(prompt=["a", ""]), 400, "prompt"),
    Case("more prompts than the queue holds", TEXT, _text(prompt=["a"] * (MAX_QUEUE + 1)), 400, "prompt"),
    Case("prompts times n beyond the queue", TEXT, _text(prompt=["a"] * 3, n=3), 400, "prompt"),
    Case("prompt past the context", TEXT, _text(prompt="one two three " * 400), 400, "prompt"),
    Case("101 stop strings", TEXT, _text(stop=["x"] * 101), 400, "stop"),
    Case("stream with n=2", CHAT, _chat(stream=True, n=2), 400, "n"),
    Case("stream of two prompts", TEXT, _text(stream=True, prompt=["a", "b"]), 400, "prompt"),
    Case("unknown model", CHAT, _chat(model="gpt-9"), 404, "model"),
    Case("unknown model card", "/v1/models/gpt-9", None, 404, "model", "GET"),
    Case("unknown route", "/v2/everything", None, 404, method="GET"),
    Case("wrong method", TEXT, None, 405, method="GET"),
    Case("generate without a prompt", "/generate", None, 400, "prompt", "GET"),
    Case("generate with max_tokens=-1", "/generate?prompt=hi&max_tokens=-1", None, 400, "max_tokens", "GET"),
    Case(
        "generate with a huge max_tokens",
        "/generate?prompt=hi&max_tokens=99999999999999999999",
        None,
        400,
        method="GET",
    ),
    Case("declared body of a terabyte", CHAT, None, 413, headers=(("Content-Length", str(10**12)),)),
]


@dataclass
class Live:
    url: str
    scheduler: Scheduler


@pytest.fixture(scope="module")
def live(tiny_llama_dir: Path) -> Iterator[Live]:
    engine = open_engine("transformers", plan_serving(str(tiny_llama_dir), "tiny"))
    scheduler = Scheduler(engine, max_batch_size=MAX_BATCH, batch_wait_s=0.0, max_queue=MAX_QUEUE)
    with live_server(create_app(engine, plan_serving(str(tiny_llama_dir), "tiny").catalog(), scheduler)) as url:
        yield Live(url, scheduler)


def _send(live: Live, case: Case) -> Reply:
    headers = dict(case.headers)
    body = case.body
    if isinstance(body, dict):
        body = json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \\udxxx escapes
    if body is None and case.method == "POST" and "Content-Length" not in headers:
        headers["Content-Length"] = "0"
    return request(live.url, case.method, case.path, body, headers, timeout=60)


def _send_chunked_past_the_limit(live: Live) -> Reply:
    """A chunked body (no Content-Length) that goes one chunk past the default limit, then stops sending."""
    connection = http.client.HTTPConnection(live.url.removeprefix("http://"), timeout=60)
    connection.putrequest("POST", TEXT)
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    chunk = 64 * 1024
    for _ in range(DEFAULT_MAX_BODY_BYTES // chunk + 1):
        connection.send(f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n")
    try:
        return read_reply(connection.getresponse())
    finally:
        connection.close()


@pytest.mark.scenario("hostile_requests")
def test_hostile_requests_get_openai_4xx_errors_and_the_server_stays_alive(live: Live) -> None:
    before = request(live.url, "POST", CHAT, ASK).json["choices"][0]["message"]["content"]
    wrong = []
    for case in CASES:
        reply = _send(live, case)
        try:
            assert_openai_error(reply, case.status, param=case.param)
        except AssertionError as err:
            wrong.append(f"{case.why}: {err}")
    try:
        assert_openai_error(_send_chunked_past_the_limit(live), 413, code="request_too_large")
    except AssertionError as err:
        wrong.append(f"chunked body past the limit: {err}")
    assert wrong == [], "\n".join(wrong)
    after = request(live.url, "POST", CHAT, ASK)
    assert after.status == 200 and after.json["choices"][0]["message"]["content"] == before
    text = request(live.url, "POST", TEXT, _text(prompt=["a", "b"], n=2, seed=2**63 - 1, temperature=1.0))
    assert text.status == 200 and len(text.json["choices"]) == 4
    stats = live.scheduler.snapshot()
    assert stats["failed"] == 0 and stats["queued"] == 0 and stats["requests"] == 4


def test_hostile_error_messages_say_what_to_fix(live: Live) -> None:
    cases = {
        "seed": (_text(seed=2**64), "less than or equal to 9223372036854775807"),
        "surrogate": (_text(prompt="\ud800"), "lone surrogate (U+D800 at character 0)"),
        "empty": (_text(prompt=""), "the prompt is empty"),
        "queue": (_text(prompt=["a"] * 9), "split it into requests of at most 8"),
        "batch": (_chat(n=5), "ask for at most 4"),
        "token ids": (_text(prompt=[1, 2]), "token ids are not served as a prompt: send the text"),
        "logprobs": (_chat(logprobs=True), "log probabilities are not served"),
        "echo": (_text(echo=True), "echo is not served"),
    }
    for why, (body, expected) in cases.items():
        message = assert_openai_error(request(live.url, "POST", TEXT if "prompt" in body else CHAT, body), 400)
        assert expected in message, (why, message)
