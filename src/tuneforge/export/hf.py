"""Merge a run's adapter into its base model and save a standalone Hugging Face folder (sharded safetensors).

LoRA-family adapters (LoRA, DoRA, IA3, QLoRA) are merged into the base weights; for QLoRA the base is loaded
de-quantised (full precision) and the adapter merged onto it. Methods that add tokens or modules at run time
(prefix, prompt and P-tuning, bottleneck adapters) cannot become plain weights and are refused with the way out.
The folder carries the tokenizer with its chat template, the generation config, and a model card with a
reproducibility record: base model, data file hashes, the resolved config, library versions and the run's metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

__all__ = ["export_hf", "merged_model", "publish_folder", "reproducibility_record"]

_NOT_MERGEABLE = {"prefix", "prompt", "ptuning", "adapter", "PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"}


def _dtype(name: str) -> Any:
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table and name != "auto":
        raise UserError(f"unknown export dtype {name!r}; use auto, float32, bfloat16 or float16")
    return table.get(name)


def merged_model(source: str) -> tuple[Any, Any, dict[str, Any] | None]:
    """(model with any adapter merged in, tokenizer, the run's config as a dict or None) for a run dir or model."""
    from tuneforge.models.load import load_model

    path = Path(source)
    config = None
    if (path / "config.yaml").is_file():
        from tuneforge.config.load import load_config

        run_config = load_config(path / "config.yaml")
        config = run_config.model_dump(mode="json", serialize_as_any=True)
        name = config["adapter"]["name"]
        if name in _NOT_MERGEABLE:
            raise UserError(
                f"{source}: the {name!r} adapter adds virtual tokens or extra modules at run time and cannot be merged "
                f"into plain weights; serve the run directory itself (`tuneforge serve {source}`)"
            )
    loaded = load_model(source, dtype="float32")
    model = loaded.model
    peft_type = str(getattr(getattr(model, "active_peft_config", None), "peft_type", "") or "")
    if peft_type.split(".")[-1] in _NOT_MERGEABLE:
        raise UserError(f"{source}: {peft_type} adapters cannot be merged into the weights; serve the run directly")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model, loaded.tokenizer, config


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reproducibility_record(source: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """Base model, data file hashes, config, library versions and the run's final numbers."""
    import peft
    import torch
    import transformers

    from tuneforge import __version__

    record: dict[str, Any] = {
        "source": source,
        "versions": {
            "tuneforge": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    if config is not None:
        from tuneforge.data.catalog import resolve_sources

        record["base_model"] = config["model"]["name_or_path"]
        hashes = {}
        try:
            for data_source in resolve_sources(config["data"]["train"]) if config["data"]["train"] else []:
                hashes[str(data_source.path)] = _sha256(data_source.path)
        except UserError as err:
            hashes["unavailable"] = str(err)
        record["data_sha256"] = hashes
        record["config"] = config
        status = Path(source) / "run.json"
        if status.is_file():
            record["metrics"] = json.loads(status.read_text(encoding="utf-8"))
    return record


def _card(record: dict[str, Any], out_name: str) -> str:
    lines = [f"# {out_name}", "", "Exported with tuneforge: adapter merged into the base weights.", ""]
    if "base_model" in record:
        lines += [f"- base model: `{record['base_model']}`"]
    lines += [f"- source: `{record['source']}`"]
    lines += [f"- {name} {version}" for name, version in record["versions"].items()]
    for path, digest in record.get("data_sha256", {}).items():
        lines.append(f"- data `{path}` sha256 `{digest}`")
    metrics = record.get("metrics", {})
    for key in ("steps", "final_loss", "final_val_loss", "tokens_per_s"):
        if key in metrics:
            lines.append(f"- {key}: {metrics[key]}")
    lines += ["", "The full record (config included) is in `reproducibility.json`.", ""]
    return "\n".join(lines)


def publish_folder(tmp: Path, out: Path, force: bool) -> Path:
    """Move a finished temporary folder into place; an existing `out` is replaced only with `force`."""
    if out.exists():
        if not force:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"{out} already exists; pass --force to replace it")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def check_target(out: Path, force: bool) -> Path:
    """Refuse an existing target without --force (before any work); return the temporary folder to write."""
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def write_hf_folder(model: Any, tokenizer: Any, folder: Path, dtype: str, shard_size: str) -> None:
    """Save weights (sharded safetensors), tokenizer with chat template and generation config."""
    torch_dtype = _dtype(dtype)
    if torch_dtype is not None:
        model = model.to(torch_dtype)
    model.save_pretrained(folder, max_shard_size=shard_size, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def export_hf(source: str, out: Path, dtype: str = "auto", shard_size: str = "2GB", force: bool = False) -> Path:
    """Merged Hugging Face folder at `out`, written to a temporary folder and renamed at the end."""
    tmp = check_target(out, force)
    try:
        model, tokenizer, config = merged_model(source)
        write_hf_folder(model, tokenizer, tmp, dtype, shard_size)
        record = reproducibility_record(source, config)
        (tmp / "reproducibility.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        (tmp / "README.md").write_text(_card(record, out.name), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_folder(tmp, out, force)
