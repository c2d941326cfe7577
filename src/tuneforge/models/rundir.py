"""The run directory: its layout, its status record, what it recorded, its model card, and loading it back.

    RUN_DIR/config.yaml       the resolved config (every default written out)
            run.json          status (running, finished, failed, interrupted) and the run's numbers
            environment.json  versions, hardware, threads and numeric settings the run trained with
            model/            the saved model: adapter weights (+ tokenizer) or a whole Hugging Face model
            checkpoints/      step-N checkpoints (see tuneforge.train.checkpoint)
            eval/             before/after comparison and evaluation results
            metrics.jsonl, loss.png, data_report.txt, README.md (the model card)

Every module that asks "is this a run directory?" or needs one of these paths asks this module.
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.atomic import atomic_write_text
from tuneforge.config.load import dump_config, validate_variant
from tuneforge.config.schema import AdapterParams, RunConfig
from tuneforge.config.variants import VARIANT_SECTIONS
from tuneforge.errors import UserError
from tuneforge.models.adapters import ADAPTERS, adapter_params_of
from tuneforge.models.adapters.base import remember_adapter
from tuneforge.models.hf import LoadedModel
from tuneforge.models.sources import load_pretrained, require_safetensors

__all__ = [
    "RunLayout",
    "RunRecord",
    "append_to_model_card",
    "is_run_dir",
    "load_run",
    "prepare_run_dir",
    "read_run_record",
    "read_status",
    "save_model",
    "write_model_card",
    "write_status",
]


@dataclass(frozen=True)
class RunLayout:
    """The paths inside one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def status(self) -> Path:
        return self.root / "run.json"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def environment(self) -> Path:
        return self.root / "environment.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def data_report(self) -> Path:
        return self.root / "data_report.txt"

    @property
    def model_card(self) -> Path:
        return self.root / "README.md"

    @property
    def peft_adapter(self) -> Path:
        """adapter_config.json of a run that saved a peft adapter."""
        return self.model / "adapter_config.json"


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` is a tuneforge run directory (its config and model folder are there)."""
    layout = RunLayout(Path(path).expanduser())
    return layout.root.is_dir() and layout.config.is_file() and layout.model.is_dir()


# ---------------------------------------------------------------------------------------------------- status


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's status record ({} when there is none)."""
    path = RunLayout(run_dir).status
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_status(run_dir: Path, status: str, clear: tuple[str, ...] = (), **info: Any) -> None:
    """Record the run's state (running, finished, failed) with details, atomically; keys in `clear` are dropped."""
    record = {key: value for key, value in read_status(run_dir).items() if key not in clear}
    record.update(status=status, **info)
    atomic_write_text(RunLayout(run_dir).status, json.dumps(record, indent=2))


# ---------------------------------------------------------------------------------------------------- what it recorded


@dataclass(frozen=True)
class RunRecord:
    """What loading a run needs from its config: the base model and the adapter."""

    base_model: str
    adapter: AdapterParams
    variables: dict[str, str]


def read_run_record(run_dir: Path) -> RunRecord:
    """The base model, adapter settings and data variables a run recorded in its config.yaml."""
    path = RunLayout(run_dir).config
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        model, data = raw.get("model") or {}, raw.get("data") or {}
        adapter_variant = next(v for v in VARIANT_SECTIONS if v.key == "adapter")
        adapter = validate_variant(adapter_variant, raw.get("adapter"), str(path))
        return RunRecord(
            base_model=str(model["name_or_path"]),
            adapter=adapter,  # type: ignore[arg-type]
            variables={str(k): str(v) for k, v in (data.get("variables") or {}).items()},
        )
    except (OSError, yaml.YAMLError, KeyError, AttributeError, TypeError) as err:
        raise UserError(f"{path}: not a readable tuneforge run config ({err})") from None


# ---------------------------------------------------------------------------------------------------- writing


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
    RunLayout(run_dir).config.write_text(dump_config(config), encoding="utf-8")
    write_status(run_dir, "running")
    return run_dir


def save_model(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save the adapter (peft or tuneforge's own) or the whole model, plus the tokenizer, as safetensors."""
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
    RunLayout(run_dir).model_card.write_text("\n".join(lines), encoding="utf-8")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def append_to_model_card(run_dir: Path, title: str, lines: list[str]) -> None:
    """Add a dated section (e.g. evaluation results) to the end of the run's README.md model card."""
    card = RunLayout(run_dir).model_card
    text = card.read_text(encoding="utf-8") if card.is_file() else f"# {run_dir.name}\n"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = [f"## {title} ({stamp})", "", *[f"- {line.strip()}" for line in lines], ""]
    card.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------- loading


def load_run(run_dir: Path, dtype: str = "auto", attn: str = "sdpa", trust_remote_code: bool = False) -> LoadedModel:
    """Load a finished run: the saved model, or its base model with the saved adapter on top.

    The run's recorded `model.trust_remote_code` is ignored on purpose (an edited run folder must not run code):
    only the caller (the command line) can turn it on.
    """
    layout = RunLayout(run_dir)
    record = read_run_record(run_dir)
    if not layout.model.is_dir() or not any(layout.model.iterdir()):
        raise UserError(f"{run_dir} has no saved model yet (is the run finished? see {layout.status})")
    require_safetensors(layout.model)
    spec = ADAPTERS.get(record.adapter.name)
    if spec.saves_full_model:
        loaded = load_pretrained(str(layout.model), dtype=dtype, attn=attn, trust_remote_code=trust_remote_code)
        return LoadedModel(loaded.model, loaded.tokenizer, source=str(run_dir))
    # the base loads unquantised even for QLoRA (its adapter is plain LoRA), so that it also works without a GPU
    base_path = Path(record.base_model).expanduser()
    if is_run_dir(base_path):
        base = load_run(base_path, dtype=dtype, attn=attn, trust_remote_code=trust_remote_code)
    else:
        base = load_pretrained(record.base_model, dtype=dtype, attn=attn, trust_remote_code=trust_remote_code)
    if spec.load is not None:
        model = spec.load(base.model, layout.model)
    else:
        from peft import PeftModel

        if not (layout.model / "adapter_model.safetensors").is_file():  # peft would fall back to a pickle file
            raise UserError(f"{layout.model}: no adapter_model.safetensors; tuneforge loads safetensors weights only")
        model = PeftModel.from_pretrained(base.model, str(layout.model))
    model.eval()
    return LoadedModel(remember_adapter(model, record.adapter), base.tokenizer, source=str(run_dir))
