"""The tensor part of a GGUF file: which tensors it holds, how each is stored, and their encoded bytes.

``plan_tensors`` maps the Hugging Face weight names of a Llama / Qwen2 / Qwen3 checkpoint to GGUF tensor names
and picks each tensor's storage type (adding the computed ``rope_freqs`` tensor for Llama 3.1-style rope scaling);
``stored_layout`` gives the shape, dtype and size the GGUF writer must announce for a planned tensor; and
``encoded_tensors`` reads the weights one tensor at a time and yields the bytes to write, with Llama's q/k rows
reordered for llama.cpp's rotary layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import UserError

__all__ = [
    "LOW_BIT_TYPES",
    "Hparams",
    "PlannedTensor",
    "encoded_tensors",
    "llama3_rope_factors",
    "plan_tensors",
    "stored_layout",
]

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
# 4- and 5-bit block types (as gguf.GGMLQuantizationType names): their output matrix is kept at q8_0.
LOW_BIT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1")
# Buffers some checkpoints save that the GGUF format recomputes.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class Hparams:
    """The model shape and rotary settings the GGUF metadata and tensor plan need, read from ``config.json``."""

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
    def from_config(cls, config: dict[str, Any]) -> Hparams:
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


@dataclass
class PlannedTensor:
    """One GGUF tensor: where its data comes from and how it is stored.

    Attributes:
        name: The GGUF tensor name (``blk.0.attn_q.weight``).
        shape: The shape in Hugging Face (row-major) order.
        qtype: The ``gguf.GGMLQuantizationType`` it is stored as.
        source: The safetensors key it is read from; None for computed tensors.
        rotary_heads: Heads to interleave for llama.cpp's rotary layout; None to store the rows as they are.
        data: The values of a computed tensor; None for tensors read from the weights.
    """

    name: str
    shape: tuple[int, ...]
    qtype: Any
    source: str | None = None
    rotary_heads: int | None = None
    data: np.ndarray | None = None

    @property
    def order(self) -> tuple[int, int, str]:
        """Sort key: embeddings first, then blocks by index, then the output tensors."""
        if self.name.startswith("blk."):
            return (1, int(self.name.split(".")[1]), self.name)
        return (0 if self.name.startswith(("token_embd", "rope_freqs")) else 2, 0, self.name)


# ------------------------------------------------------------------------------------------------- plan


def plan_tensors(
    arch: str, hparams: Hparams, shapes: dict[str, tuple[int, ...]], requested: Any
) -> list[PlannedTensor]:
    """The tensors of the GGUF file, in file order.

    Args:
        arch: The GGUF architecture (``llama``, ``qwen2`` or ``qwen3``).
        hparams: The model's hyperparameters.
        shapes: Safetensors key -> shape of every weight in the checkpoint.
        requested: The ``gguf.GGMLQuantizationType`` asked for; 1-D tensors are stored as f32 whatever it is,
            and q8_0 matrices whose rows do not split into 32-value blocks as f16.

    Raises:
        UserError: A weight has no place in a GGUF file of ``arch``, or the config and weights disagree on
            whether the output matrix is tied to the embeddings.
    """
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
        stored = _storage_type(name, shape, requested, tied)
        plan.append(PlannedTensor(name, shape, stored, source=key, rotary_heads=rotary))
    plan += _rope_tensors(hparams)
    return sorted(plan, key=lambda t: t.order)


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


def _storage_type(name: str, shape: tuple[int, ...], requested: Any, tied: bool) -> Any:
    """How one tensor is stored when ``requested`` is asked for.

    1-D tensors stay f32. With a 4- or 5-bit type, the output matrix (``output.weight``, or the token embeddings
    when they are tied to it) is stored as q8_0, as llama.cpp's own quantizer keeps it at higher precision: every
    next-token choice goes through it. A block-quantized matrix whose rows do not split into whole blocks is
    stored as f16.
    """
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as T

    if len(shape) < 2:
        return T.F32
    stored = requested
    output_matrix = name == "output.weight" or (tied and name == "token_embd.weight")
    if output_matrix and requested.name in LOW_BIT_TYPES:
        stored = T.Q8_0
    if stored not in (T.F32, T.F16, T.BF16) and shape[-1] % GGML_QUANT_SIZES[stored][0]:
        return T.F16
    return stored


def _rotary_heads(arch: str, name: str, hparams: Hparams) -> int | None:
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


def _rope_tensors(hparams: Hparams) -> list[PlannedTensor]:
    """The rope_freqs tensor that carries Llama 3.1-style rope scaling, when the config asks for it."""
    from gguf import GGMLQuantizationType as T

    if hparams.rope_type != "llama3":
        return []
    factors = llama3_rope_factors(hparams.head_dim, hparams.rope_theta, hparams.rope_scaling)
    return [PlannedTensor("rope_freqs.weight", factors.shape, T.F32, data=factors)]


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


# --------------------------------------------------------------------------------------------- encoding


def stored_layout(tensor: PlannedTensor) -> tuple[tuple[int, ...], Any, int]:
    """(shape as given to the writer, numpy dtype, byte count) of ``tensor`` once encoded.

    These are the values ``gguf.GGUFWriter.add_tensor_info`` needs before any data is written; the arrays
    ``encoded_tensors`` yields match them.
    """
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    count = math.prod(tensor.shape)
    if tensor.qtype == T.F32:
        return tensor.shape, np.dtype(np.float32), 4 * count
    if tensor.qtype == T.F16:
        return tensor.shape, np.dtype(np.float16), 2 * count
    byte_shape = quants.quant_shape_to_byte_shape(tensor.shape, tensor.qtype)
    return byte_shape, np.dtype(np.uint8), math.prod(byte_shape)


def encoded_tensors(plan: list[PlannedTensor], files: dict[str, Path]) -> Iterator[np.ndarray]:
    """Each planned tensor's stored bytes, in plan order, reading one tensor at a time.

    Args:
        plan: The tensors, as ``plan_tensors`` returns them.
        files: Safetensors key -> the file holding it; every file is kept open until the iterator is exhausted
            or closed.
    """
    from safetensors import safe_open

    with ExitStack() as stack:
        handles = {path: stack.enter_context(safe_open(str(path), framework="pt")) for path in set(files.values())}
        for tensor in plan:
            yield _tensor_data(tensor, handles, files)


def _tensor_data(tensor: PlannedTensor, handles: dict[Path, Any], files: dict[str, Path]) -> np.ndarray:
    if tensor.data is not None:
        return _encode(tensor.data, tensor.qtype)
    values = handles[files[tensor.source]].get_tensor(tensor.source).float().numpy()
    if tensor.rotary_heads:
        values = _permute_rotary(values, tensor.rotary_heads)
    return _encode(values, tensor.qtype)


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
