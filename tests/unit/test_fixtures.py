"""Sanity checks for the offline tiny-model / tokenizer test fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from fixtures.tiny_models import (
    CHATML_TEMPLATE,
    EOS_TOKEN,
    PAD_TOKEN,
    build_tiny_model,
    build_tokenizer,
    write_json,
    write_jsonl,
)

ENGLISH = "Hello world! The quick brown fox jumps over the lazy dog, 3 times at 10:45."
CHINESE = "你好，世界！机器学习模型从数据中学习规律。"
MIXED = "  Mixed 文本 with\ttabs,\nnewlines, emoji 😀, accents éàü and unseen words zyxwv.  "

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "你好！"},
]
EXPECTED_CHAT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n"
    "<|im_start|>user\n你好！<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    build_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_offline_env_is_set():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert Path(os.environ["TUNEFORGE_HOME"]).is_dir()


def test_tokenizer_special_tokens(tokenizer):
    assert 500 <= len(tokenizer) <= 1000
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert tokenizer.pad_token == PAD_TOKEN and tokenizer.pad_token_id == 0
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.eos_token_id == 2
    # special tokens in raw text are matched as single tokens, and no bos/eos is added implicitly
    assert tokenizer("<|im_start|>user\nhi<|im_end|>")["input_ids"][0] == 1
    assert tokenizer("<|im_start|>user\nhi<|im_end|>")["input_ids"][-1] == 2
    assert tokenizer("hi")["input_ids"] == tokenizer("hi", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, MIXED, ""])
def test_tokenizer_round_trip(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    if text:
        # the tiny vocabulary still learned merges: fewer tokens than UTF-8 bytes
        assert len(ids) < len(text.encode("utf-8"))


def test_tokenizer_offsets(tokenizer):
    text = "Hello 你好 world"
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    pieces = [text[a:b] for a, b in enc["offset_mapping"]]
    assert "".join(pieces) == text


def test_chat_template_renders(tokenizer_dir, tokenizer):
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert (tokenizer_dir / "tokenizer.json").is_file()
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert text == EXPECTED_CHAT

    with_system = [{"role": "system", "content": "Be terse."}, *CONVERSATION[:2]]
    text = tokenizer.apply_chat_template(with_system, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe terse.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n"
    )


def test_chat_template_tokenize(tokenizer):
    # transformers 5: tokenize=True returns a BatchEncoding (return_dict defaults to True)
    enc = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, add_generation_prompt=True)
    ids = enc["input_ids"] if hasattr(enc, "keys") else enc
    assert ids == tokenizer(EXPECTED_CHAT, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == EXPECTED_CHAT
    assert ids[0] == 1 and ids.count(2) == 4

    ids_list = tokenizer.apply_chat_template(
        CONVERSATION, tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert ids_list == ids


@pytest.mark.parametrize("fixture_name,model_type", [("tiny_llama_dir", "llama"), ("tiny_qwen_dir", "qwen2")])
def test_tiny_models_load_and_run(request, fixture_name, model_type):
    model_dir: Path = request.getfixturevalue(fixture_name)
    assert (model_dir / "model.safetensors").is_file()
    gen_cfg = json.loads((model_dir / "generation_config.json").read_text())
    assert gen_cfg["eos_token_id"] == 2 and gen_cfg["pad_token_id"] == 0

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    assert model.config.model_type == model_type
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert model.get_input_embeddings().weight.std().item() > 0

    ids = tok.apply_chat_template(CONVERSATION, tokenize=True, add_generation_prompt=True, return_tensors="pt")
    input_ids = ids["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    assert logits.shape == (1, input_ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_qwen3_builds(tmp_path):
    out = build_tiny_model(tmp_path / "q3", arch="qwen3")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "qwen3"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 5, 6, 2]])).logits
    assert logits.shape == (1, 4, model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_unknown_arch_and_template(tmp_path):
    with pytest.raises(ValueError):
        build_tiny_model(tmp_path / "x", arch="gpt9")
    with pytest.raises(ValueError):
        build_tokenizer(tmp_path / "y", template="nope")


def test_build_is_deterministic(tmp_path):
    a = load_file(build_tiny_model(tmp_path / "a", arch="llama", seed=0) / "model.safetensors")
    b = load_file(build_tiny_model(tmp_path / "b", arch="llama", seed=0) / "model.safetensors")
    c = load_file(build_tiny_model(tmp_path / "c", arch="llama", seed=1) / "model.safetensors")
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_write_helpers(tmp_path):
    rows = [{"instruction": "Say hi", "output": "hi"}, {"instruction": "中文", "output": "你好"}]
    path = write_jsonl(tmp_path / "sub" / "data.jsonl", rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert "你好" in lines[1]

    obj = {"a": [1, 2], "b": "文本"}
    path = write_json(tmp_path / "other" / "x.json", obj)
    assert json.loads(path.read_text(encoding="utf-8")) == obj
