"""A classification run's head in a merged Hugging Face folder, so that it loads with transformers'
AutoModelForSequenceClassification: the head as `score.weight` (the name every *ForSequenceClassification model
uses) in a shard of its own, and the class names as the config's `id2label` / `label2id`.

The folder keeps its language-model weights, so it still loads as a causal LM too. A single `model.safetensors`
becomes the first shard of two (renamed, not rewritten) with an index naming both.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tuneforge.atomic import atomic_write_text, temp_path_beside
from tuneforge.errors import UserError

__all__ = ["HEAD_FILE", "LABELS_FILE", "SCORE_KEY", "export_classifier", "read_head"]

HEAD_FILE = "classification_head.safetensors"
LABELS_FILE = "classification.json"
SCORE_KEY = "score.weight"
_INDEX = "model.safetensors.index.json"
_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def read_head(model_folder: Path) -> tuple[torch.Tensor, list[str]]:
    """(head weight, class names) saved beside a classification run's model."""
    weights, names = model_folder / HEAD_FILE, model_folder / LABELS_FILE
    if not weights.is_file() or not names.is_file():
        raise UserError(
            f"{model_folder} holds no classification head ({HEAD_FILE}, {LABELS_FILE}); train with "
            "method.name=classify"
        )
    labels = json.loads(names.read_text(encoding="utf-8"))["labels"]
    return load_file(str(weights))["weight"], [str(name) for name in labels]


def _header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (names, dtypes, byte offsets), read without loading any tensor."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def _tensor_bytes(header: dict[str, Any]) -> int:
    offsets = [entry["data_offsets"] for key, entry in header.items() if key != "__metadata__"]
    return sum(end - start for start, end in offsets)


def _weights_dtype(header: dict[str, Any]) -> torch.dtype:
    dtypes = [entry["dtype"] for key, entry in header.items() if key != "__metadata__"]
    return _DTYPES.get(dtypes[0], torch.float32) if dtypes else torch.float32


def _sharded_index(folder: Path) -> tuple[dict[str, Any], str, torch.dtype]:
    """The folder's shard index (made from a single model.safetensors if needed), a free shard name for the head
    and the dtype of the weights."""
    index_path, single = folder / _INDEX, folder / "model.safetensors"
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        first = folder / sorted(set(index["weight_map"].values()))[0]
        return index, "model-score.safetensors", _weights_dtype(_header(first))
    if not single.is_file():
        raise UserError(f"{folder}: no model.safetensors to add the classification head to")
    header = _header(single)
    shard = "model-00001-of-00002.safetensors"
    os.replace(single, folder / shard)
    weight_map = {key: shard for key in header if key != "__metadata__"}
    index = {"metadata": {"total_size": _tensor_bytes(header)}, "weight_map": weight_map}
    return index, "model-00002-of-00002.safetensors", _weights_dtype(header)


def _pad_token_id(folder: Path) -> int | None:
    """The pad id a classifier needs to find each row's last token in a padded batch."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _with_labels(folder: Path, config: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    config = dict(config)
    config["id2label"] = {str(i): name for i, name in enumerate(labels)}
    config["label2id"] = {name: i for i, name in enumerate(labels)}
    config["problem_type"] = "single_label_classification"
    architectures = list(config.get("architectures") or [])
    causal = next((name for name in architectures if name.endswith("ForCausalLM")), None)
    if causal is not None and causal.replace("ForCausalLM", "ForSequenceClassification") not in architectures:
        architectures.append(causal.replace("ForCausalLM", "ForSequenceClassification"))
    config["architectures"] = architectures
    if config.get("pad_token_id") is None:
        config["pad_token_id"] = _pad_token_id(folder)
    return config


def export_classifier(model_folder: Path, folder: Path) -> None:
    """Add the classification head and class names of a run (its `model/` folder) to the exported `folder`."""
    weight, labels = read_head(model_folder)
    index, shard, dtype = _sharded_index(folder)
    head_path = folder / shard
    temporary = temp_path_beside(head_path)
    try:
        save_file({SCORE_KEY: weight.to(dtype).contiguous()}, str(temporary), metadata={"format": "pt"})
        os.replace(temporary, head_path)
    finally:
        temporary.unlink(missing_ok=True)
    index["weight_map"][SCORE_KEY] = shard
    metadata = index.setdefault("metadata", {})
    metadata["total_size"] = metadata.get("total_size", 0) + _tensor_bytes(_header(head_path))
    atomic_write_text(folder / _INDEX, json.dumps(index, indent=2))
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    atomic_write_text(config_path, json.dumps(_with_labels(folder, config, labels), indent=2, ensure_ascii=False))
