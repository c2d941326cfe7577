"""`tuneforge serve` driven with the official openai client against live servers on loopback.

One module-wide setup trains a tiny LoRA run, makes a second (random) peft adapter, and starts two servers at
once: the main one serves the base model as "tiny" with the run as "a" and the peft folder as "b"; the busy one
serves the run directory itself with a queue of one, to show HTTP 429.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import MEMORISE, run_cli, write_config, write_memorisation_set

openai = pytest.importorskip("openai")

KEY = "test-key-123"
# The tiny model gains nothing from more threads, and processes sharing two cores stall each other with more.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
QUESTIONS = [q for q, _ in MEMORISE]
ASK = [{"role": "user", "content": "What colour is the sky?"}]


@dataclass
class Servers:
    main: str
    busy: str
    run_dir: Path
    base_name: str
    chat_answer: str
    ask_tokens: int  # of ASK, rendered with the chat template


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `tuneforge ARGS...` with its stderr in `log` and its stdout next to it, in `log` with suffix .out."""
    command = [sys.executable, "-m", "tuneforge.cli.main", *args]
    environment = {key: value for key, value in os.environ.items() if key != "TUNEFORGE_API_KEY"}
    with log.open("w") as errors, log.with_suffix(".out").open("w") as output:
        return subprocess.Popen(
            command, stdout=output, stderr=errors, env={**environment, **ONE_THREAD, **(env or {})}
        )


def _wait_until_up(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            _get(base, "/health")
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()}") from None
            time.sleep(0.3)


def _get(base: str, path: str, key: str = KEY) -> dict[str, Any]:
    request = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _random_adapter(base_dir: Path, out: Path) -> Path:
    """A peft LoRA folder with random (non-zero) weights: it changes the answers without any training."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(out))
    return out


def _template_tokens(model_dir: Path, messages: list[dict[str, str]]) -> list[int]:
    from transformers import AutoTokenizer

    from tuneforge.data.render import render_text

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return tokenizer(render_text(tokenizer, messages, generation=True), add_special_tokens=False)["input_ids"]


def _start_training(tiny_llama_dir: Path, work: Path) -> subprocess.Popen[bytes]:
    """A short LoRA run on the memorisation set, into work/run."""
    data = write_memorisation_set(work / "memorise.jsonl")
    train = {"max_steps": 8, "learning_rate": 5.0e-2, "scheduler": "constant"}
    config = write_config(work / "cfg.yaml", tiny_llama_dir, data, work / "run", train=train)
    return _spawn(["train", str(config)], work / "train.log")


@pytest.fixture(scope="module")
def servers(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    work = tmp_path_factory.mktemp("serve")
    training = _start_training(tiny_llama_dir, work)
    peft_dir = _random_adapter(tiny_llama_dir, work / "random-adapter")
    assert training.wait(timeout=300) == 0, (work / "train.log").read_text()
    run_dir = work / "run"
    ports = _free_port(), _free_port()
    main_args = ["serve", str(tiny_llama_dir), "--name", "tiny", "--adapter", f"a={run_dir}", "--adapter"]
    main_args += [f"b={peft_dir}", "--port", str(ports[0])]  # the key comes from TUNEFORGE_API_KEY
    (work / "key").write_text(f"{KEY}\n")
    busy_args = ["serve", str(run_dir), "--port", str(ports[1]), "--api-key-file", str(work / "key")]
    busy_args += ["--max-queue", "1", "--max-batch-size", "1"]
    chat_args = ["chat", str(run_dir), "--prompt", ASK[0]["content"], "--max-new-tokens", "16"]
    logs = [work / "main.log", work / "busy.log", work / "chat.log"]
    envs = [{"TUNEFORGE_API_KEY": KEY}, None, None]
    processes = [
        _spawn(args, log, env) for args, log, env in zip([main_args, busy_args, chat_args], logs, envs, strict=True)
    ]
    try:
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base, process, log in zip(bases, processes, logs, strict=False):
            _wait_until_up(base, process, log)
        assert processes[2].wait(timeout=120) == 0, logs[2].read_text()
        chat_answer = logs[2].with_suffix(".out").read_text().strip()
        ask_tokens = len(_template_tokens(tiny_llama_dir, ASK))
        yield Servers(f"{bases[0]}/v1", f"{bases[1]}/v1", run_dir, tiny_llama_dir.name, chat_answer, ask_tokens)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def _say(url: str, model: str, question: str, **options: Any) -> str:
    messages = [{"role": "user", "content": question}]
    options = {"max_tokens": 16, **options}
    reply = _client(url).chat.completions.create(model=model, messages=messages, **options)
    return reply.choices[0].message.content


def test_models_lists_the_base_and_every_adapter(servers: Servers) -> None:
    assert [m.id for m in _client(servers.main).models.list().data] == ["tiny", "a", "b"]
    assert [m.id for m in _client(servers.busy).models.list().data] == [servers.base_name, servers.run_dir.name]


def test_the_model_field_picks_the_adapter_and_matches_tuneforge_chat(servers: Servers) -> None:
    answers = {model: _say(servers.main, model, ASK[0]["content"]) for model in ("tiny", "a", "b")}
    assert len(set(answers.values())) == 3, answers
    assert answers["a"].strip() == servers.chat_answer
    assert _say(servers.busy, servers.run_dir.name, ASK[0]["content"]) == answers["a"]
    assert _say(servers.busy, servers.base_name, ASK[0]["content"]) == answers["tiny"]


def test_streamed_text_equals_plain_text_for_greedy_decoding(servers: Servers) -> None:
    client = _client(servers.main)
    plain = client.chat.completions.create(model="a", messages=ASK, max_tokens=12, temperature=0)
    streamed = client.chat.completions.create(
        model="a", messages=ASK, max_tokens=12, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(streamed)
    assert plain.choices[0].message.content == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert plain.usage.prompt_tokens == servers.ask_tokens and plain.usage.completion_tokens <= 12
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens


def test_n_answers_and_seeded_sampling(servers: Servers) -> None:
    client = _client(servers.main)
    two = client.chat.completions.create(model="a", messages=ASK, max_tokens=8, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].message.content == two.choices[1].message.content  # greedy: the same answer twice
    assert (
        two.usage.completion_tokens
        == 2 * client.chat.completions.create(model="a", messages=ASK, max_tokens=8).usage.completion_tokens
    )
    sampled = [_say(servers.main, "a", ASK[0]["content"], temperature=1.0, seed=3, n=2) for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_stop_string_ends_the_answer(servers: Servers) -> None:
    full = _say(servers.main, "a", ASK[0]["content"])
    assert len(full) > 2
    stop = full[2]
    assert _say(servers.main, "a", ASK[0]["content"], stop=[stop]) == full[: full.index(stop)]
    streamed = _client(servers.main).chat.completions.create(
        model="a", messages=ASK, max_tokens=16, stop=stop, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == full[: full.index(stop)]


def test_text_completions_plain_and_streamed(servers: Servers) -> None:
    client = _client(servers.main)
    plain = client.completions.create(model="a", prompt="The sky is", max_tokens=10)
    assert plain.object == "text_completion" and plain.choices[0].finish_reason in ("stop", "length")
    streamed = client.completions.create(model="a", prompt="The sky is", max_tokens=10, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text
    chat = client.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "The sky is"}], max_tokens=4
    )
    assert 0 < plain.usage.prompt_tokens < chat.usage.prompt_tokens  # no chat template around a plain prompt


def test_generate_route_answers_like_chat(servers: Servers) -> None:
    base = servers.busy.removesuffix("/v1")
    query = urllib.parse.urlencode({"prompt": ASK[0]["content"], "max_tokens": 16})
    answer = _get(base, f"/generate?{query}")
    assert answer["model"] == servers.run_dir.name  # a LoRA run directory answers as the run by default
    assert answer["text"].strip() == servers.chat_answer


def test_concurrent_requests_are_batched_and_answered_as_alone(servers: Servers) -> None:
    alone = {q: _say(servers.main, "a", q, max_tokens=8) for q in QUESTIONS}
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda q: (q, _say(servers.main, "a", q, max_tokens=8)), QUESTIONS * 4))
    assert len(answers) == 32
    assert all(text == alone[q] for q, text in answers)
    stats = _get(servers.main.removesuffix("/v1"), "/health")["stats"]
    assert stats["largest_batch"] > 1 and stats["requests"] >= 40


def test_full_queue_answers_429_and_the_server_recovers(servers: Servers) -> None:
    def ask(_: int) -> str:
        try:
            _client(servers.busy).chat.completions.create(
                model=servers.base_name, messages=ASK, max_tokens=400, extra_body={"ignore_eos": True}
            )
            return "ok"
        except openai.RateLimitError as err:
            assert err.response.headers["retry-after"] == "1"
            assert err.body["code"] == "rate_limit_exceeded"
            return "429"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(ask, range(8)))
    assert "429" in outcomes and "ok" in outcomes
    expected = _say(servers.main, "tiny", ASK[0]["content"], max_tokens=4)  # the same base model, greedy
    assert _say(servers.busy, servers.base_name, ASK[0]["content"], max_tokens=4) == expected


def test_wrong_or_bare_keys_are_refused(servers: Servers) -> None:
    with pytest.raises(openai.AuthenticationError):
        _client(servers.main, key="wrong").models.list()
    for base in (servers.main, servers.busy):  # the key from TUNEFORGE_API_KEY, and from --api-key-file
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(base.removesuffix("/v1"), "/health", key="wrong")
        assert refused.value.code == 401
        bare = urllib.request.Request(f"{base.removesuffix('/v1')}/health", headers={"Authorization": KEY})
        with pytest.raises(urllib.error.HTTPError) as bare_refused:
            urllib.request.urlopen(bare, timeout=60)
        assert bare_refused.value.code == 401 and json.loads(bare_refused.value.read())["error"]["code"] == (
            "invalid_api_key"
        )
        assert _get(base.removesuffix("/v1"), "/health")["status"] == "ok"


def test_bad_requests_get_openai_errors_and_the_server_survives(servers: Servers) -> None:
    client = _client(servers.main)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=ASK)
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="tiny", messages=ASK, max_tokens=100000)
    assert too_many.value.body["param"] == "max_tokens"
    long_prompt = [{"role": "user", "content": "one two three " * 400}]
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="tiny", messages=long_prompt, max_tokens=4)
    assert too_long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as bad_n:
        client.chat.completions.create(model="tiny", messages=ASK, n=100)
    assert bad_n.value.body["param"] == "n"
    assert [m.id for m in client.models.list().data] == ["tiny", "a", "b"]  # the server survived


def test_malformed_json_is_a_400_error_json(servers: Servers) -> None:
    request = urllib.request.Request(
        f"{servers.main}/chat/completions",
        data=b'{"model": "tiny", "messages": [',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(request, timeout=30)
    assert bad.value.code == 400
    error = json.loads(bad.value.read())["error"]
    assert "not valid JSON" in error["message"] and error["type"] == "invalid_request_error"


def test_binding_beyond_loopback_requires_a_key(tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = run_cli("serve", str(tiny_llama_dir), "--host", "0.0.0.0", cwd=tmp_path)
    assert result.returncode == 2 and "set TUNEFORGE_API_KEY or give --api-key-file" in result.stderr


def test_missing_optional_engine_names_its_package(tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = run_cli("serve", str(tiny_llama_dir), "--engine", "vllm", cwd=tmp_path)
    assert result.returncode == 2 and "pip install vllm" in result.stderr
