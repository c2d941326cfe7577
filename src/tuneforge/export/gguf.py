"""Write a merged Hugging Face causal LM folder (Llama, Qwen2, Qwen3) as one GGUF file.

The folder needs ``config.json``, safetensors weights (one file or shards listed by
``model.safetensors.index.json``) and a byte-level BPE tokenizer (GPT-2 style, as Llama 3, Qwen and SmolLM2
use). The GGUF file carries the weights, the model hyperparameters, the tokenizer and the chat template, so
llama.cpp, Ollama and ``transformers`` (``from_pretrained(folder, gguf_file=name)``) can run it on its own.

Weights are read one tensor at a time and written straight to the file, so memory stays near the size
of the largest tensor.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import UserError
from tuneforge.export.gguf_vocab import (  # noqa: F401  (the split patterns are re-exported for tests)
    _LLAMA3_SPLIT,
    _QWEN2_SPLIT,
    _add_tokenizer_metadata,
    _pre_tokenizer_name,
    _read_vocab,
    _Vocab,
)

__all__ = ["DTYPES", "SUPPORTED_ARCHITECTURES", "export_gguf"]

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")
DTYPES = ("f32", "f16", "bf16", "q8_0")

# Hugging Face module path (inside ``model.``) -> GGUF tensor kind; ``{bid}`` is the layer index.
_GLOBAL_TENSORS = {"embed_tokens": "TOKEN_EMBD", "norm": "OUTPUT_NORM"}
_LAYER_TENSORS = {
    "input_layernorm": "ATTN_NORM",
    "self_attn.q_proj": "ATTN_Q",
    "self_attn.k_proj": "ATTN_K",
    "self_attn.v_proj": "ATTN_V",
    "self_attn.o_proj": "ATTN_OUT",
    "self_attn.q_norm": "ATTN_Q_NORM",
    "self_attn.k_norm": "ATTN_K_NORM",
    "post_attention_layernorm": "FFN_NORM",
    "mlp.gate_proj": "FFN_GATE",
    "mlp.up_proj": "FFN_UP",
    "mlp.down_proj": "FFN_DOWN",
}
# Buffers some checkpoints save that the GGUF format recomputes.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

# transformers rebuilds a Qwen3 config from GGUF metadata without reading the head size.
_TRANSFORMERS_QWEN3_HEAD_DIM = 128


def export_gguf(model_dir: Path, out_file: Path, dtype: str = "f16", *, name: str | None = None) -> Path:
    """Convert the Hugging Face model folder ``model_dir`` into the GGUF file ``out_file`` and return its path.

    ``dtype`` is one of ``f32``, ``f16``, ``bf16`` or ``q8_0``; norms and other 1-D tensors always stay f32, and
    with ``q8_0`` a matrix whose rows are not a multiple of 32 values is stored as f16. ``name`` becomes
    ``general.name`` (default: the folder name). The file is written under a temporary name in the same folder
    and renamed into place, so ``out_file`` is either complete or untouched.
    """
    import gguf

    model_dir, out_file = Path(model_dir).expanduser(), Path(out_file).expanduser()
    qtype = _requested_type(dtype)
    config = _read_config(model_dir)
    arch = _architecture(config)
    hparams = _Hparams.from_config(config)
    files = _weight_files(model_dir)
    shapes = _weight_shapes(files)
    plan = _plan_tensors(arch, hparams, shapes, qtype)
    vocab = _read_vocab(model_dir, config, n_vocab=shapes[_embedding_key(shapes)][0])
    name = name or model_dir.resolve().name

    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.is_dir():
        raise UserError(f"{out_file} is a folder; give the path of the .gguf file to write")
    writer = gguf.GGUFWriter(None, arch)
    _add_model_metadata(writer, hparams, name, vocab.n_vocab, qtype)
    _add_tokenizer_metadata(writer, vocab)
    _write_atomically(writer, plan, files, out_file)
    _report_fallbacks(plan, qtype)
    _warn_unreadable_head_dim(arch, hparams)
    return out_file


# ----------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class _Hparams:
    """The model shape and rotary settings the GGUF metadata needs, read from ``config.json``."""

    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    context_length: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] = field(default_factory=dict)
    tie_word_embeddings: bool | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _Hparams:
        """Read the fields; a missing required one is reported with the key name."""
        heads = _required(config, "num_attention_heads")
        hidden = _required(config, "hidden_size")
        rope = {**(config.get("rope_scaling") or {}), **(config.get("rope_parameters") or {})}
        return cls(
            hidden_size=hidden,
            num_layers=_required(config, "num_hidden_layers"),
            intermediate_size=_required(config, "intermediate_size"),
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or hidden // heads,
            context_length=_required(config, "max_position_embeddings"),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0),
            rope_scaling=rope,
            tie_word_embeddings=config.get("tie_word_embeddings"),
        )

    @property
    def rope_type(self) -> str:
        """The rotary scaling kind: ``default`` when the config asks for none."""
        return str(self.rope_scaling.get("rope_type") or self.rope_scaling.get("type") or "default")


def _required(config: dict[str, Any], key: str) -> Any:
    if config.get(key) is None:
        raise UserError(f"config.json has no {key!r}; the folder must hold a complete Hugging Face model config")
    return config[key]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); re-save the model folder") from None


def _read_config(model_dir: Path) -> dict[str, Any]:
    if not model_dir.is_dir():
        raise UserError(f"model folder {model_dir} does not exist; pass a merged Hugging Face model folder")
    if not (model_dir / "config.json").is_file():
        if (model_dir / "adapter_config.json").is_file():
            raise UserError(f"{model_dir} holds a LoRA adapter only; merge it into its base model, then export that")
        raise UserError(f"{model_dir} has no config.json; pass a Hugging Face model folder (save_pretrained output)")
    return _read_json(model_dir / "config.json")


def _architecture(config: dict[str, Any]) -> str:
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
        classes = ", ".join(config.get("architectures") or [])
        raise UserError(
            f"cannot export architecture {model_type!r}{f' ({classes})' if classes else ''} to GGUF: supported are "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}. Export a Hugging Face folder instead, or convert it with "
            "llama.cpp's convert_hf_to_gguf.py"
        )
    return model_type


def _requested_type(dtype: str) -> Any:
    from gguf import GGMLQuantizationType as T

    types = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0}
    if dtype not in types:
        raise UserError(f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return types[dtype]


# ---------------------------------------------------------------------------------------------- weights


def _weight_files(model_dir: Path) -> dict[str, Path]:
    """Map every tensor key to the safetensors file holding it."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map") or {}
        missing = sorted({f for f in weight_map.values() if not (model_dir / f).is_file()})
        if missing:
            raise UserError(f"{index.name} lists shards that are missing from {model_dir}: {', '.join(missing)}")
        return {key: model_dir / f for key, f in weight_map.items()}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(
            f"{model_dir} has no .safetensors weights; re-save the model with save_pretrained (safetensors)"
        )
    return {key: path for path in files for key in _keys(path)}


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def _weight_shapes(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """Tensor key -> shape, read from the safetensors headers only."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    by_file: dict[Path, list[str]] = {}
    for key, path in files.items():
        by_file.setdefault(path, []).append(key)
    for path, keys in by_file.items():
        with safe_open(str(path), framework="pt") as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in keys})
    return shapes


def _embedding_key(shapes: dict[str, tuple[int, ...]]) -> str:
    for key in ("model.embed_tokens.weight", "embed_tokens.weight"):
        if key in shapes:
            return key
    raise UserError("the weights have no model.embed_tokens.weight; is this a complete causal LM checkpoint?")


@dataclass
class _Tensor:
    """One GGUF tensor: where its data comes from and how it is stored."""

    name: str
    shape: tuple[int, ...]
    qtype: Any
    source: str | None = None  # safetensors key; None for computed tensors
    rotary_heads: int | None = None  # heads to interleave for llama.cpp's rotary layout
    data: np.ndarray | None = None  # computed tensors only

    @property
    def order(self) -> tuple[int, int, str]:
        """Sort key: embeddings first, then blocks by index, then the output tensors."""
        if self.name.startswith("blk."):
            return (1, int(self.name.split(".")[1]), self.name)
        return (0 if self.name.startswith(("token_embd", "rope_freqs")) else 2, 0, self.name)


def _gguf_name(arch: str, key: str, num_layers: int) -> str | None:
    """The GGUF tensor name for a Hugging Face key; None for keys the format leaves out."""
    import gguf

    module, _, suffix = key.rpartition(".")
    module = module.removeprefix("model.")
    if module.endswith(_IGNORED_SUFFIXES):
        return None
    kind, bid = _tensor_kind(module, num_layers)
    if kind is None:
        raise UserError(f"cannot place weight {key!r} in a {arch} GGUF file; is this a plain {arch} checkpoint?")
    tensor = gguf.MODEL_TENSOR[kind]
    if tensor not in gguf.MODEL_TENSORS[gguf.MODEL_ARCH[arch.upper()]]:
        raise UserError(f"weight {key!r} has no place in a {arch} GGUF file")
    return f"{gguf.TENSOR_NAMES[tensor].format(bid=bid)}.{suffix}"


def _tensor_kind(module: str, num_layers: int) -> tuple[str | None, int | None]:
    if module == "lm_head":
        return "OUTPUT", None
    if module in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[module], None
    parts = module.split(".", 2)
    if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() and int(parts[1]) < num_layers:
        return _LAYER_TENSORS.get(parts[2]), int(parts[1])
    return None, None


def _storage_type(shape: tuple[int, ...], requested: Any) -> Any:
    """f32 for 1-D tensors; f16 for q8_0 matrices whose rows do not split into 32-value blocks."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as T

    if len(shape) < 2:
        return T.F32
    if requested == T.Q8_0 and shape[-1] % GGML_QUANT_SIZES[T.Q8_0][0]:
        return T.F16
    return requested


def _rotary_heads(arch: str, name: str, hparams: _Hparams) -> int | None:
    """Llama's q/k rows are stored interleaved per head, as llama.cpp's rotary code reads them.

    Qwen2 and Qwen3 are run with llama.cpp's NEOX rotary layout, which matches Hugging Face's, so they stay as-is.
    """
    if arch != "llama":
        return None
    if ".attn_q." in name:
        return hparams.num_heads
    if ".attn_k." in name:
        return hparams.num_kv_heads
    return None


def _plan_tensors(arch: str, hparams: _Hparams, shapes: dict[str, tuple[int, ...]], requested: Any) -> list[_Tensor]:
    tied = hparams.tie_word_embeddings
    if tied is None:
        tied = "lm_head.weight" not in shapes
    if not tied and "lm_head.weight" not in shapes:
        raise UserError("config.json says tie_word_embeddings=false but the weights have no lm_head.weight")
    plan = []
    for key, shape in shapes.items():
        name = _gguf_name(arch, key, hparams.num_layers)
        if name is None or (tied and name.startswith("output.")):
            continue
        rotary = _rotary_heads(arch, name, hparams)
        plan.append(_Tensor(name, shape, _storage_type(shape, requested), source=key, rotary_heads=rotary))
    plan += _rope_tensors(hparams)
    return sorted(plan, key=lambda t: t.order)


def _rope_tensors(hparams: _Hparams) -> list[_Tensor]:
    """The rope_freqs tensor that carries Llama 3.1-style rope scaling, when the config asks for it."""
    from gguf import GGMLQuantizationType as T

    if hparams.rope_type != "llama3":
        return []
    factors = llama3_rope_factors(hparams.head_dim, hparams.rope_theta, hparams.rope_scaling)
    return [_Tensor("rope_freqs.weight", factors.shape, T.F32, data=factors)]


def llama3_rope_factors(head_dim: int, theta: float, scaling: dict[str, Any]) -> np.ndarray:
    """Per-frequency divisors llama.cpp applies for Llama 3.1-style rope scaling (``rope_freqs.weight``)."""
    factor = float(scaling.get("factor", 8.0))
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old_context = float(scaling.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (old_context / wavelen - low) / (high - low)
    factors = 1.0 / ((1 - smooth) / factor + smooth)
    factors = np.where(wavelen < old_context / high, 1.0, factors)
    factors = np.where(wavelen > old_context / low, factor, factors)
    return factors.astype(np.float32)


def _permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from halves (x[:d/2], x[d/2:]) to interleaved pairs (x0, x1, x2, ...)."""
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _encode(values: np.ndarray, qtype: Any) -> np.ndarray:
    """The bytes (or float array) GGUF stores for ``values`` in ``qtype``."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    if qtype == T.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(values, dtype=np.float16)
    return quants.quantize(np.ascontiguousarray(values, dtype=np.float32), qtype)


def _stored_layout(tensor: _Tensor) -> tuple[tuple[int, ...], Any, int]:
    """(shape as given to the writer, numpy dtype, byte count) of ``tensor`` once encoded."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    count = math.prod(tensor.shape)
    if tensor.qtype == T.F32:
        return tensor.shape, np.dtype(np.float32), 4 * count
    if tensor.qtype == T.F16:
        return tensor.shape, np.dtype(np.float16), 2 * count
    byte_shape = quants.quant_shape_to_byte_shape(tensor.shape, tensor.qtype)
    return byte_shape, np.dtype(np.uint8), math.prod(byte_shape)


def _tensor_data(tensor: _Tensor, handles: dict[Path, Any], files: dict[str, Path]) -> np.ndarray:
    if tensor.data is not None:
        return _encode(tensor.data, tensor.qtype)
    values = handles[files[tensor.source]].get_tensor(tensor.source).float().numpy()
    if tensor.rotary_heads:
        values = _permute_rotary(values, tensor.rotary_heads)
    return _encode(values, tensor.qtype)


def _report_fallbacks(plan: list[_Tensor], requested: Any) -> None:
    from gguf import GGMLQuantizationType as T

    if requested != T.Q8_0:
        return
    kept = [t.name for t in plan if len(t.shape) > 1 and t.qtype == T.F16]
    if kept:
        log.warning("%d matrices have rows that are not a multiple of 32 and are stored as f16: %s", len(kept), kept)


def _warn_unreadable_head_dim(arch: str, hparams: _Hparams) -> None:
    """transformers' GGUF reader takes a Qwen3 head size of 128 whatever the file says; llama.cpp reads key_length."""
    if arch == "qwen3" and hparams.head_dim != _TRANSFORMERS_QWEN3_HEAD_DIM:
        log.warning(
            "head_dim %d: llama.cpp runs this Qwen3 file, but transformers (and so `tuneforge` commands given the "
            ".gguf) cannot load it, as it assumes head_dim %d for Qwen3 GGUF files",
            hparams.head_dim,
            _TRANSFORMERS_QWEN3_HEAD_DIM,
        )


# -------------------------------------------------------------------------------------------- tokenizer


def _add_model_metadata(writer: Any, hp: _Hparams, name: str, n_vocab: int, qtype: Any) -> None:
    import gguf

    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(hp.context_length)
    writer.add_embedding_length(hp.hidden_size)
    writer.add_block_count(hp.num_layers)
    writer.add_feed_forward_length(hp.intermediate_size)
    writer.add_head_count(hp.num_heads)
    writer.add_head_count_kv(hp.num_kv_heads)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    writer.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim != hp.hidden_size // hp.num_heads:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    writer.add_vocab_size(n_vocab)
    _add_rope_scaling(writer, hp)
    file_types = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q8_0": "MOSTLY_Q8_0"}
    writer.add_file_type(int(gguf.LlamaFileType[file_types[qtype.name]]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_rope_scaling(writer: Any, hp: _Hparams) -> None:
    from gguf import RopeScalingType

    kind = hp.rope_type
    if kind in ("default", "llama3"):  # llama3 is carried by the rope_freqs tensor
        return
    if kind not in ("linear", "yarn"):
        raise UserError(
            f"rope scaling {kind!r} in config.json has no GGUF equivalent here; supported: linear, yarn, llama3"
        )
    writer.add_rope_scaling_type(RopeScalingType.LINEAR if kind == "linear" else RopeScalingType.YARN)
    writer.add_rope_scaling_factor(float(hp.rope_scaling.get("factor", 1.0)))
    if kind == "yarn" and hp.rope_scaling.get("original_max_position_embeddings"):
        writer.add_rope_scaling_orig_ctx_len(int(hp.rope_scaling["original_max_position_embeddings"]))


def _write_atomically(writer: Any, plan: list[_Tensor], files: dict[str, Path], out_file: Path) -> None:
    """Write header, metadata and tensors to a temporary file next to ``out_file``, then rename it into place."""
    tmp = out_file.with_name(f".{out_file.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        _write(writer, plan, files, tmp)
        writer.close()
        os.replace(tmp, out_file)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)


def _write(writer: Any, plan: list[_Tensor], files: dict[str, Path], path: Path) -> None:
    for tensor in plan:
        shape, dtype, nbytes = _stored_layout(tensor)
        raw = None if tensor.qtype.name in ("F32", "F16") else tensor.qtype
        writer.add_tensor_info(tensor.name, shape, dtype, nbytes, raw_dtype=raw)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in _encoded_tensors(plan, files):
        writer.write_tensor_data(data)
    writer.flush()
    for handle in writer.fout or []:
        os.fsync(handle.fileno())


def _encoded_tensors(plan: list[_Tensor], files: dict[str, Path]) -> Iterator[np.ndarray]:
    """Each planned tensor's stored bytes, reading one tensor at a time from open safetensors files."""
    from safetensors import safe_open

    with ExitStack() as stack:
        handles = {path: stack.enter_context(safe_open(str(path), framework="pt")) for path in set(files.values())}
        for tensor in plan:
            yield _tensor_data(tensor, handles, files)
