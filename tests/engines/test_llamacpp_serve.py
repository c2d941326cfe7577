"""`tuneforge serve FILE.gguf --engine llamacpp` for real: llama.cpp serves an exported GGUF file, and the official
openai client gets, plain and streamed, the answer transformers gives for the Hugging Face folder it came from."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from engine_helpers import require, untied_variant
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.data.render import render_text
from tuneforge.export.gguf import export_gguf

openai = pytest.importorskip("openai")

KEY = "llamacpp-test-key"
ASK = [{"role": "user", "content": "What colour is the sky?"}]
MAX_TOKENS = 16


@dataclass
class Served:
    url: str
    name: str
    answer: str  # transformers' greedy answer for ASK on the Hugging Face folder
    prompt_tokens: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _transformers_answer(folder: Path) -> tuple[str, int]:
    """Greedy answer to ASK (at most MAX_TOKENS tokens, ended by EOS) and the prompt's length in tokens."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = tokenizer(render_text(tokenizer, ASK, generation=True), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    new = out[0, len(ids) :].tolist()
    return tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False), len(ids)


@pytest.fixture(scope="module")
def served(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require(
        find_spec("llama_cpp") is not None, "llama-cpp-python", "`make test` installs it; pip install llama-cpp-python"
    )
    work = tmp_path_factory.mktemp("serve_llamacpp")
    folder = untied_variant(tiny_llama_dir, work / "hf")  # greedy answers of varied tokens
    gguf = export_gguf(folder, work / "tiny" / "model-f32.gguf", "f32")
    port = _free_port()
    command = [sys.executable, "-m", "tuneforge.cli.main", "serve", str(gguf), "--engine", "llamacpp"]
    command += ["--name", "tiny-gguf", "--port", str(port)]
    log = work / "serve.log"
    env = {**os.environ, "TUNEFORGE_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    with log.open("w") as errors:
        process = subprocess.Popen(command, stdout=errors, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", process, log)
        answer, prompt_tokens = _transformers_answer(folder)
        yield Served(f"http://127.0.0.1:{port}/v1", "tiny-gguf", answer, prompt_tokens)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_up(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    request = urllib.request.Request(f"{base}/health", headers={"Authorization": f"Bearer {KEY}"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                json.loads(response.read())
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the llama.cpp server did not start:\n{log.read_text()}") from None
            time.sleep(0.3)


def _client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key=KEY, max_retries=0, timeout=120)


def test_llamacpp_serves_the_gguf_file_under_its_name(served: Served) -> None:
    assert [m.id for m in _client(served).models.list().data] == [served.name]


def test_plain_chat_answers_what_transformers_answers(served: Served) -> None:
    reply = _client(served).chat.completions.create(
        model=served.name, messages=ASK, max_tokens=MAX_TOKENS, temperature=0
    )
    assert reply.choices[0].message.content == served.answer
    assert len(set(served.answer)) > 5  # varied text, not one token repeated
    assert reply.usage.prompt_tokens == served.prompt_tokens
    assert 0 < reply.usage.completion_tokens <= MAX_TOKENS


def test_streamed_chat_equals_the_plain_answer(served: Served) -> None:
    chunks = list(
        _client(served).chat.completions.create(
            model=served.name,
            messages=ASK,
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == served.answer
    assert len([chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]) > 1  # really streamed
    assert chunks[-1].usage.prompt_tokens == served.prompt_tokens


def test_seeded_sampling_repeats_and_differs_from_greedy(served: Served) -> None:
    def sample(seed: int) -> str:
        reply = _client(served).chat.completions.create(
            model=served.name, messages=ASK, max_tokens=MAX_TOKENS, temperature=1.5, seed=seed
        )
        return reply.choices[0].message.content

    first = sample(11)
    assert sample(11) == first
    assert {sample(seed) for seed in (1, 2, 3)} | {first} != {served.answer}
