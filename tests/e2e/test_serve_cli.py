"""`tuneforge serve` driven with the official openai client against a live server on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli

openai = pytest.importorskip("openai")

KEY = "test-key-123"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuneforge.cli.main",
                "serve",
                str(tiny_llama_dir),
                "--port",
                str(port),
                "--name",
                "tiny",
                "--api-key",
                KEY,
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                request = urllib.request.Request(f"{base}/health", headers={"Authorization": f"Bearer {KEY}"})
                urllib.request.urlopen(request, timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log.read_text()}") from None
                time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def test_models_lists_the_served_model(server: str) -> None:
    assert [m.id for m in _client(server).models.list().data] == ["tiny"]


def test_streamed_text_equals_plain_text_for_greedy_decoding(server: str) -> None:
    client = _client(server)
    messages = [{"role": "user", "content": "Say hello."}]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert plain.choices[0].message.content == text
    assert plain.usage.prompt_tokens > 0 and plain.usage.completion_tokens <= 12
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens


def test_stop_string_ends_the_answer_and_the_server_keeps_answering(server: str) -> None:
    client = _client(server)
    messages = [{"role": "user", "content": "Say hello."}]
    full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12).choices[0].message.content
    assert len(full) > 1
    stop = full[1]
    cut = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12)
    assert again.choices[0].message.content == full


def test_wrong_key_is_refused(server: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        _client(server, key="wrong").models.list()


def test_bad_requests_get_openai_errors(server: str) -> None:
    client = _client(server)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=100000)
    assert too_long.value.body["param"] == "max_tokens"
    assert _client(server).models.list().data  # the server survived


def test_binding_beyond_loopback_requires_a_key(tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = run_cli("serve", str(tiny_llama_dir), "--host", "0.0.0.0", cwd=tmp_path)
    assert result.returncode == 2 and "--api-key" in result.stderr
