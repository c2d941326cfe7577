"""Write a merged Hugging Face causal LM folder (Llama, Qwen2, Qwen3) as one GGUF file.

The folder needs ``config.json``, safetensors weights (one file or shards listed by
``model.safetensors.index.json``) and a byte-level BPE tokenizer (GPT-2 style, as Llama 3, Qwen and SmolLM2
use). The GGUF file carries the weights, the model hyperparameters, the tokenizer and the chat template, so
llama.cpp, Ollama and ``transformers`` (``from_pretrained(folder, gguf_file=name)``) can run it on its own.

Weights are read one tensor at a time and written straight to the file, so memory stays near the size
of the largest tensor. This module reads the folder and writes the file; ``gguf_tensors`` plans and encodes the
tensors and ``gguf_vocab`` supplies the tokenizer metadata. Every file carries the metadata key
``tuneforge.export``: it is how a later export recognises a file it may replace (an existing file without it is
never overwritten).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from tuneforge.atomic import atomic_output, temp_dir_beside
from tuneforge.errors import UserError
from tuneforge.export.base import EXPORTERS, Exporter, ExportOptions
from tuneforge.export.gguf_tensors import Hparams, PlannedTensor, encoded_tensors, plan_tensors, stored_layout
from tuneforge.export.gguf_vocab import add_tokenizer_metadata, read_vocab
from tuneforge.export.hf import merged_model, write_hf_folder

__all__ = [
    "DTYPES",
    "EXPORT_KEY",
    "SUPPORTED_ARCHITECTURES",
    "export_gguf",
    "gguf_file_name",
    "is_gguf_export",
    "write_gguf_export",
]

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")
DTYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
EXPORT_KEY = "tuneforge.export"  # metadata key marking a file this module wrote

# transformers rebuilds a Qwen3 config from GGUF metadata without reading the head size.
_TRANSFORMERS_QWEN3_HEAD_DIM = 128


def export_gguf(model_dir: Path, out_file: Path, dtype: str = "f16", *, name: str | None = None) -> Path:
    """Convert the Hugging Face model folder ``model_dir`` into the GGUF file ``out_file`` and return its path.

    ``dtype`` is one of ``DTYPES``: ``f32``, ``f16``, ``bf16``, ``q8_0`` or the 5- and 4-bit block types ``q5_1``,
    ``q5_0``, ``q4_1`` and ``q4_0`` (what most llama.cpp and Ollama users run). Norms and other 1-D tensors always
    stay f32; with a 5- or 4-bit type the output matrix (the token embeddings, when tied) is stored as q8_0; a
    block-quantized matrix whose rows are not a multiple of 32 values is stored as f16. ``name`` becomes
    ``general.name`` (default: the folder name). The file is written under a temporary name in the same folder
    and renamed into place, so ``out_file`` is either complete or untouched. An existing ``out_file`` is replaced
    only when it is a GGUF file this function wrote (see ``is_gguf_export``); anything else is refused.
    """
    import gguf

    model_dir, out_file = Path(model_dir).expanduser(), Path(out_file).expanduser()
    qtype = _requested_type(dtype)
    config = _read_config(model_dir)
    arch = _architecture(config)
    hparams = Hparams.from_config(config)
    files = _weight_files(model_dir)
    shapes = _weight_shapes(files)
    plan = plan_tensors(arch, hparams, shapes, qtype)
    vocab = read_vocab(model_dir, config, n_vocab=shapes[_embedding_key(shapes)][0])
    name = name or model_dir.resolve().name

    _check_out_file(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(None, arch)
    _add_model_metadata(writer, hparams, name, vocab.n_vocab, qtype)
    add_tokenizer_metadata(writer, vocab)
    _write_atomically(writer, plan, files, out_file)
    _report_fallbacks(plan, qtype)
    _warn_unreadable_head_dim(arch, hparams)
    return out_file


def is_gguf_export(path: Path) -> bool:
    """Whether `path` is a GGUF file written by `export_gguf` (it carries the ``tuneforge.export`` key)."""
    import gguf

    if path.is_symlink() or not path.is_file():
        return False
    try:
        return EXPORT_KEY in gguf.GGUFReader(path).fields
    except Exception:  # any file the GGUF reader cannot read is not one of ours
        return False


def _check_out_file(out_file: Path) -> None:
    if out_file.is_dir():
        raise UserError(f"{out_file} is a folder; give the path of the .gguf file to write")
    if (out_file.exists() or out_file.is_symlink()) and not is_gguf_export(out_file):
        raise UserError(
            f"{out_file} exists and is not a GGUF file written by tuneforge (no {EXPORT_KEY} metadata); "
            "choose a new file name, or move that file away yourself"
        )


# ----------------------------------------------------------------------------------------------- config


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
    from gguf import GGMLQuantizationType

    if dtype not in DTYPES:
        raise UserError(f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return GGMLQuantizationType[dtype.upper()]


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


# --------------------------------------------------------------------------------------------- warnings


def _report_fallbacks(plan: list[PlannedTensor], requested: Any) -> None:
    from gguf import GGMLQuantizationType as T

    if requested in (T.F32, T.F16, T.BF16):
        return
    kept = [t.name for t in plan if len(t.shape) > 1 and t.qtype == T.F16]
    if kept:
        log.warning("%d matrices have rows that are not a multiple of 32 and are stored as f16: %s", len(kept), kept)


def _warn_unreadable_head_dim(arch: str, hparams: Hparams) -> None:
    """transformers' GGUF reader takes a Qwen3 head size of 128 whatever the file says; llama.cpp reads key_length."""
    if arch == "qwen3" and hparams.head_dim != _TRANSFORMERS_QWEN3_HEAD_DIM:
        log.warning(
            "head_dim %d: llama.cpp runs this Qwen3 file, but transformers (and so `tuneforge` commands given the "
            ".gguf) cannot load it, as it assumes head_dim %d for Qwen3 GGUF files",
            hparams.head_dim,
            _TRANSFORMERS_QWEN3_HEAD_DIM,
        )


# --------------------------------------------------------------------------------------------- metadata


def _add_model_metadata(writer: Any, hp: Hparams, name: str, n_vocab: int, qtype: Any) -> None:
    import gguf

    from tuneforge import __version__

    writer.add_type("model")
    writer.add_name(name)
    writer.add_string(EXPORT_KEY, f"tuneforge {__version__}")
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
    file_type = "ALL_F32" if qtype.name == "F32" else f"MOSTLY_{qtype.name}"
    writer.add_file_type(int(gguf.LlamaFileType[file_type]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_rope_scaling(writer: Any, hp: Hparams) -> None:
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


# ---------------------------------------------------------------------------------------------- writing


def _write_atomically(writer: Any, plan: list[PlannedTensor], files: dict[str, Path], out_file: Path) -> None:
    """Write header, metadata and tensors under a random temporary name next to ``out_file``, then rename it."""
    with atomic_output(out_file) as tmp:
        try:
            _write(writer, plan, files, tmp)
        finally:
            writer.close()


def _write(writer: Any, plan: list[PlannedTensor], files: dict[str, Path], path: Path) -> None:
    for tensor in plan:
        shape, dtype, nbytes = stored_layout(tensor)
        raw = None if tensor.qtype.name in ("F32", "F16") else tensor.qtype
        writer.add_tensor_info(tensor.name, shape, dtype, nbytes, raw_dtype=raw)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in encoded_tensors(plan, files):
        writer.write_tensor_data(data)
    writer.flush()
    for handle in writer.fout or []:
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------- export format


def write_gguf_export(source: str, folder: Path, options: ExportOptions) -> tuple[Path, Any]:
    """Merge `source` and write it into `folder` as one GGUF file of `options.gguf_type`; (file, tokenizer)."""
    model, tokenizer, _ = merged_model(source)
    merged = temp_dir_beside(folder / "merged")
    try:
        write_hf_folder(model, tokenizer, merged, "float32", "5GB")
        gguf = export_gguf(merged, folder / gguf_file_name(options), options.gguf_type, name=options.name)
    finally:
        shutil.rmtree(merged, ignore_errors=True)
    return gguf, tokenizer


def gguf_file_name(options: ExportOptions) -> str:
    """The name of the GGUF file an export writes."""
    return f"model-{options.gguf_type}.gguf"


def _write_gguf(source: str, folder: Path, options: ExportOptions) -> None:
    write_gguf_export(source, folder, options)


EXPORTERS.register("gguf")(
    Exporter(
        help=f"one .gguf file (--gguf-type {', '.join(DTYPES)}) with tokenizer and chat template, for llama.cpp",
        write=_write_gguf,
        next_steps=lambda out, options: [f"GGUF file: {out / gguf_file_name(options)}"],
    )
)
