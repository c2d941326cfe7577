"""`tuneforge chat`: the system prompt of --system reaches the model, in one-shot and interactive use.

The model's generate call is watched: the tokens it is given must be exactly the chat template's rendering of the
system prompt and the user's turns (and nothing else), and its answer is what the command prints.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from tuneforge.cli.main import build_parser
from tuneforge.data.render import render_text
from tuneforge.models import generate

SYSTEM = "You are Zork, a terse oracle."
ANSWERS: list[list[int]] = []


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The prompt token ids of every generation the command runs (and, in ANSWERS, the tokens it made)."""
    seen: list[list[int]] = []
    ANSWERS.clear()
    original = generate.generate_new_tokens

    def watched(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        seen.append(input_ids[0].tolist())
        made = original(model, input_ids, attention_mask, **kwargs)
        ANSWERS.append(made[0].tolist())
        return made

    monkeypatch.setattr(generate, "generate_new_tokens", watched)
    return seen


def _chat(*argv: str) -> int:
    args = build_parser(["chat"]).parse_args(["chat", *argv])
    return args.handler(args)


def _tokens(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    return tokenizer(render_text(tokenizer, messages, generation=True), add_special_tokens=False)["input_ids"]


def test_the_system_prompt_reaches_the_model(tiny_llama_dir: Path, prompts: list[list[int]], capsys: Any) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    user = {"role": "user", "content": "Name a fruit."}
    assert _chat(str(tiny_llama_dir), "--prompt", user["content"], "--system", SYSTEM, "--max-new-tokens", "3") == 0
    assert _chat(str(tiny_llama_dir), "--prompt", user["content"], "--max-new-tokens", "3") == 0
    with_system, without = prompts
    assert with_system == _tokens(tokenizer, [{"role": "system", "content": SYSTEM}, user])
    assert without == _tokens(tokenizer, [user])
    assert SYSTEM in tokenizer.decode(with_system) and SYSTEM not in tokenizer.decode(without)
    texts = [tokenizer.decode(tokens, skip_special_tokens=True) for tokens in ANSWERS]
    assert capsys.readouterr().out == "".join(f"{text}\n" for text in texts)  # the model's answers, printed


def test_the_system_prompt_stays_across_turns_and_resets(
    tiny_llama_dir: Path, prompts: list[list[int]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\nMore\n/reset\nHello\n\n"))
    assert _chat(str(tiny_llama_dir), "--system", SYSTEM, "--max-new-tokens", "3") == 0
    system = {"role": "system", "content": SYSTEM}
    answers = [line.removeprefix("bot> ").strip() for line in capsys.readouterr().out.split("you> ") if line]
    assert len(prompts) == 3 and len(answers) >= 2
    first = [system, {"role": "user", "content": "Hi"}]
    assert prompts[0] == _tokens(tokenizer, first)
    second = [*first, {"role": "assistant", "content": answers[0]}, {"role": "user", "content": "More"}]
    assert prompts[1] == _tokens(tokenizer, second)
    assert prompts[2] == _tokens(tokenizer, [system, {"role": "user", "content": "Hello"}])  # after /reset
