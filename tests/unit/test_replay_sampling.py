"""Self-replay answers sampled from the base model's distribution (the default) or greedy (temperature 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.config.schema import ReplaySection
from tuneforge.data.quality import DataReport
from tuneforge.models.generate import generate_replies
from tuneforge.train.replay import replay_conversations

PROMPTS = [f"Tell me something about the number {i}." for i in range(6)]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir: Path) -> tuple:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_llama_dir)


def answers(tiny: tuple, temperature: float, seed: int = 0) -> list[str]:
    model, tokenizer = tiny
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    return [r.text for r in generate_replies(model, tokenizer, conversations, 12, temperature=temperature, seed=seed)]


def test_sampled_answers_are_reproducible_and_differ_from_greedy(tiny):
    greedy = answers(tiny, 0.0)
    assert answers(tiny, 0.0, seed=5) == greedy  # the seed plays no part in greedy decoding
    sampled = answers(tiny, 1.0)
    assert answers(tiny, 1.0) == sampled  # same seed, same samples
    assert answers(tiny, 1.0, seed=1) != sampled
    assert sum(a != b for a, b in zip(sampled, greedy, strict=True)) >= 4


def test_sampling_leaves_the_global_random_state_alone(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    answers(tiny, 1.0)
    assert torch.equal(torch.rand(3), expected)


def test_replay_defaults_to_sampling_and_caches_greedy_and_sampled_apart(tiny, tmp_path):
    assert ReplaySection().temperature == 1.0
    model, tokenizer = tiny
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS), encoding="utf-8")
    cache = tmp_path / "cache"

    def replay(temperature: float) -> list[str]:
        report = DataReport()
        rows = replay_conversations(
            model, tokenizer, "tiny", str(prompts), 12, None, report, cache, trim=False, temperature=temperature
        )
        return [c.messages[-1].content for c in rows]

    greedy, sampled = replay(0.0), replay(1.0)
    assert greedy == answers(tiny, 0.0) and sampled == answers(tiny, 1.0)
    assert len(list(cache.iterdir())) == 2  # one cache file each: a sampled run never reuses greedy answers
    assert replay(1.0) == sampled


def test_several_sampled_answers_per_prompt(tiny, tmp_path):
    model, tokenizer = tiny
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS), encoding="utf-8")
    rows = replay_conversations(
        model,
        tokenizer,
        "tiny",
        str(prompts),
        12,
        None,
        DataReport(),
        tmp_path,
        trim=False,
        temperature=1.0,
        answers=3,
    )
    asked = [c.messages[0].content for c in rows]
    assert asked == PROMPTS * 3
    for index in range(len(PROMPTS)):  # the draws for one prompt are not one answer repeated
        draws = {rows[index + k * len(PROMPTS)].messages[-1].content for k in range(3)}
        assert len(draws) >= 2, draws
    one = replay_conversations(
        model, tokenizer, "tiny", str(prompts), 12, None, DataReport(), tmp_path, trim=False, temperature=1.0
    )
    assert [c.messages[-1].content for c in one] == answers(tiny, 1.0)  # answers=1 keeps its old draws and cache
    assert len(list(tmp_path.glob("*.jsonl"))) == 2


def test_several_greedy_answers_are_refused():
    with pytest.raises(ValueError, match="data.replay.temperature above 0"):
        ReplaySection(answers=2, temperature=0)
    assert ReplaySection(answers=2).answers == 2


def test_sampled_answers_keep_batches_of_eight_and_greedy_ones_do_not_depend_on_the_batching(tiny):
    """A seed's sampled answers stay what they were (cached self-replay answers, the demo's measurements); greedy
    answers come in larger batches and are the answers one at a time would give."""
    model, tokenizer = tiny
    conversations = [[{"role": "user", "content": f"Tell me about the number {i}, briefly."}] for i in range(20)]

    def texts(batch_size: int | None, temperature: float) -> list[str]:
        replies = generate_replies(model, tokenizer, conversations, 10, batch_size, temperature=temperature, seed=5)
        return [r.text for r in replies]

    sampled = texts(None, 1.0)
    assert sampled == texts(8, 1.0) and sampled != texts(20, 1.0)
    assert texts(None, 0.0) == texts(1, 0.0)
