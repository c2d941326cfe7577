"""The app in-process (uvicorn on loopback) over an echo engine: errors, the 429 queue limit, failures kept local."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from test_serve_scheduler import EchoEngine

from tuneforge.serve.app import create_app
from tuneforge.serve.catalog import Catalog
from tuneforge.serve.scheduler import Scheduler

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

KEY = "k"


@dataclass
class Live:
    url: str
    engine: EchoEngine
    scheduler: Scheduler


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    engine = EchoEngine()
    scheduler = Scheduler(engine, max_batch_size=1, batch_wait_s=0.0, max_queue=2)
    app = create_app(engine, Catalog("echo", ("x",)), scheduler, api_key=KEY, default_max_tokens=16)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield Live(f"http://127.0.0.1:{port}", engine, scheduler)
    server.should_exit = True
    thread.join(30)


def _client(live: Live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=KEY, max_retries=0, timeout=30)


def _chat(live: Live, text: str, **options: object) -> str:
    reply = _client(live).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": text}],
        **options,  # type: ignore[arg-type]
    )
    return reply.choices[0].message.content


def test_a_failing_generation_is_a_500_for_that_request_only(live: Live) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        _chat(live, "boom")
    assert failed.value.body["code"] == "generation_failed" and "boom" in failed.value.body["message"]
    with pytest.raises(openai.APIError, match="boom"):
        list(
            _client(live).chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "boom"}], stream=True
            )
        )
    assert _chat(live, "hello") == "hello"
    assert live.scheduler.snapshot()["failed"] == 2


def test_a_full_queue_answers_429_with_retry_after(live: Live) -> None:
    live.engine.gate.clear()
    live.engine.entered.clear()
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(_chat, live, "first")
        assert live.engine.entered.wait(30)
        waiting = [pool.submit(_chat, live, text) for text in ("second", "third")]
        while live.scheduler.snapshot()["queued"] < 2:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as refused:
            _chat(live, "fourth")
        live.engine.gate.set()
        assert [f.result(30) for f in (running, *waiting)] == ["first", "second", "third"]
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.body["type"] == "rate_limit_error"


def test_limits_and_unknown_routes_answer_in_openai_format(live: Live) -> None:
    assert _chat(live, "abcdef", max_tokens=3) == "abc"
    with pytest.raises(openai.BadRequestError) as too_long:
        _chat(live, "a" * 70)
    assert too_long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as streamed_n:
        _chat(live, "abc", n=2, stream=True)
    assert streamed_n.value.body["param"] == "n"
    request = urllib.request.Request(f"{live.url}/v2/nothing", headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=30)
    assert missing.value.code == 404 and set(json.loads(missing.value.read())["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }


def test_completions_take_several_prompts(live: Live) -> None:
    reply = _client(live).completions.create(model="x", prompt=["ab", "cd"], n=2, max_tokens=4)
    assert [c.text for c in reply.choices] == ["ab", "ab", "cd", "cd"]
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.usage.prompt_tokens == 4 and reply.usage.completion_tokens == 8
