"""The run directory: layout, status, saved model, model card, and loading a finished run back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tuneforge.config.load import dump_config, load_config
from tuneforge.config.schema import RunConfig
from tuneforge.errors import UserError

__all__ = ["load_run", "prepare_run_dir", "save_model", "write_model_card", "write_status"]

STATUS_FILE = "run.json"


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's status record ({} when there is none)."""
    path = run_dir / STATUS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_status(run_dir: Path, status: str, **info: Any) -> None:
    """Record the run's state (running, finished, failed) with details, atomically."""
    record = {**read_status(run_dir), "status": status, **info}
    tmp = run_dir / f".{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    tmp.replace(run_dir / STATUS_FILE)


def prepare_run_dir(config: RunConfig) -> Path:
    """Create the run directory; refuse one holding a finished run unless output.overwrite is true."""
    run_dir = Path(config.output.dir)
    if read_status(run_dir).get("status") == "finished":
        if not config.output.overwrite:
            raise UserError(
                f"{run_dir} already holds a finished run; choose another output.dir or set output.overwrite=true"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    write_status(run_dir, "running")
    return run_dir


def save_model(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save the adapter (peft or tuneforge's own) or the whole model, plus the tokenizer, as safetensors."""
    from tuneforge.models.adapters import ADAPTERS, adapter_params_of

    if folder.exists():
        shutil.rmtree(folder)
    params = adapter_params_of(model)
    save = ADAPTERS.get(params.name).save if params is not None else None
    if save is not None:
        save(model, folder)
    else:
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_model_card(run_dir: Path, config: RunConfig, summary: dict[str, Any]) -> None:
    """A short README.md saying how the model was made and how to use it."""
    adapter = config.adapter.model_dump()
    lines = [
        f"# {run_dir.name}",
        "",
        f"Fine-tuned with tuneforge from `{config.model.name_or_path}` by {config.method.name.upper()} "
        f"with the `{adapter.pop('name')}` adapter ({', '.join(f'{k}={v}' for k, v in adapter.items()) or 'defaults'}).",
        "",
        "| | |",
        "|---|---|",
        f"| data | {', '.join(config.data.train)}"
        + (" + self-replay of the base model's answers" if config.data.replay else "")
        + " |",
        f"| samples | {summary.get('train_samples')} train, {summary.get('val_samples')} validation |",
        f"| rows | {summary.get('data_summary')} |",
        f"| steps | {summary.get('steps')} ({summary.get('epochs', 0):.2f} epochs) |",
        f"| final train loss | {summary.get('final_loss', float('nan')):.4f} |",
        f"| final validation loss | {_fmt(summary.get('final_val_loss'))} |",
        f"| trainable parameters | {summary.get('trainable')} |",
        f"| tokens/s | {summary.get('tokens_per_s', 0):.0f} |",
        f"| time | {summary.get('seconds', 0):.0f} s |",
        "",
        "Files: `config.yaml` (the resolved config), `metrics.jsonl`, `loss.png`, `model/` (Hugging Face format).",
        "",
        f"Chat with it: `tuneforge chat {run_dir}`",
        "",
    ]
    (run_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def load_run(run_dir: Path, dtype: str = "auto", attn: str = "sdpa") -> Any:
    """Load a finished run: the saved model, or its base model with the saved adapter on top."""
    from tuneforge.models.adapters import ADAPTERS
    from tuneforge.models.load import LoadedModel, load_model

    config = load_config(run_dir / "config.yaml")
    model_dir = run_dir / "model"
    if not any(model_dir.glob("*.safetensors")):
        raise UserError(f"{run_dir} has no saved model yet (is the run finished? see {run_dir / STATUS_FILE})")
    spec = ADAPTERS.get(config.adapter.name)
    if spec.saves_full_model:
        loaded = load_model(str(model_dir), dtype=dtype, attn=attn)
        return LoadedModel(loaded.model, loaded.tokenizer, source=str(run_dir))
    # the base loads unquantised even for QLoRA (its adapter is plain LoRA), so that it also works without a GPU
    base = load_model(
        config.model.name_or_path, dtype=dtype, attn=attn, trust_remote_code=config.model.trust_remote_code
    )
    if spec.load is not None:
        model = spec.load(base.model, model_dir)
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base.model, str(model_dir))
    model.eval()
    return LoadedModel(model, base.tokenizer, source=str(run_dir))


def append_to_model_card(run_dir: Path, title: str, lines: list[str]) -> None:
    """Add a dated section (e.g. evaluation results) to the end of the run's README.md model card."""
    import datetime

    card = run_dir / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else f"# {run_dir.name}\n"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = [f"## {title} ({stamp})", "", *[f"- {line.strip()}" for line in lines], ""]
    card.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section), encoding="utf-8")
