"""render_samples (chat texts tokenized a chunk at a time) gives exactly render_sample's samples and faults."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from tuneforge.data import Conversation, Message, RowError, render
from tuneforge.data.render import positions_in_spans, render_sample, render_samples


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def chat(*turns: tuple[str, str], weight: float = 1.0, **kwargs) -> Conversation:
    messages = [Message(role, content) for role, content in turns]
    messages[-1] = Message(messages[-1].role, messages[-1].content, weight=weight)
    return Conversation(messages, **kwargs)


CONVERSATIONS = [
    chat(("user", "Hi"), ("assistant", "Hello!"), source="a.json:1"),
    chat(("system", "Be terse."), ("user", "2+2?"), ("assistant", "4"), ("user", "你好"), ("assistant", "你好！")),
    chat(("user", "masked"), ("assistant", "nothing to learn"), weight=0, source="a.json:3"),
    Conversation([], text="Raw text for continued pretraining.", source="b.txt:1"),
    Conversation([], text="   ", source="b.txt:2"),
    chat(("user", "A long question " * 40), ("assistant", "answer"), source="a.json:6"),
    chat(("user", "Why?"), ("assistant", "Because " * 20), source="a.json:7"),
    Conversation(
        [Message("user", "Pick one")], chosen=Message("assistant", "good"), rejected=Message("assistant", "bad")
    ),
]


def _describe(result):
    if isinstance(result, Exception):
        return (type(result).__name__, str(result))
    rejected = result.rejected.input_ids if result.rejected else None
    return (result.input_ids, result.labels, result.truncated, result.source, result.kind, rejected)


def _one_by_one(tokenizer, conversations, cutoff_len):
    results = []
    for conversation in conversations:
        try:
            results.append(render_sample(tokenizer, conversation, cutoff_len))
        except RowError as err:
            results.append(err)
    return results


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_batched_rendering_equals_one_by_one(tokenizer, chunk):
    cutoff_len = 64  # cuts row 6 (all labels masked: a located fault) and row 7 (truncated, kept)
    batched = render_samples(tokenizer, CONVERSATIONS, cutoff_len, chunk=chunk)
    expected = _one_by_one(tokenizer, CONVERSATIONS, cutoff_len)
    assert [_describe(r) for r in batched] == [_describe(r) for r in expected]
    faults = [i for i, r in enumerate(batched) if isinstance(r, RowError)]
    assert faults == [2, 4, 5]
    assert batched[6].truncated and not batched[0].truncated
    assert batched[7].kind == "preference" and batched[7].rejected is not None


def test_a_text_the_tokenizer_refuses_is_a_fault_of_its_own_row(tokenizer, monkeypatch):
    calls = []
    original = render._encode

    def refuse_bad(tok, texts):
        calls.append(len(texts))
        if any("BAD" in text for text in texts):
            raise ValueError("cannot encode BAD")
        return original(tok, texts)

    monkeypatch.setattr(render, "_encode", refuse_bad)
    rows = [chat(("user", "fine"), ("assistant", "ok")), chat(("user", "BAD"), ("assistant", "x"))]
    results = render_samples(tokenizer, rows, 64, faults=(RowError, ValueError))
    assert results[0].input_ids and isinstance(results[1], ValueError)
    assert calls == [2, 1, 1]  # the batch, then each text on its own to find the one at fault


TEXTS = ["<|im_start|>user\nHi 你好<|im_end|>\n", "plain text\n\n  x", "", "a " * 300]


def test_direct_backend_encoding_equals_the_tokenizer_call(tokenizer):
    encoded = tokenizer(TEXTS, add_special_tokens=False, return_offsets_mapping=True)
    expected = [
        (list(i), [tuple(o) for o in offs])
        for i, offs in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
    ]
    assert [(list(i), [tuple(o) for o in offs]) for i, offs in render._encode(tokenizer, TEXTS)] == expected


def test_a_backend_set_to_truncate_is_not_asked_directly(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer._tokenizer.enable_truncation(max_length=8)  # as a tokenizer.json with a truncation section leaves it
    ids, _ = render._encode(tokenizer, ["a " * 300])[0]
    assert len(ids) == len(tokenizer("a " * 300, add_special_tokens=False)["input_ids"]) > 8


def _reference_positions(offsets, spans):
    return [i for i, (start, end) in enumerate(offsets) if end > start and any(start in span for span in spans)]


def test_positions_in_spans_matches_the_definition():
    rng = random.Random(0)
    for _ in range(300):
        offsets, cursor = [], 0
        for _ in range(rng.randint(0, 40)):
            width = rng.choice([0, 0, 1, 2, 3, 5])
            start = cursor if rng.random() > 0.1 else max(0, cursor - rng.randint(1, 4))  # now and then going back
            offsets.append((start, start + width))
            cursor = start + width
        edges = sorted(rng.sample(range(0, cursor + 10), k=min(6, cursor + 10)))
        spans = [range(a, b) for a, b in zip(edges[::2], edges[1::2], strict=False) if b > a]
        rng.shuffle(spans)
        assert positions_in_spans(offsets, spans) == _reference_positions(offsets, spans), (offsets, spans)
