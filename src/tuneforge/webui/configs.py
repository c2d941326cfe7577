"""From a filled-in form to the config `tuneforge train` runs: paths sandboxed, validated by the CLI's own loader.

`form_config` assembles the raw config (`forms.assemble`), checks every path in it against the workspace
(`sandbox_paths`) and validates it with `tuneforge.config.load.config_from_dict`, so the page shows the very
errors the command line would. `check_data_fits` reads the rows (no tokenising) and asks the chosen method's
registration whether it can learn from their kinds, before anything starts.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.atomic import atomic_write_text
from tuneforge.config.load import config_from_dict, load_config
from tuneforge.config.schema import RunConfig
from tuneforge.data.build import cleaning_options, data_sources
from tuneforge.data.catalog import bundled_names
from tuneforge.data.pipeline import read_sources
from tuneforge.data.quality import DataReport
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.methods.base import SAMPLE_KINDS
from tuneforge.models.rundir import read_status
from tuneforge.models.sources import looks_like_hub_id
from tuneforge.models.zoo import ZOO
from tuneforge.webui.forms import FieldSpec, assemble
from tuneforge.webui.workspace import Workspace

__all__ = [
    "FORM_SOURCE",
    "FormConfig",
    "check_data_fits",
    "check_output",
    "cli_argv",
    "config_file_for",
    "form_config",
    "import_config",
    "method_data_kinds",
    "read_config_file",
    "sandbox_paths",
    "save_config",
    "train_argv",
    "train_command_text",
]

FORM_SOURCE = "<web form>"
_FLAGS = {"auto", "true", "false"}
_MODULE_NAME = re.compile(r"^[A-Za-z_][\w.]*$")
# Where the config holds paths, and what each must be: an input (model, data, folder), an output inside the
# workspace, or Python code (inside the workspace only).
_PATH_KEYS: dict[tuple[str, ...], str] = {
    ("model", "name_or_path"): "model",
    ("data", "train"): "data",
    ("data", "eval"): "data",
    ("data", "dataset_dir"): "input",
    ("data", "replay", "prompts"): "data",
    ("train", "replay", "data"): "data",
    ("train", "ewc", "prompts"): "data",
    ("train", "resume"): "resume",
    ("eval", "questions"): "data",
    ("eval", "general"): "data",
    ("eval", "judge"): "judge",
    ("output", "dir"): "output",
    ("plugins",): "code",
    ("method", "teacher"): "model",
    ("method", "rewards", "*", "path"): "model",
}


@dataclass
class FormConfig:
    """The raw config of a form (as YAML would hold it) and its validated RunConfig."""

    raw: dict[str, Any]
    config: RunConfig

    def yaml(self) -> str:
        """The config file the page writes: only what differs from the defaults."""
        return yaml.safe_dump(self.raw, sort_keys=False, allow_unicode=True)


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "~", "\\")) or ".." in Path(text).parts or bool(re.match(r"^[A-Za-z]:[\\/]", text))


def _check_entry(text: str, kind: str, raw: dict[str, Any], ws: Workspace, what: str, absolute: bool) -> str:
    """One path-holding string of the config, made safe (or refused); see `_PATH_KEYS`."""
    if kind == "model":
        hub = bool((raw.get("model") or {}).get("hub"))
        if text in ZOO or (hub and looks_like_hub_id(text) and not (ws.root / text).exists()):
            return text
        real = ws.resolve(text, what)
    elif kind == "data":
        if text in bundled_names() and not (ws.root / text).exists():
            return text
        real = ws.resolve(text, what)
    elif kind == "judge":
        if text.startswith(("http://", "https://")):
            return text
        return _check_entry(text, "model", raw, ws, what, absolute)
    elif kind == "resume":
        if text.lower() in _FLAGS:
            return text
        real = ws.resolve(text, what, output=True)
    elif kind == "code":
        if _MODULE_NAME.match(text) and not text.endswith(".py"):
            return text
        real = ws.resolve(text, what, output=True)
    elif kind == "output":
        real = ws.resolve(text, what, output=True, must_exist=False)
    else:
        real = ws.resolve(text, what)
    return str(real) if absolute else ws.display(real)


def sandbox_paths(raw: dict[str, Any], ws: Workspace, absolute: bool = False) -> dict[str, Any]:
    """A copy of `raw` whose paths are checked against the workspace: relative to it (or absolute with
    `absolute`), names kept. Any other string that looks like a path must stay inside the workspace too."""

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, (*path, str(k))) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, (*path, "*") if isinstance(v, dict) else path) for v in node]
        if not isinstance(node, str) or not node.strip():
            return node
        kind = _PATH_KEYS.get(path)
        what = ".".join(p for p in path if p != "*")
        if kind is not None:
            return _check_entry(node.strip(), kind, raw, ws, what, absolute)
        if _looks_like_path(node):
            real = ws.resolve(node, what)
            return str(real) if absolute else ws.display(real)
        return node

    return walk(raw, ())


def form_config(
    specs: list[FieldSpec], values: dict[str, Any], method: str, adapter: str, ws: Workspace, absolute: bool = False
) -> FormConfig:
    """The form as a validated config; UserError (the CLI's message) when a value or path is wrong."""
    raw = sandbox_paths(assemble(specs, values, method, adapter), ws, absolute=absolute)
    return FormConfig(raw, config_from_dict(raw, FORM_SOURCE))


def method_data_kinds(method: str, lang_names: dict[str, str] | None = None) -> list[str]:
    """The sample kinds `method` trains on, as words (English unless `lang_names` maps the kind ids)."""
    names = lang_names or SAMPLE_KINDS
    return [names[kind] for kind in sorted(METHODS.get(method).data_kinds)]


def check_data_fits(config: RunConfig, ws: Workspace) -> dict[str, int]:
    """Read the training rows (no tokenising) and refuse data the method cannot learn from, before Start.

    Returns the number of rows of each sample kind. `config` must hold absolute (sandboxed) paths.
    """
    report = DataReport()
    sources = data_sources(config.data, ws.root)
    conversations = read_sources(sources, cleaning_options(config.data, config.train.seed), report)
    if not conversations:
        raise UserError(f"no usable row in the training data ({report.summary()}); check it in the data preview")
    kinds: dict[str, int] = {}
    for conversation in conversations:
        kinds[conversation.kind] = kinds.get(conversation.kind, 0) + 1
    METHODS.get(config.method.name).check_data(config.method.name, set(kinds))
    return kinds


def check_output(config: RunConfig, ws: Workspace) -> None:
    """Refuse a run folder holding a finished run (unless output.overwrite), as `tuneforge train` would."""
    status = read_status(ws.root / config.output.dir).get("status")
    if status == "finished" and not config.output.overwrite:
        raise UserError(
            f"{config.output.dir} already holds a finished run; choose another run folder or tick "
            "output.overwrite to replace it"
        )


def config_file_for(ws: Workspace, output_dir: str) -> Path:
    """Where the config of the run in `output_dir` is written: configs/<run folder name>.yaml."""
    name = re.sub(r"[^\w.\-]+", "_", Path(output_dir).name) or "run"
    return ws.configs_dir / f"{name}.yaml"


def save_config(ws: Workspace, form: FormConfig, name: str | None = None) -> Path:
    """Write the form's YAML into configs/ (atomically); returns the file."""
    target = config_file_for(ws, name or form.raw["output"]["dir"])
    atomic_write_text(target, form.yaml())
    return target


def import_config(ws: Workspace, source: Path, limit_bytes: int = 1 << 20) -> Path:
    """Copy an uploaded YAML config into configs/ (at most `limit_bytes`); returns its path there."""
    if source.suffix.lower() not in (".yaml", ".yml"):
        raise UserError(f"{source.name}: a config is a .yaml file")
    if source.stat().st_size > limit_bytes:
        raise UserError(f"{source.name} is larger than {limit_bytes >> 10} KB: not a tuneforge config")
    name = re.sub(r"[^\w.\-]+", "_", source.name).lstrip(".") or "config.yaml"
    target = ws.configs_dir / name
    atomic_write_text(target, source.read_text(encoding="utf-8"))
    return target


def read_config_file(ws: Workspace, typed: str) -> RunConfig:
    """Load a YAML config from inside the workspace (or a data folder), validated like `tuneforge train`."""
    path = ws.resolve(typed, "config file")
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise UserError(f"{typed}: a config is a .yaml file")
    return load_config(path)


def cli_argv(verb: str, *args: Any) -> list[str]:
    """`tuneforge VERB ARGS...` as the argument list the page runs (this Python, no shell)."""
    return [sys.executable, "-m", "tuneforge.cli.main", verb, *(str(a) for a in args)]


def train_argv(config_file: Path, ws: Workspace) -> list[str]:
    """The argument list the page runs (in the workspace folder): `tuneforge train configs/NAME.yaml`."""
    return cli_argv("train", ws.display(config_file))


def train_command_text(config_file: Path, ws: Workspace) -> str:
    """The same command as a user types it."""
    return f"cd {shlex.quote(str(ws.root))} && " + shlex.join(["tuneforge", "train", ws.display(config_file)])
