"""Load: 200 concurrent clients, most of which give up early, then a fresh request. The real app and scheduler run
over a slow stand-in engine (a token every 50 ms, stopping for cancelled jobs as the real engines do), so that
abandoned requests that kept running would hold the fresh one back for over a minute."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from serve_live import SlowEngine, live_server, request

from tuneforge.serve.app import create_app
from tuneforge.serve.catalog import Catalog
from tuneforge.serve.engines.base import Job
from tuneforge.serve.scheduler import Scheduler

CLIENTS, PATIENT = 200, 10
LONG, SHORT = 40, 4  # tokens of an abandoned and of a patient request: 2 s and 0.2 s of generation


class CountingScheduler(Scheduler):
    """The real scheduler, counting the jobs it was given (a client may hang up before its request is read)."""

    submitted = 0

    def submit(self, jobs: list[Job]) -> None:
        super().submit(jobs)
        self.submitted += len(jobs)


@dataclass
class Live:
    url: str
    engine: SlowEngine
    scheduler: CountingScheduler


@pytest.fixture
def live() -> Iterator[Live]:
    engine = SlowEngine(delay_s=0.05)
    scheduler = CountingScheduler(engine, max_batch_size=4, batch_wait_s=0.005, max_queue=256)
    with live_server(create_app(engine, Catalog("slow"), scheduler)) as url:
        yield Live(url, engine, scheduler)


def _chat(text: str, max_tokens: int) -> bytes:
    body = json.dumps({"model": "slow", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens})
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()


async def _client(port: int, text: str, max_tokens: int, timeout: float) -> tuple[str, bytes | None]:
    """Send one request; read the whole answer, or give up after `timeout` seconds and hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_chat(text, max_tokens))
        await writer.drain()
        return text, await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        return text, None
    finally:
        writer.close()


async def _storm(port: int) -> list[tuple[str, bytes | None]]:
    draw = random.Random(0)
    texts = ["".join(draw.choice("abcdefgh") for _ in range(6)) for _ in range(CLIENTS)]
    patient = set(draw.sample(range(CLIENTS), PATIENT))
    clients = [
        _client(port, text, SHORT, 60.0) if i in patient else _client(port, text, LONG, draw.uniform(0.2, 1.0))
        for i, text in enumerate(texts)
    ]
    return list(await asyncio.gather(*clients))


@pytest.mark.scenario("concurrent_load")
def test_abandoned_requests_free_the_server_for_a_fresh_one(live: Live) -> None:
    port = int(live.url.rsplit(":", 1)[1])
    outcomes = asyncio.run(_storm(port))
    answered = [(text, raw) for text, raw in outcomes if raw is not None]
    assert len(answered) == PATIENT
    for text, raw in answered:
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(body)["choices"][0]["message"]["content"] == text[:SHORT]

    started = time.monotonic()
    body = {"model": "slow", "messages": [{"role": "user", "content": "fresh"}], "max_tokens": 5}
    fresh = request(live.url, "POST", "/v1/chat/completions", body, timeout=60)
    latency = time.monotonic() - started
    assert fresh.status == 200 and fresh.json["choices"][0]["message"]["content"] == "fresh"
    assert latency < 5.0, f"the fresh request took {latency:.1f} s"

    deadline = time.monotonic() + 30  # the last hang-ups may still be on their way to the scheduler
    while _settled(live.scheduler) < live.scheduler.submitted and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = live.scheduler.snapshot()
    assert stats["requests"] == PATIENT + 1  # no abandoned request ran to its end
    assert stats["cancelled"] == live.scheduler.submitted - PATIENT - 1 > CLIENTS // 2
    assert (stats["failed"], stats["queued"]) == (0, 0) and stats["largest_batch"] <= 4
    abandoned = [job for job in live.engine.started if job.max_tokens == LONG]
    assert abandoned and all(job.cancelled.is_set() for job in abandoned)


def _settled(scheduler: Scheduler) -> int:
    stats = scheduler.snapshot()
    return stats["requests"] + stats["cancelled"] + stats["failed"]
