"""GGUF export of tiny Llama / Qwen2 / Qwen3 models, checked by reading the files back with transformers and gguf."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2Config

from fixtures.tiny_models import CHATML_TEMPLATE, build_tiny_model
from tuneforge import __version__
from tuneforge.errors import UserError
from tuneforge.export.gguf import EXPORT_KEY, export_gguf
from tuneforge.export.gguf_tensors import llama3_rope_factors

ARCHS = ("llama", "qwen2", "qwen3")
PROMPTS = ["The capital of France is", "你好，世界！", "Once upon a time, in a quiet village", "def add(a, b):"]
TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog, 3 times at 10:45.",
    "你好，世界！机器学习模型从数据中学习规律。",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
    "  Mixed 文本 with\ttabs,\nnewlines, emoji 😀, accents éàü and 12345 digits.  ",
]
CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "你好！"},
]
NEW_TOKENS = 24
CONTROL, NORMAL = int(gguf.TokenType.CONTROL), int(gguf.TokenType.NORMAL)


# ------------------------------------------------------------------------------------------------ helpers


def _variant(src: Path, out: Path, **overrides: Any) -> Path:
    """A copy of the tiny model at ``src`` with config fields changed and fresh random weights."""
    out.mkdir(parents=True)
    for path in src.iterdir():
        if path.name.startswith("tokenizer") or path.name in ("chat_template.jinja", "generation_config.json"):
            shutil.copy(path, out / path.name)
    config = AutoConfig.from_pretrained(src)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.model.norm.weight.fill_(8.0)  # a realistic logit scale, as build_tiny_model sets
    model.save_pretrained(out)
    return out


def _copy_without(src: Path, dst: Path, *names: str) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*names))
    return dst


def _load(path: Path) -> Any:
    """The model in a GGUF file, as transformers loads it (dequantised to float32)."""
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()


def _load_tokenizer(path: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _greedy(model: Any, tokenizer: Any, prompt: str) -> tuple[list[int], float]:
    """Greedy continuation of ``prompt`` and the smallest gap between the two best logits along the way."""
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
    gaps = [float(top[0] - top[1]) for top in (scores[0].topk(2).values for scores in out.scores)]
    return out.sequences[0].tolist(), min(gaps)


def _logits(model: Any, tokenizer: Any) -> torch.Tensor:
    ids = tokenizer(" ".join(PROMPTS), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def _fields(path: Path) -> dict[str, Any]:
    """Every metadata key of a GGUF file with its value."""
    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items()}


def _tensors(path: Path) -> dict[str, Any]:
    """Tensor name -> ReaderTensor."""
    return {tensor.name: tensor for tensor in gguf.GGUFReader(path).tensors}


def _expected_tensor_names(arch: str, layers: int = 2) -> set[str]:
    per_layer = [
        "attn_norm",
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_norm",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ]
    per_layer += {"llama": [], "qwen2": [], "qwen3": ["attn_q_norm", "attn_k_norm"]}[arch]
    names = {f"blk.{i}.{part}.weight" for i in range(layers) for part in per_layer}
    if arch == "qwen2":
        names |= {f"blk.{i}.attn_{x}.bias" for i in range(layers) for x in "qkv"}
    return names | {"token_embd.weight", "output_norm.weight"}


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Qwen3 with head_dim 128: transformers reads no head size from a Qwen3 GGUF file and assumes 128."""
    base = build_tiny_model(tmp_path_factory.mktemp("tiny_qwen3_base"), arch="qwen3", seed=0)
    return _variant(base, tmp_path_factory.mktemp("tiny_qwen3") / "model", head_dim=128)


@pytest.fixture(scope="module")
def model_dirs(tiny_llama_dir: Path, tiny_qwen_dir: Path, tiny_qwen3_dir: Path) -> dict[str, Path]:
    return {"llama": tiny_llama_dir, "qwen2": tiny_qwen_dir, "qwen3": tiny_qwen3_dir}


@pytest.fixture(scope="module")
def exported(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``exported(arch, dtype)``: the GGUF file of that tiny model, each in a folder of its own (written once)."""
    root = tmp_path_factory.mktemp("gguf")
    done: dict[tuple[str, str], Path] = {}

    def get(arch: str, dtype: str) -> Path:
        if (arch, dtype) not in done:
            done[arch, dtype] = export_gguf(model_dirs[arch], root / f"{arch}-{dtype}" / "model.gguf", dtype)
        return done[arch, dtype]

    return get


@pytest.fixture(scope="module")
def original(model_dirs: dict[str, Path]) -> Callable[[str], tuple[Any, Any]]:
    """``original(arch)``: the tiny model and tokenizer loaded from their Hugging Face folder."""
    done: dict[str, tuple[Any, Any]] = {}

    def get(arch: str) -> tuple[Any, Any]:
        if arch not in done:
            folder = str(model_dirs[arch])
            done[arch] = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
        return done[arch]

    return get


# ------------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("arch", ARCHS)
def test_f32_round_trip_is_exact(arch: str, exported, original) -> None:
    model, tokenizer = original(arch)
    loaded = _load(exported(arch, "f32"))
    state = loaded.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name
    for prompt in PROMPTS:
        assert _greedy(loaded, tokenizer, prompt)[0] == _greedy(model, tokenizer, prompt)[0], prompt


@pytest.mark.parametrize("arch", ARCHS)
def test_f16_gives_the_same_greedy_tokens(arch: str, exported, original) -> None:
    model, tokenizer = original(arch)
    loaded = _load(exported(arch, "f16"))
    error = (_logits(loaded, tokenizer) - _logits(model, tokenizer)).abs().max().item()
    assert error < 0.01
    for prompt in PROMPTS:
        tokens, gap = _greedy(model, tokenizer, prompt)
        # Rounding to f16 moves a logit by `error`; a token choice could only flip where the two best logits are
        # closer than twice that. These prompts have no such near-tie, so equality is a property, not luck.
        assert gap > 2 * error, f"prompt {prompt!r} has a near-tie ({gap:.4f}); pick another prompt"
        assert _greedy(loaded, tokenizer, prompt)[0] == tokens, prompt


@pytest.mark.parametrize("dtype", ["bf16", "q8_0"])
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_and_q8_0_load_and_stay_close(arch: str, dtype: str, exported, original) -> None:
    path = exported(arch, dtype)
    fields = _fields(path)
    expected_type = {"bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    assert fields["general.file_type"] == expected_type
    matrix_type = {"bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[dtype]
    for name, tensor in _tensors(path).items():
        one_d = len(tensor.shape) == 1
        assert tensor.tensor_type == (gguf.GGMLQuantizationType.F32 if one_d else matrix_type), name

    model, tokenizer = original(arch)
    error = (_logits(_load(path), tokenizer) - _logits(model, tokenizer)).abs().max().item()
    assert error < 0.15  # logits reach about ±8; seen: bf16 ≈ 0.02, q8_0 ≈ 0.06


LOW_BIT = ["q5_1", "q5_0", "q4_1", "q4_0"]


@pytest.mark.parametrize("dtype", LOW_BIT)
def test_low_bit_types_quantize_the_matrices_and_keep_the_output_matrix_at_q8_0(
    dtype: str, exported, original
) -> None:
    path = exported("llama", dtype)
    T = gguf.GGMLQuantizationType
    assert _fields(path)["general.file_type"] == gguf.LlamaFileType[f"MOSTLY_{dtype.upper()}"]
    types = {name: tensor.tensor_type for name, tensor in _tensors(path).items()}
    assert types.pop("token_embd.weight") == T.Q8_0  # tied: it is the output matrix too
    assert {name: t for name, t in types.items() if name.endswith("norm.weight")} == {
        name: T.F32 for name in types if name.endswith("norm.weight")
    }
    assert {t for name, t in types.items() if not name.endswith("norm.weight")} == {T[dtype.upper()]}
    sizes = {d: exported("llama", d).stat().st_size for d in ("f16", "q8_0", dtype)}
    assert sizes[dtype] < sizes["q8_0"] < sizes["f16"]

    model, tokenizer = original("llama")
    error = (_logits(_load(path), tokenizer) - _logits(model, tokenizer)).abs().max().item()
    assert error < 1.0  # logits reach about ±8; 4-bit blocks of 32 move them by tenths (llama.cpp: tests/engines)


def test_untied_low_bit_export_keeps_output_at_q8_0_and_quantizes_the_embeddings(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    folder = _variant(tiny_llama_dir, tmp_path / "untied", tie_word_embeddings=False)
    types = {name: t.tensor_type for name, t in _tensors(export_gguf(folder, tmp_path / "q4.gguf", "q4_0")).items()}
    assert types["output.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.Q4_0


def test_untied_output_is_written_and_loads(tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder = _variant(tiny_llama_dir, tmp_path / "untied", tie_word_embeddings=False)
    path = export_gguf(folder, tmp_path / "out" / "untied.gguf", "f32")
    model = AutoModelForCausalLM.from_pretrained(folder)
    np.testing.assert_array_equal(
        np.asarray(_tensors(path)["output.weight"].data), model.lm_head.weight.detach().numpy()
    )
    loaded = _load(path)
    assert not loaded.config.tie_word_embeddings
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_qwen_weights_are_stored_as_hugging_face_lays_them_out(tmp_path: Path) -> None:
    """Qwen q/k rows are not reordered (llama.cpp runs Qwen with the same rotary layout as Hugging Face)."""
    folder = build_tiny_model(tmp_path / "qwen3", arch="qwen3", seed=1)
    path = export_gguf(folder, tmp_path / "out" / "qwen3.gguf", "f32")
    weights = load_file(folder / "model.safetensors")
    tensors = _tensors(path)
    for gguf_name, hf_name in [
        ("blk.1.attn_q.weight", "model.layers.1.self_attn.q_proj.weight"),
        ("blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight"),
        ("blk.1.attn_q_norm.weight", "model.layers.1.self_attn.q_norm.weight"),
    ]:
        np.testing.assert_array_equal(np.asarray(tensors[gguf_name].data), weights[hf_name].numpy())


def test_qwen3_head_dim_other_than_128_is_written_with_a_warning(tmp_path: Path, caplog) -> None:
    folder = build_tiny_model(tmp_path / "qwen3", arch="qwen3", seed=0)  # head_dim 16
    with caplog.at_level(logging.WARNING, logger="tuneforge.export.gguf"):
        path = export_gguf(folder, tmp_path / "out" / "qwen3.gguf", "f16")
    assert "head_dim 16" in caplog.text
    fields = _fields(path)
    assert fields["qwen3.rope.dimension_count"] == 16
    assert "qwen3.attention.key_length" not in fields  # equal to hidden / heads: llama.cpp derives it


# ----------------------------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata_and_tensor_names(arch: str, exported, model_dirs) -> None:
    config = json.loads((model_dirs[arch] / "config.json").read_text())
    path = exported(arch, "f16")
    fields = _fields(path)
    head_dim = config["head_dim"]
    expected = {
        "general.architecture": arch,
        "general.name": model_dirs[arch].name,
        "general.file_type": gguf.LlamaFileType.MOSTLY_F16,
        f"{arch}.context_length": 512,
        f"{arch}.embedding_length": 64,
        f"{arch}.block_count": 2,
        f"{arch}.feed_forward_length": 128,
        f"{arch}.attention.head_count": 4,
        f"{arch}.attention.head_count_kv": 2,
        f"{arch}.rope.freq_base": 10000.0,
        f"{arch}.rope.dimension_count": head_dim,
        f"{arch}.vocab_size": 768,
    }
    assert {key: fields.get(key) for key in expected} == expected
    assert fields[EXPORT_KEY] == f"tuneforge {__version__}"
    assert fields[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"])
    has_key_length = head_dim != 64 // 4  # only the head_dim-128 Qwen3
    assert (fields.get(f"{arch}.attention.key_length") == head_dim) is has_key_length
    assert (fields.get(f"{arch}.attention.value_length") == head_dim) is has_key_length

    tensors = _tensors(path)
    assert set(tensors) == _expected_tensor_names(arch)  # tied embeddings: no output.weight
    for name, tensor in tensors.items():
        expected_type = gguf.GGMLQuantizationType.F32 if len(tensor.shape) == 1 else gguf.GGMLQuantizationType.F16
        assert tensor.tensor_type == expected_type, name


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_metadata_and_chat_template(arch: str, exported, model_dirs) -> None:
    fields = _fields(exported(arch, "f16"))
    assert fields["tokenizer.chat_template"] == CHATML_TEMPLATE
    assert fields["tokenizer.ggml.model"] == "gpt2"
    # transformers gives qwen2 folders its own Qwen2 split regex, whatever tokenizer.json says; the file follows it
    assert fields["tokenizer.ggml.pre"] == ("qwen2" if arch == "qwen2" else "gpt-2")
    ids = {key: fields[f"tokenizer.ggml.{key}_token_id"] for key in ("bos", "eos", "padding", "unknown")}
    assert ids == {"bos": 0, "eos": 2, "padding": 0, "unknown": 3}
    assert fields["tokenizer.ggml.add_bos_token"] is False
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert tokens[:4] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    assert list(types[:4]) == [CONTROL] * 4 and set(types[4:]) == {NORMAL}
    assert len(tokens) == len(types) == 768
    merges = json.loads((model_dirs[arch] / "tokenizer.json").read_text())["model"]["merges"]
    assert fields["tokenizer.ggml.merges"] == [" ".join(pair) for pair in merges]


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_round_trips(arch: str, exported, original) -> None:
    _, tokenizer = original(arch)
    loaded = _load_tokenizer(exported(arch, "f16"))
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids, text
        assert loaded.decode(ids) == text
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert loaded.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True) == rendered


def test_chat_template_from_tokenizer_config(tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder = _copy_without(tiny_llama_dir, tmp_path / "m", "chat_template.jinja")
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["chat_template"] = "{{ messages[0]['content'] }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    path = export_gguf(folder, tmp_path / "out" / "model.gguf", "f16")
    assert _fields(path)["tokenizer.chat_template"] == "{{ messages[0]['content'] }}"


def test_pre_tokenizer_names_follow_the_split_rules() -> None:
    from tuneforge.export.gguf_vocab import LLAMA3_SPLIT, QWEN2_SPLIT, pre_tokenizer_name

    def split_then_bytes(regex: str) -> dict[str, Any]:
        split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
        return {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, {"type": "ByteLevel"}]}}

    digits = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, {"type": "ByteLevel"}],
    }
    plain = {"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}
    assert pre_tokenizer_name(split_then_bytes(QWEN2_SPLIT), "qwen2.5-0.5b") == "qwen2"
    assert pre_tokenizer_name(split_then_bytes(LLAMA3_SPLIT), "llama-3.2-1b") == "llama-bpe"
    assert pre_tokenizer_name({"pre_tokenizer": digits}, "anything") == "smollm"
    assert pre_tokenizer_name(plain, "smollm2-135m-instruct") == "smollm"
    assert pre_tokenizer_name(plain, "my-model") == "gpt-2"
    assert pre_tokenizer_name(split_then_bytes(r"\s+"), "my-model") == "default"


def test_llama3_rope_scaling_becomes_rope_freqs(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=16, rope_parameters=rope)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    plain = 1.0 / 500000.0 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16)
    factors = llama3_rope_factors(16, 500000.0, rope)
    assert len(set(np.round(factors, 3))) > 2  # some frequencies kept, some divided by 8, some in between
    np.testing.assert_allclose(factors, (plain / scaled).numpy(), rtol=1e-5)

    folder = _variant(tiny_llama_dir, tmp_path / "llama3", rope_parameters=rope)
    tensors = _tensors(export_gguf(folder, tmp_path / "out" / "llama3.gguf", "f16"))
    np.testing.assert_allclose(np.asarray(tensors["rope_freqs.weight"].data), factors)


# ---------------------------------------------------------------------------------------------- inputs


def test_sharded_folder_gives_the_same_file(tiny_llama_dir: Path, tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir).save_pretrained(sharded, max_shard_size="60KB")
    for path in tiny_llama_dir.iterdir():
        if path.name.startswith("tokenizer") or path.name == "chat_template.jinja":
            shutil.copy(path, sharded / path.name)
    weight_map = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(weight_map) == set(load_file(tiny_llama_dir / "model.safetensors"))
    assert len(list(sharded.glob("*.safetensors"))) > 2

    whole = export_gguf(tiny_llama_dir, tmp_path / "whole.gguf", "q8_0", name="tiny")
    parts = export_gguf(sharded, tmp_path / "parts.gguf", "q8_0", name="tiny")
    assert parts.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("dtype", ["q8_0", "q4_1"])
def test_block_types_keep_f16_for_rows_not_in_32_blocks(
    dtype: str, tiny_llama_dir: Path, tmp_path: Path, caplog
) -> None:
    folder = _variant(tiny_llama_dir, tmp_path / "odd", intermediate_size=48)  # ffn_down rows hold 48 values
    with caplog.at_level(logging.WARNING, logger="tuneforge.export.gguf"):
        path = export_gguf(folder, tmp_path / "out" / "odd.gguf", dtype)
    types = {name: tensor.tensor_type for name, tensor in _tensors(path).items()}
    assert types["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType[dtype.upper()]
    assert "blk.1.ffn_down.weight" in caplog.text
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (_logits(_load(path), tokenizer) - _logits(model, tokenizer)).abs().max().item() < (
        0.15 if dtype == "q8_0" else 1.0
    )


def test_tuneforge_loads_the_exported_file(exported, original) -> None:
    from tuneforge.models.load import load_model

    model, tokenizer = original("llama")
    loaded = load_model(str(exported("llama", "f16")), dtype="float32")
    assert loaded.tokenizer.chat_template == CHATML_TEMPLATE
    for prompt in PROMPTS[:2]:
        assert _greedy(loaded.model, loaded.tokenizer, prompt)[0] == _greedy(model, tokenizer, prompt)[0]


# ---------------------------------------------------------------------------------------------- errors


def test_unsupported_architecture_names_it_and_the_supported_ones(tmp_path: Path) -> None:
    GPT2Config(n_layer=1, n_embd=32, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UserError, match=r"'gpt2' \(GPT2LMHeadModel\).*llama, qwen2, qwen3"):
        export_gguf(tmp_path / "gpt2", tmp_path / "gpt2.gguf")
    assert not (tmp_path / "gpt2.gguf").exists()


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("dtype", "unknown GGUF dtype 'q4_k_m'; choose one of f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0"),
        ("missing", "does not exist"),
        ("adapter", "LoRA adapter"),
        ("no-tokenizer", "cannot load the tokenizer"),
        ("no-weights", "no .safetensors weights"),
    ],
)
def test_user_errors(case: str, match: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder, dtype = tiny_llama_dir, "f16"
    if case == "dtype":
        dtype = "q4_k_m"
    elif case == "missing":
        folder = tmp_path / "nowhere"
    elif case == "adapter":
        folder = tmp_path / "adapter"
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}")
    elif case == "no-tokenizer":
        folder = _copy_without(tiny_llama_dir, tmp_path / "m", "tokenizer*", "chat_template.jinja")
    elif case == "no-weights":
        folder = _copy_without(tiny_llama_dir, tmp_path / "m", "*.safetensors")
    with pytest.raises(UserError, match=match):
        export_gguf(folder, tmp_path / "out.gguf", dtype)


def test_failed_export_leaves_the_previous_file_and_no_temporary(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    import tuneforge.export.gguf as module

    target = export_gguf(tiny_llama_dir, tmp_path / "model.gguf", "f16", name="previous")
    previous = target.read_bytes()
    temporaries: list[str] = []

    def broken(*args: Any) -> Any:  # fails once the header and metadata are on disk, under a temporary name
        temporaries.extend(p.name for p in tmp_path.iterdir() if p.name != "model.gguf")
        raise OSError("disk full")

    monkeypatch.setattr(module, "encoded_tensors", broken)
    with pytest.raises(OSError, match="disk full"):
        export_gguf(tiny_llama_dir, target, "f32")
    assert target.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]
    assert len(temporaries) == 1 and re.fullmatch(r"\.model\.gguf\.tmp-\w{8,}", temporaries[0]), temporaries


def _foreign_gguf(path: Path) -> Path:
    """A valid GGUF file that tuneforge did not write (no tuneforge.export key)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("someone else's model")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.scenario("export_refusals")
@pytest.mark.parametrize("existing", ["text file", "foreign gguf", "link to our gguf"])
def test_an_existing_file_is_replaced_only_when_export_wrote_it(
    existing: str, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    ours = export_gguf(tiny_llama_dir, tmp_path / "ours.gguf", "f16", name="first")
    target = tmp_path / "model.gguf"
    if existing == "text file":
        target.write_text("my notes, not a model")
    elif existing == "foreign gguf":
        _foreign_gguf(target)
    else:
        target.symlink_to(ours)
    before = target.read_bytes()
    with pytest.raises(UserError, match="exists and is not a GGUF file written by tuneforge"):
        export_gguf(tiny_llama_dir, target, "f16")
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf", "ours.gguf"]

    replaced = export_gguf(tiny_llama_dir, ours, "f16", name="second")  # an earlier export of ours is replaced
    assert _fields(replaced)["general.name"] == "second"
