"""SIGTERM to a real `tuneforge serve`: the requests in flight finish (a stream gets its [DONE]), new connections
are refused while it drains, and the process exits with status 0."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

TOKENS = 200  # ignore_eos: every answer is exactly this long


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(port: int, path: str, body: dict[str, Any], timeout: float = 120) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _wait_until_up(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start:\n{log.read_text()}")
        time.sleep(0.3)


def _health(port: int) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/health")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return False
    except ConnectionRefusedError:
        return True


@pytest.mark.scenario("sigterm_serving")
def test_sigterm_drains_in_flight_requests_then_exits_0(tiny_llama_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "tuneforge.cli.main", "serve", str(tiny_llama_dir), "--name", "tiny"]
    command += ["--port", str(port), "--max-batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TUNEFORGE_API_KEY", None)
    with log.open("w") as errors:
        process = subprocess.Popen(command, stdout=errors, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_until_up(port, process, log)
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = {"model": "tiny", "prompt": "The sky is", "max_tokens": TOKENS, "ignore_eos": True, "stream": True}
        body["stream_options"] = {"include_usage": True}
        stream.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = stream.getresponse()
        assert response.status == 200
        first = response.readline()
        assert first.startswith(b"data: {")
        with ThreadPoolExecutor(3) as pool:
            plain = {**body, "stream": False, "stream_options": None}
            queued = [pool.submit(_post, port, "/v1/completions", {**plain, "prompt": p}) for p in ("A", "B", "C")]
            deadline = time.monotonic() + 60
            while _health(port)["stats"]["queued"] < 3 and time.monotonic() < deadline:
                time.sleep(0.05)  # until they wait behind the stream
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while not _refused(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _refused(port) and process.poll() is None, "new connections must be refused while draining"
            events = [first] + [line for line in iter(response.readline, b"") if line.strip()]
            stream.close()
            answers = [future.result(120) for future in queued]
        assert events[-1] == b"data: [DONE]\n"
        payloads = [json.loads(line.removeprefix(b"data: ")) for line in events[:-1]]
        assert payloads[-1]["usage"]["completion_tokens"] == TOKENS
        assert [choice["finish_reason"] for p in payloads for choice in p["choices"]][-1] == "length"
        for status, answer in answers:
            assert status == 200 and answer["usage"]["completion_tokens"] == TOKENS
        assert process.wait(timeout=120) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
