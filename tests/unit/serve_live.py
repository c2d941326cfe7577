"""Serving test helpers: an app on a live uvicorn server (loopback, free port, in a thread), raw HTTP requests
with full control of the headers and body, and engines that stand in for a model."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tuneforge.data.messages import Conversation
from tuneforge.serve.engines.base import Engine, Job, Tokens

uvicorn = pytest.importorskip("uvicorn")


@dataclass
class Reply:
    """An HTTP answer: status, headers (lower-case names) and the body (parsed when it is JSON)."""

    status: int
    headers: dict[str, str]
    raw: bytes
    json: Any = field(default=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 in a background thread; yields its base URL (http://127.0.0.1:PORT)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def request(
    base: str,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str | None] | None = None,
    timeout: float = 30,
) -> Reply:
    """One request on a fresh connection; `headers` replace the defaults (Host, and JSON Content-Type for a body),
    a None value leaves that header out."""
    host_port = base.removeprefix("http://")
    connection = http.client.HTTPConnection(host_port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        sent: dict[str, str | None] = {"Host": host_port}
        if data is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in sent.items():
            if value is not None:
                connection.putheader(name, value)
        if data is not None and "Content-Length" not in sent:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        return read_reply(connection.getresponse())
    finally:
        connection.close()


def read_reply(response: http.client.HTTPResponse) -> Reply:
    raw = response.read()
    headers = {name.lower(): value for name, value in response.getheaders()}
    parsed = json.loads(raw) if headers.get("content-type", "").startswith("application/json") else None
    return Reply(response.status, headers, raw, parsed)


def assert_openai_error(reply: Reply, status: int, param: str | None = None, code: str | None = None) -> str:
    """`reply` is an error in OpenAI's shape with this status (and param/code when given); returns its message."""
    assert reply.status == status, (reply.status, reply.raw[:300])
    assert isinstance(reply.json, dict) and set(reply.json) == {"error"}, reply.raw[:300]
    error = reply.json["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and len(error["message"]) > 10, error
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error["message"]


class SlowEngine(Engine):
    """Answers each prompt with its own tokens, one token every `delay_s` seconds, like a slow model would; it
    stops a row once its job is cancelled and the whole batch once every row is done (as the real engines do)."""

    context_length = 256

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.started: list[Job] = []
        self.lock = threading.Lock()

    def encode_chat(self, conversation: Conversation) -> list[int]:
        return self.encode_text(conversation.messages[-1].content)

    def encode_text(self, text: str) -> list[int]:
        return [ord(c) - ord("a") for c in text if "a" <= c <= "z"]

    def decode(self, tokens: list[int]) -> str:
        return "".join(chr(ord("a") + t % 26) for t in tokens)

    def generate_tokens(self, jobs: list[Job]) -> list[list[Tokens]]:
        with self.lock:
            self.started.extend(jobs)
        rows = [(job, []) for job in jobs for _ in range(job.n)]
        for step in range(max(job.max_tokens for job in jobs)):
            live = [(job, made) for job, made in rows if not job.cancelled.is_set() and step < job.max_tokens]
            if not live:
                break
            time.sleep(self.delay_s)
            for job, made in live:
                made.append(job.prompt[step % len(job.prompt)])
        answers = iter([(made, False) for _, made in rows])
        return [[next(answers) for _ in range(job.n)] for job in jobs]

    def stream_tokens(self, job: Job, take: Callable[[int], bool]) -> bool:
        with self.lock:
            self.started.append(job)
        for step in range(job.max_tokens):
            if job.cancelled.is_set():
                break
            time.sleep(self.delay_s)
            if not take(job.prompt[step % len(job.prompt)]):
                break
        return False
