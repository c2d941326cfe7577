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
from pathlib import Path
from typing import Any

import tuneforge.methods  # noqa: F401  (registers the method and adapter parameters run configs are checked against)
from tuneforge.config.load import load_saved_config
from tuneforge.config.schema import RunConfig
from tuneforge.errors import UserError
from tuneforge.export.base import EXPORTERS, Exporter, ExportOptions
from tuneforge.methods import METHODS
from tuneforge.models.adapters import ADAPTERS, AdapterSpec, adapter_of
from tuneforge.models.load import load_model
from tuneforge.models.rundir import RunLayout, is_run_dir, read_status

__all__ = ["merged_model", "reproducibility_record", "write_hf_folder", "write_merged_folder"]


def _dtype(name: str) -> Any:
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table and name != "auto":
        raise UserError(f"unknown export dtype {name!r}; use auto, float32, bfloat16 or float16")
    return table.get(name)


def _not_mergeable(source: str, name: str, spec: AdapterSpec | None) -> UserError:
    what = "learned virtual tokens" if spec is not None and spec.virtual_tokens else "extra modules"
    mergeable = ", ".join(n for n in ADAPTERS.names() if ADAPTERS.get(n).mergeable)
    return UserError(
        f"{source}: the {name!r} adapter adds {what} at run time, which cannot be merged into plain weights, so "
        f"this run cannot be exported; serve or chat with the run directory itself (`tuneforge serve {source}`), "
        f"or train with a mergeable adapter ({mergeable})"
    )


def merged_model(source: str) -> tuple[Any, Any, RunConfig | None]:
    """(model with any adapter merged in, tokenizer, the run's config or None) for a run dir or model."""
    config = None
    if is_run_dir(source):
        config = load_saved_config(RunLayout(Path(source)).config)
        spec = ADAPTERS.get(config.adapter.name)
        if not spec.mergeable:
            raise _not_mergeable(source, config.adapter.name, spec)
    loaded = load_model(source, dtype="float32")
    model = loaded.model
    adapter = adapter_of(model)
    if adapter is not None and not adapter.mergeable:
        raise _not_mergeable(source, adapter.peft_type or "run-time", adapter)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model, loaded.tokenizer, config


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reproducibility_record(source: str, config: RunConfig | None) -> dict[str, Any]:
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

        record["base_model"] = config.model.name_or_path
        hashes = {}
        try:
            for data_source in resolve_sources(config.data.train) if config.data.train else []:
                hashes[str(data_source.path)] = _sha256(data_source.path)
        except UserError as err:
            hashes["unavailable"] = str(err)
        record["data_sha256"] = hashes
        record["config"] = config.model_dump(mode="json", serialize_as_any=True)
        status = read_status(Path(source))
        if status:
            record["metrics"] = status
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


def write_hf_folder(model: Any, tokenizer: Any, folder: Path, dtype: str, shard_size: str) -> None:
    """Save weights (sharded safetensors), tokenizer with chat template and generation config."""
    torch_dtype = _dtype(dtype)
    if torch_dtype is not None:
        model = model.to(torch_dtype)
    model.save_pretrained(folder, max_shard_size=shard_size, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def write_merged_folder(source: str, folder: Path, options: ExportOptions) -> None:
    """Merged Hugging Face folder in `folder`: weights, tokenizer, reproducibility record and model card."""
    model, tokenizer, config = merged_model(source)
    write_hf_folder(model, tokenizer, folder, options.dtype, options.shard_size)
    method = METHODS.get(config.method.name) if config is not None else None
    if method is not None and method.export is not None:  # e.g. a classification head and its class names
        method.export(RunLayout(Path(source)).model, folder)
    record = reproducibility_record(source, config)
    (folder / "reproducibility.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    (folder / "README.md").write_text(_card(record, options.name), encoding="utf-8")


EXPORTERS.register("hf")(
    Exporter(
        help="merged, sharded safetensors with tokenizer, chat template, generation config and a model card "
        "carrying a reproducibility record (--dtype, --shard-size)",
        write=write_merged_folder,
        next_steps=lambda out, options: [
            f"merged model: {out} (load it with transformers, or `tuneforge chat {out}`)"
        ],
    )
)
