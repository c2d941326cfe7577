"""The app in-process (uvicorn on loopback) over an echo engine: errors, the 429 queue limit, failures kept local,
the body size limit, tokenising off the event loop, capacity limits, and jobs cancelled when their client leaves."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from serve_live import assert_openai_error, live_server, read_reply, request
from test_serve_scheduler import EchoEngine

from tuneforge.serve.app import create_app
from tuneforge.serve.catalog import Catalog
from tuneforge.serve.scheduler import Scheduler

openai = pytest.importorskip("openai")

KEY = "k"
BODY_LIMIT = 2000
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Live:
    url: str
    engine: EchoEngine
    scheduler: Scheduler


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    engine = EchoEngine()
    scheduler = Scheduler(engine, max_batch_size=2, batch_wait_s=0.0, max_queue=4)
    app = create_app(
        engine, Catalog("echo", ("x",)), scheduler, api_key=KEY, default_max_tokens=16, max_body_bytes=BODY_LIMIT
    )
    with live_server(app) as url:
        yield Live(url, engine, scheduler)


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
    with ThreadPoolExecutor(5) as pool:
        running = pool.submit(_chat, live, "first")
        assert live.engine.entered.wait(30)
        waiting = [pool.submit(_chat, live, text) for text in ("second", "third", "fourth", "fifth")]
        while live.scheduler.snapshot()["queued"] < 4:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as refused:
            _chat(live, "sixth")
        live.engine.gate.set()
        assert [f.result(30) for f in (running, *waiting)] == ["first", "second", "third", "fourth", "fifth"]
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


def test_requests_that_can_never_fit_are_400s_not_429s(live: Live) -> None:
    with pytest.raises(openai.BadRequestError) as too_many_answers:
        _chat(live, "abc", n=3)  # the batch holds 2 answers
    assert too_many_answers.value.body["param"] == "n"
    assert "--max-batch-size 2" in too_many_answers.value.body["message"]
    with pytest.raises(openai.BadRequestError) as too_many_prompts:
        _client(live).completions.create(model="x", prompt=["ab", "cd", "ef", "gh", "ij"], max_tokens=2)
    assert too_many_prompts.value.body["param"] == "prompt"
    assert (
        "5 answers" in too_many_prompts.value.body["message"]
        and "--max-queue 4" in too_many_prompts.value.body["message"]
    )
    with pytest.raises(openai.BadRequestError) as prompts_times_n:
        _client(live).completions.create(model="x", prompt=["ab", "cd", "ef"], n=2, max_tokens=2)
    assert "6 answers" in prompts_times_n.value.body["message"]
    assert live.scheduler.snapshot()["queued"] == 0


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(live: Live) -> None:
    # Only the headers go out: a server that waited for the body would time out here.
    headers = {**AUTH, "Content-Type": "application/json", "Content-Length": str(10**12)}
    reply = request(live.url, "POST", "/v1/chat/completions", headers=headers, timeout=10)
    message = assert_openai_error(reply, 413, code="request_too_large")
    assert f"{BODY_LIMIT} bytes" in message and "--max-body-bytes" in message
    assert reply.headers["connection"] == "close"


def test_a_chunked_body_is_counted_as_it_arrives_and_refused_past_the_limit(live: Live) -> None:
    connection = http.client.HTTPConnection(live.url.removeprefix("http://"), timeout=10)
    connection.putrequest("POST", "/v1/completions")
    for name, value in {**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}.items():
        connection.putheader(name, value)
    connection.endheaders()
    for _ in range(3):  # 2400 bytes of a body that never ends: only counting can refuse it
        connection.send(b"320\r\n" + b" " * 800 + b"\r\n")
    reply = read_reply(connection.getresponse())
    connection.close()
    assert_openai_error(reply, 413, code="request_too_large")


def test_a_body_within_the_limit_is_served(live: Live) -> None:
    body = {"model": "echo", "prompt": "abc", "max_tokens": 3, "user": "u" * (BODY_LIMIT - 100)}
    assert BODY_LIMIT - 50 < len(json.dumps(body)) <= BODY_LIMIT
    reply = request(live.url, "POST", "/v1/completions", body=body, headers=AUTH)
    assert reply.status == 200 and reply.json["choices"][0]["text"] == "abc"


def test_a_client_that_goes_away_cancels_its_running_and_waiting_jobs(live: Live) -> None:
    before = live.scheduler.snapshot()
    live.engine.gate.clear()
    live.engine.entered.clear()
    batches = len(live.engine.batches)
    body = {"model": "echo", "messages": [{"role": "user", "content": "running"}], "max_tokens": 8}
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(request, live.url, "POST", "/v1/chat/completions", body, AUTH, 1.0)
        assert live.engine.entered.wait(30)
        waiting_body = {**body, "messages": [{"role": "user", "content": "waiting"}]}
        waiting = pool.submit(request, live.url, "POST", "/v1/chat/completions", waiting_body, AUTH, 1.0)
        for gave_up in (running, waiting):
            with pytest.raises(TimeoutError):
                gave_up.result(30)
    deadline = time.monotonic() + 30
    while live.scheduler.snapshot()["cancelled"] < before["cancelled"] + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live.scheduler.snapshot()["queued"] == 0  # the waiting job left the queue without running
    live.engine.gate.set()
    while live.scheduler.snapshot()["cancelled"] < before["cancelled"] + 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    ran = [job for batch in live.engine.batches[batches:] for job in batch]
    assert [live.engine.decode(job.prompt) for job in ran] == ["running"]
    assert ran[0].cancelled.is_set()  # the engine was told to stop generating for it
    after = live.scheduler.snapshot()
    assert after["cancelled"] - before["cancelled"] == 2 and after["requests"] == before["requests"]
    assert _chat(live, "fresh") == "fresh"


class HeldEncodeEngine(EchoEngine):
    """Tokenising the text "hold" blocks until `release` is set (as a huge prompt or slow template would); the text
    "refuse" is refused as a tokeniser refuses text it cannot encode."""

    def __init__(self) -> None:
        super().__init__()
        self.encoding, self.release = threading.Event(), threading.Event()

    def encode_text(self, text: str) -> list[int]:
        if text == "hold":
            self.encoding.set()
            self.release.wait(30)
        if text == "refuse":
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
        return super().encode_text(text)


def test_tokenising_runs_off_the_event_loop() -> None:
    engine = HeldEncodeEngine()
    scheduler = Scheduler(engine, max_batch_size=2, batch_wait_s=0.0, max_queue=4)
    with live_server(create_app(engine, Catalog("echo"), scheduler)) as url, ThreadPoolExecutor(1) as pool:
        held = pool.submit(request, url, "POST", "/v1/completions", {"model": "echo", "prompt": "hold"})
        assert engine.encoding.wait(30)
        try:
            health = request(url, "GET", "/health", timeout=10)  # the event loop is free while "hold" tokenises
            answered = request(url, "POST", "/v1/completions", {"model": "echo", "prompt": "abc"}, timeout=10)
        finally:
            engine.release.set()
        assert health.status == 200 and health.json["status"] == "ok"
        assert answered.json["choices"][0]["text"] == "abc"
        assert held.result(30).json["choices"][0]["text"] == "hold"
        for path, body, param, failure in (
            ("/v1/completions", {"model": "echo", "prompt": "refuse"}, "prompt", "cannot tokenise the prompt"),
            (
                "/v1/chat/completions",
                {"model": "echo", "messages": [{"role": "user", "content": "refuse"}]},
                "messages",
                "cannot render these messages with the chat template",
            ),
        ):
            message = assert_openai_error(request(url, "POST", path, body), 400, param=param)
            assert message.startswith(f"{failure}: TypeError: TextEncodeInput")
