"""tuneforge.data.render (labels from the chat template), packing, the loss and gradient accumulation."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.data import IGNORE_INDEX, Conversation, DataReport, Message, RowError, render_conversation
from tuneforge.data.packing import collate_packed, collate_padded, shifted_targets
from tuneforge.data.pipeline import prepare_samples
from tuneforge.data.render import RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.methods.loss import causal_lm_loss_sum, supervised_token_count
from tuneforge.train.settings import LoopSettings
from tuneforge.train.step import optimizer_step

DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def conversation(*turns: tuple[str, str], **kwargs) -> Conversation:
    return Conversation([Message(role, content) for role, content in turns], **kwargs)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def expected_from_pieces(tokenizer, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """Encode each (text, supervised) piece on its own; labels = ids where supervised, else IGNORE_INDEX."""
    ids: list[int] = []
    labels: list[int] = []
    for text, supervised in pieces:
        piece = encode(tokenizer, text)
        ids += piece
        labels += piece if supervised else [IGNORE_INDEX] * len(piece)
    return ids, labels


MULTI_TURN = conversation(
    ("system", "Be terse."),
    ("user", "What is the capital of France?"),
    ("assistant", "The capital of France is Paris."),
    ("user", "你好！"),
    ("assistant", "你好，世界！今天天气很好。"),
)


# ---------------------------------------------------------------------------------------------------- labels


def test_multi_turn_label_mask_is_exact(tokenizer):
    sample = render_conversation(tokenizer, MULTI_TURN, cutoff_len=512)

    template_ids = tokenizer.apply_chat_template(MULTI_TURN.to_template(), tokenize=True, return_dict=False)
    assert sample.input_ids == template_ids
    assert len(sample.labels) == len(sample.input_ids)
    assert sample.truncated is False

    ids, labels = expected_from_pieces(
        tokenizer,
        [
            ("<|im_start|>system\nBe terse.<|im_end|>\n", False),
            ("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n", False),
            ("<|im_start|>assistant\n", False),
            ("The capital of France is Paris.<|im_end|>\n", True),
            ("<|im_start|>user\n你好！<|im_end|>\n", False),
            ("<|im_start|>assistant\n", False),
            ("你好，世界！今天天气很好。<|im_end|>\n", True),
        ],
    )
    assert ids == sample.input_ids  # the pieces tokenize exactly like the whole (special tokens split them)
    assert sample.labels == labels

    supervised = [label for label in sample.labels if label != IGNORE_INDEX]
    assert (
        tokenizer.decode(supervised)
        == "The capital of France is Paris.<|im_end|>\n你好，世界！今天天气很好。<|im_end|>\n"
    )
    assert sample.supervised_tokens == len(supervised)
    # supervised labels are the token ids themselves, in one contiguous span per assistant turn
    spans, inside = 0, False
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        assert label in (token, IGNORE_INDEX)
        if (label != IGNORE_INDEX) and not inside:
            spans += 1
        inside = label != IGNORE_INDEX
    assert spans == 2
    # exactly two eos tokens are learned: the ends of the two answers
    eos = tokenizer.eos_token_id
    assert supervised.count(eos) == 2
    assert sample.input_ids.count(eos) == 5


def test_default_system_prompt_is_present_and_masked(tokenizer):
    sample = render_conversation(tokenizer, conversation(("user", "Hi"), ("assistant", "Hello!")), 512)
    ids, labels = expected_from_pieces(
        tokenizer,
        [
            (DEFAULT_SYSTEM, False),
            ("<|im_start|>user\nHi<|im_end|>\n", False),
            ("<|im_start|>assistant\n", False),
            ("Hello!<|im_end|>\n", True),
        ],
    )
    assert sample.input_ids == ids
    assert sample.labels == labels
    system_ids = encode(tokenizer, DEFAULT_SYSTEM)
    assert sample.input_ids[: len(system_ids)] == system_ids
    assert tokenizer.decode(sample.input_ids).startswith(DEFAULT_SYSTEM)


def test_truncation(tokenizer):
    full = render_conversation(tokenizer, MULTI_TURN, cutoff_len=512)
    cutoff = len(full.input_ids) - 5
    cut = render_conversation(tokenizer, MULTI_TURN, cutoff_len=cutoff)
    assert cut.truncated is True
    assert cut.input_ids == full.input_ids[:cutoff]
    assert cut.labels == full.labels[:cutoff]

    exact = render_conversation(tokenizer, MULTI_TURN, cutoff_len=len(full.input_ids))
    assert exact.truncated is False and exact.input_ids == full.input_ids

    first_supervised = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    one = render_conversation(tokenizer, MULTI_TURN, cutoff_len=first_supervised + 1)
    assert one.supervised_tokens == 1

    with pytest.raises(RowError) as info:
        render_conversation(tokenizer, MULTI_TURN, cutoff_len=first_supervised)
    assert info.value.reason == "all labels masked"


def test_prepare_samples_counts_truncated_and_dropped(tokenizer):
    short = conversation(("user", "Hi"), ("assistant", "Hello!"), source="s.jsonl:1", dataset="s")
    long = conversation(
        ("user", "Tell me a story."),
        ("assistant", "Once upon a time, in a quiet village near the mountains, there lived an old baker."),
        source="s.jsonl:2",
        dataset="s",
    )
    long_prompt = conversation(("user", "word " * 60), ("assistant", "ok"), source="s.jsonl:3", dataset="s")
    long_full = render_conversation(tokenizer, long, 512)
    first = next(i for i, label in enumerate(long_full.labels) if label != IGNORE_INDEX)
    cutoff = first + 3
    assert len(render_conversation(tokenizer, short, 512).input_ids) <= cutoff < len(long_full.input_ids)
    report = DataReport(total=3)
    samples = prepare_samples([short, long, long_prompt], tokenizer, cutoff, report)
    assert [s.source for s in samples] == ["s.jsonl:1", "s.jsonl:2"]
    assert [s.truncated for s in samples] == [False, True]
    assert report.kept == 1 and report.truncated == 1
    assert report.balanced  # kept + truncated + dropped = total
    assert report.dropped == {"all labels masked": 1}
    assert report.per_dataset == {"s": 2}
    assert report.problems == [
        f"s.jsonl:2: over the cutoff length: longer than data.cutoff_len={cutoff} tokens, cut to it",
        f"s.jsonl:3: all labels masked: no assistant token within the first {cutoff} tokens",
    ]
    with pytest.raises(UserError, match="no training samples left"):
        prepare_samples([long_prompt], tokenizer, cutoff, DataReport(total=1))


# ---------------------------------------------------------------------------------------------------- tools

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TOOL_CONVERSATION = Conversation(
    [
        Message("user", "What is the weather in Paris?"),
        Message("assistant", "", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]),
        Message("tool", '{"temp": 21}'),
        Message("assistant", "It is 21 degrees in Paris."),
    ],
    tools=[WEATHER_TOOL],
)


def test_tool_calls_as_text_for_a_template_without_tool_support(tokenizer):
    assert "tool_calls" not in tokenizer.chat_template
    sample = render_conversation(tokenizer, TOOL_CONVERSATION, 512)
    tools_json = json.dumps(WEATHER_TOOL)
    call_json = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    ids, labels = expected_from_pieces(
        tokenizer,
        [
            (f"<|im_start|>system\nYou may call these tools:\n<tools>\n{tools_json}\n</tools><|im_end|>\n", False),
            ("<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n", False),
            ("<|im_start|>assistant\n", False),
            (f"<tool_call>\n{call_json}\n</tool_call><|im_end|>\n", True),
            ('<|im_start|>tool\n{"temp": 21}<|im_end|>\n', False),
            ("<|im_start|>assistant\n", False),
            ("It is 21 degrees in Paris.<|im_end|>\n", True),
        ],
    )
    assert sample.input_ids == ids
    assert sample.labels == labels
    supervised_text = tokenizer.decode([label for label in sample.labels if label != IGNORE_INDEX])
    assert "<tools>" not in supervised_text and "get_weather" in supervised_text
    # the input Conversation is not modified by rendering
    assert TOOL_CONVERSATION.messages[1].tool_calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert TOOL_CONVERSATION.messages[1].content == ""


def test_tool_definitions_are_appended_to_an_existing_system_prompt(tokenizer):
    conv = copy.deepcopy(TOOL_CONVERSATION)
    conv.messages.insert(0, Message("system", "Be terse."))
    text = tokenizer.decode(render_conversation(tokenizer, conv, 512).input_ids)
    assert text.startswith(
        f"<|im_start|>system\nBe terse.\n\nYou may call these tools:\n<tools>\n{json.dumps(WEATHER_TOOL)}\n</tools>"
        "<|im_end|>\n<|im_start|>user\n"
    )


TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_template_with_tool_support_gets_tools_natively(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.chat_template = TOOL_TEMPLATE
    sample = render_conversation(tok, TOOL_CONVERSATION, 512)
    text = tok.decode(sample.input_ids)
    assert text == tok.apply_chat_template(TOOL_CONVERSATION.to_template(), tools=[WEATHER_TOOL], tokenize=False)
    assert "<tool_call>" not in text
    supervised_text = tok.decode([label for label in sample.labels if label != IGNORE_INDEX])
    assert supervised_text == "CALL get_weather<|im_end|>\nIt is 21 degrees in Paris.<|im_end|>\n"


def test_template_that_is_not_prefix_stable_is_rejected(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.chat_template = "{{ messages | length }}" + TOOL_TEMPLATE
    with pytest.raises(RowError) as info:
        render_conversation(tok, conversation(("user", "Hi"), ("assistant", "Hello")), 512)
    assert info.value.reason == "template not prefix-stable"


# ---------------------------------------------------------------------------------------------------- packing

THREE = [
    conversation(("user", "What is the capital of France?"), ("assistant", "The capital of France is Paris.")),
    MULTI_TURN,
    conversation(
        ("user", "Tell me a story."),
        (
            "assistant",
            "Once upon a time, in a quiet village near the mountains, there lived an old baker who loved music.",
        ),
    ),
]


@pytest.fixture(scope="module")
def three_samples(tokenizer) -> list[RenderedSample]:
    samples = [render_conversation(tokenizer, c, 512) for c in THREE]
    assert len({len(s.input_ids) for s in samples}) == 3
    return samples


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, tiny_llama_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, dtype=torch.float32, attn_implementation=request.param
    )
    model.eval()
    return model


def test_collate_packed_layout(three_samples):
    batch = collate_packed(three_samples)
    lengths = [len(s.input_ids) for s in three_samples]
    assert batch["input_ids"].shape == batch["position_ids"].shape == batch["targets"].shape == (1, sum(lengths))
    assert batch["input_ids"][0].tolist() == sum((s.input_ids for s in three_samples), [])
    positions = batch["position_ids"][0].tolist()
    starts = [0, lengths[0], lengths[0] + lengths[1]]
    assert [i for i, p in enumerate(positions) if p == 0] == starts
    assert positions == list(range(lengths[0])) + list(range(lengths[1])) + list(range(lengths[2]))
    # targets are shifted within each sample: a sample's last position never predicts the next sample
    targets = batch["targets"][0].tolist()
    for start, length, sample in zip(starts, lengths, three_samples, strict=True):
        assert targets[start : start + length] == sample.labels[1:] + [IGNORE_INDEX]
    assert supervised_token_count(batch) == sum(s.supervised_tokens for s in three_samples)


def test_collate_padded_layout(three_samples):
    batch = collate_padded(three_samples, pad_id=0)
    width = max(len(s.input_ids) for s in three_samples)
    assert batch["input_ids"].shape == (3, width)
    for row, sample in enumerate(three_samples):
        n = len(sample.input_ids)
        assert batch["input_ids"][row].tolist() == sample.input_ids + [0] * (width - n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["targets"][row].tolist() == shifted_targets(sample.labels) + [IGNORE_INDEX] * (width - n)
    assert supervised_token_count(batch) == sum(s.supervised_tokens for s in three_samples)


def test_shifted_targets():
    assert shifted_targets([IGNORE_INDEX, 5, 6]) == [5, 6, IGNORE_INDEX]


@torch.no_grad()
def test_packed_and_padded_losses_equal_the_sum_of_single_losses(model, three_samples):
    singles = [float(causal_lm_loss_sum(model, collate_packed([s]))) for s in three_samples]
    total = sum(singles)
    packed = float(causal_lm_loss_sum(model, collate_packed(three_samples)))
    padded = float(causal_lm_loss_sum(model, collate_padded(three_samples, pad_id=0)))
    assert packed == pytest.approx(total, rel=1e-4)
    assert padded == pytest.approx(total, rel=1e-4)

    # a single sample's loss_sum equals a plain forward pass with shifted cross-entropy
    sample = three_samples[1]
    logits = model(input_ids=torch.tensor([sample.input_ids])).logits[0, :-1]
    reference = torch.nn.functional.cross_entropy(
        logits, torch.tensor(sample.labels[1:]), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    assert singles[1] == pytest.approx(float(reference), rel=1e-5)

    # control: without restarting position_ids the samples see each other and the sum changes
    naive = collate_packed(three_samples)
    naive["position_ids"] = torch.arange(naive["input_ids"].shape[1])[None]
    leaked = float(causal_lm_loss_sum(model, naive))
    assert leaked != pytest.approx(total, rel=1e-4)
    assert abs(leaked - total) > 20 * abs(packed - total)


# ---------------------------------------------------------------------------------------------------- accumulation


def _settings(packing: bool) -> LoopSettings:
    return LoopSettings(
        learning_rate=1e-3,
        epochs=1,
        max_steps=1,
        batch_size=2,
        grad_accum=2,
        max_grad_norm=0.0,  # no clipping, so the raw gradients are compared
        scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        seed=0,
        eval_steps=None,
        logging_steps=1,
        packing=packing,
        pad_id=0,
    )


def _gradients(model, method, groups, packing: bool) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    settings = _settings(packing)
    batches = [method.collate(group, settings.packing, settings.pad_id) for group in groups]
    loss = optimizer_step(model, method, batches, settings, step=1).loss
    grads = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss, grads


def test_gradient_accumulation_matches_one_big_batch(tiny_llama_dir, tokenizer, three_samples):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()  # no dropout; gradients still flow
    method = METHODS.get("sft").bind()
    s4 = render_conversation(tokenizer, conversation(("user", "Hi"), ("assistant", "Hello!")), 512)
    s1, s2, s3 = three_samples
    counts = [s.supervised_tokens for s in (s1, s2, s3, s4)]
    # the two micro-batches hold different numbers of supervised tokens, so naive averaging would differ
    assert counts[0] + counts[1] != counts[2] + counts[3]

    big_loss, big = _gradients(model, method, [[s1, s2, s3, s4]], packing=True)
    acc_loss, acc = _gradients(model, method, [[s1, s2], [s3, s4]], packing=True)
    pad_loss, pad = _gradients(model, method, [[s1, s2], [s3, s4]], packing=False)
    assert acc_loss == pytest.approx(big_loss, rel=1e-5)
    assert pad_loss == pytest.approx(big_loss, rel=1e-5)
    assert all(float(g.abs().max()) > 0 for g in big)  # every parameter learns: the comparisons below are not 0 == 0
    for reference, accumulated, padded in zip(big, acc, pad, strict=True):
        torch.testing.assert_close(accumulated, reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(padded, reference, rtol=1e-5, atol=1e-5)

    # control: averaging each micro-batch's mean loss (the usual mistake) gives different gradients
    model.zero_grad(set_to_none=True)
    for group in ([s1, s2], [s3, s4]):
        batch = method.collate(group, True, 0)
        (method.loss(model, batch).loss / method.count(batch) / 2).backward()
    naive = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    assert not all(torch.allclose(n, r, rtol=1e-5, atol=1e-5) for n, r in zip(naive, big, strict=True))
