"""What `tuneforge serve` serves: the base model and the LoRA adapters on top of it (not how: see engines/).

MODEL_OR_RUN_DIR may be a model (zoo name, folder, .gguf file, hub id), a run that saved a whole model, or a LoRA
run: then its base model is served under the base's name and the run's adapter under the run's name.
`--adapter NAME=PATH` adds a LoRA adapter from a tuneforge run directory (whose base model must be the served one)
or from a peft adapter folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneforge.access import remote_code_allowed
from tuneforge.errors import UserError
from tuneforge.models.rundir import RunLayout, is_run_dir, read_run_record
from tuneforge.models.zoo import ZOO, ensure_cached, find_packaged_gguf
from tuneforge.serve.catalog import Catalog

__all__ = ["Adapter", "Plan", "gguf_file", "model_folder", "plan_serving"]


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter served as `name`, loaded from the peft adapter folder `folder`."""

    name: str
    folder: Path


@dataclass(frozen=True)
class Plan:
    """The base model to load, the id it is served as, and the adapters on top of it."""

    base: str
    base_name: str
    adapters: tuple[Adapter, ...] = ()
    trust_remote_code: bool = False
    default: str = ""

    def catalog(self) -> Catalog:
        return Catalog(self.base_name, tuple(a.name for a in self.adapters), self.default or self.base_name)


def plan_serving(model: str, name: str | None = None, adapter_specs: list[str] | None = None) -> Plan:
    """Work out what to serve from the command line, checking every adapter's base model; raises UserError."""
    path = Path(model).expanduser()
    if is_run_dir(path) and _is_adapter_run(path):
        record = read_run_record(path)
        own = Adapter(name or path.resolve().name, _adapter_folder(path))
        plan = Plan(record.base_model, _display_name(record.base_model), (own,), remote_code_allowed(), own.name)
    else:
        plan = Plan(model, name or _display_name(model), trust_remote_code=remote_code_allowed())
    extra = tuple(_parse_adapter(spec, plan.base) for spec in adapter_specs or [])
    plan = Plan(plan.base, plan.base_name, plan.adapters + extra, plan.trust_remote_code, plan.default)
    _check_unique([plan.base_name, *(a.name for a in plan.adapters)])
    return plan


def _parse_adapter(spec: str, base: str) -> Adapter:
    """`NAME=PATH` → Adapter, refusing runs trained on another base model."""
    name, sep, raw = spec.partition("=")
    if not (sep and name.strip() and raw.strip()):
        raise UserError(
            f"--adapter {spec!r}: write NAME=PATH (a tuneforge LoRA run directory or a peft adapter folder)"
        )
    name, path = name.strip(), Path(raw.strip()).expanduser()
    if is_run_dir(path):
        return Adapter(name, _run_adapter(name, path, base))
    if (path / "adapter_config.json").is_file():
        _check_recorded_base(name, path, base)
        return Adapter(name, path)
    raise UserError(
        f"--adapter {name}: {path} is neither a tuneforge run directory with a LoRA adapter "
        "nor a peft adapter folder (with adapter_config.json)"
    )


def _run_adapter(name: str, run_dir: Path, base: str) -> Path:
    if not _is_adapter_run(run_dir):
        raise UserError(
            f"--adapter {name}: run {run_dir} saved no peft adapter (model/adapter_config.json), e.g. a whole "
            f"fine-tuned model; serve it on its own: tuneforge serve {run_dir}"
        )
    trained_on = read_run_record(run_dir).base_model
    if _identity(trained_on) != _identity(base):
        raise UserError(
            f"--adapter {name}: run {run_dir} was trained on base model {trained_on}, "
            f"but this server's base model is {base}; an adapter only works on the model it was trained on"
        )
    return _adapter_folder(run_dir)


def _check_recorded_base(name: str, folder: Path, base: str) -> None:
    """Refuse a peft folder whose recorded base is a local model other than the served one (hub ids: trusted)."""
    recorded = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if recorded and Path(recorded).exists() and Path(base).expanduser().exists():
        if _identity(recorded) != _identity(base):
            raise UserError(
                f"--adapter {name}: {folder} was made for base model {recorded}, but this server's base model is {base}"
            )


def _check_unique(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UserError(
                f"two served models are named {name!r}: rename one (--name, or NAME= in --adapter NAME=PATH)"
            )
        seen.add(name)


def _is_adapter_run(run_dir: Path) -> bool:
    return RunLayout(run_dir).peft_adapter.is_file()


def _adapter_folder(run_dir: Path) -> Path:
    folder = RunLayout(run_dir).model
    if not any(folder.glob("adapter_model.*")):
        raise UserError(f"{run_dir} has no saved adapter yet (is the run finished?)")
    return folder


def _identity(source: str) -> str:
    """What makes two model sources the same model: the resolved folder for local paths, else the name."""
    path = Path(source).expanduser()
    if is_run_dir(path):
        path = RunLayout(path).model
    return str(path.resolve()) if path.exists() else source


def _display_name(source: str) -> str:
    """The default served id of a model: a local path's last part (its name for a .gguf file), else as given."""
    path = Path(source).expanduser()
    return path.resolve().name if path.exists() else source


def model_folder(base: str) -> str:
    """A folder (or hub id) an engine can load: a zoo model's safetensors cache, a full-model run's model folder."""
    path = Path(base).expanduser()
    if base in ZOO:
        return str(ensure_cached(ZOO[base]))
    if is_run_dir(path):
        return str(RunLayout(path).model)
    return base


def gguf_file(base: str) -> Path:
    """The GGUF file llama.cpp runs: the given .gguf file, or a zoo model's packaged one."""
    if base in ZOO:
        gguf = find_packaged_gguf(ZOO[base])
        if gguf is None:
            raise UserError(f"model {base!r} needs its weights package: run `{ZOO[base].install_hint()}`")
        return gguf
    path = Path(base).expanduser()
    if not (path.is_file() and path.suffix == ".gguf"):
        raise UserError(f"--engine llamacpp runs .gguf files (or zoo models); {base} is not one")
    return path
