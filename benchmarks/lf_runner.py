"""LLaMA-Factory's side of a benchmark: its own virtual environment (made once, reused), `llamafactory-cli train`
with a generated YAML and dataset_info.json, and its data preprocessing timed alone
(`LF_PYTHON lf_runner.py prep LF_YAML`, run by that environment's Python: this file imports only the standard
library at the top)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LF_VERSION = os.environ.get("BENCH_LF_VERSION", "0.9.5")
# Installed before LLaMA-Factory, and held by a constraint while it installs: a plain torch requirement would pull
# a multi-GB CUDA build where a CPU one is on local disk.
LF_TORCH = os.environ.get("BENCH_LF_TORCH", "torch==2.13.0")
RESULT_PREFIX = "BENCH_RESULT "
_PROBE_VERSIONS = (
    "import importlib.metadata as m, json; names = ['llamafactory', 'torch', 'transformers', 'peft', 'trl', "
    "'accelerate', 'datasets']; print(json.dumps({n: m.version(n) for n in names}))"
)


def venv_dir() -> Path:
    """Where LLaMA-Factory's environment lives: $TUNEFORGE_HOME/bench/lf-venv."""
    home = os.environ.get("TUNEFORGE_HOME") or str(Path.home() / ".cache" / "tuneforge")
    return Path(home).expanduser() / "bench" / "lf-venv"


def _run(command: list[str], what: str) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({' '.join(command)}):\n{(proc.stderr or proc.stdout)[-3000:]}")


def _imports(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, check=False).returncode == 0


def _repair(venv: Path) -> list[str]:
    """Make the text-only path importable where PyPI's torchvision/torchaudio builds need CUDA libraries.

    LLaMA-Factory imports torchaudio for its multimodal plugin but never torchvision on the text path;
    transformers imports torchvision only when it is installed. torchaudio imports without its compiled extension
    (as in its pex deployment), which audio decoding alone needs."""
    python = venv / "bin" / "python"
    notes = []
    if not _imports(python, "torchvision"):
        _run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], "removing torchvision")
        notes.append("torchvision uninstalled: its PyPI build needs CUDA libraries (unused on the text path)")
    if not _imports(python, "torchaudio"):
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for lib in sorted((Path(site) / "torchaudio" / "lib").glob("*.so")):
            lib.unlink()
        notes.append("torchaudio's compiled extension removed: its PyPI build needs CUDA (audio decoding unused)")
    if not _imports(python, "llamafactory.data"):
        raise SystemExit(f"LLaMA-Factory does not import in {venv}; delete that folder to reinstall")
    return notes


def ensure_venv() -> tuple[Path, dict[str, Any]]:
    """LLaMA-Factory's environment (created on first use): its Python and what was installed, with any repairs."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    stamp = venv / f".bench-{LF_VERSION}-{LF_TORCH.replace('=', '')}.json"
    if stamp.is_file() and python.is_file():
        return python, json.loads(stamp.read_text(encoding="utf-8"))
    print(f"installing LLaMA-Factory {LF_VERSION} with {LF_TORCH} into {venv} (once)", flush=True)
    start = time.perf_counter()
    if not python.is_file():
        _run([sys.executable, "-m", "venv", str(venv)], "creating the virtual environment")
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    _run([*pip, "--upgrade", "pip"], "upgrading pip")
    _run([*pip, LF_TORCH], f"installing {LF_TORCH}")
    constraints = venv / "constraints.txt"
    constraints.write_text(LF_TORCH + "\n", encoding="utf-8")
    _run([*pip, "-c", str(constraints), f"llamafactory=={LF_VERSION}"], f"installing llamafactory=={LF_VERSION}")
    notes = _repair(venv)
    info = {"install_s": round(time.perf_counter() - start, 1), "repairs": notes}
    stamp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return python, info


def versions(python: Path) -> dict[str, str]:
    """Versions of LLaMA-Factory and its stack in its environment."""
    out = subprocess.run([str(python), "-c", _PROBE_VERSIONS], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def tool_env(base: dict[str, str], work: Path) -> dict[str, str]:
    """Environment for LLaMA-Factory: offline, its `datasets` cache inside the work folder (a cold cache each run)."""
    env = dict(base)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_CACHE=str(work / "hf-datasets"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def write_inputs(config: dict[str, Any], dataset_info: dict[str, Any], work: Path) -> Path:
    """Write dataset_info.json into the data folder and the YAML into `work`; the YAML's path."""
    dataset_dir = Path(config["dataset_dir"])
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "dataset_info.json").write_text(json.dumps(dataset_info, indent=2), encoding="utf-8")
    path = work / "lf.yaml"
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in config.items()), encoding="utf-8")
    return path


def read_output(output_dir: Path) -> tuple[list[float], float | None, int | None]:
    """Losses per logged step (trainer_log.jsonl), training seconds and steps (train_results.json, trainer_state)."""
    losses = []
    log = output_dir / "trainer_log.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line) if line.strip() else {}
            if isinstance(record.get("loss"), (int, float)):
                losses.append(float(record["loss"]))
    results = output_dir / "train_results.json"
    runtime = json.loads(results.read_text(encoding="utf-8")).get("train_runtime") if results.is_file() else None
    state = output_dir / "trainer_state.json"
    steps = json.loads(state.read_text(encoding="utf-8")).get("global_step") if state.is_file() else None
    return losses, runtime, steps


def train(python: Path, config: Path, output_dir: Path, env: dict[str, str], log: Path, cuda: bool) -> Any:
    """Run `llamafactory-cli train CONFIG` measured, and read its output folder."""
    from measure import ToolRun, run_measured

    cli = python.with_name("llamafactory-cli")
    measured = run_measured([str(cli), "train", str(config)], log, cwd=config.parent, env=env, cuda=cuda)
    losses, runtime, steps = read_output(output_dir)
    version = versions(python)["llamafactory"]
    peak = (measured.returncode, measured.wall_s, measured.peak_rss, measured.peak_cuda, str(log))
    return ToolRun("LLaMA-Factory", version, *peak, losses=losses, train_s=runtime, steps=steps)


def prepare(python: Path, config: Path, env: dict[str, str], log: Path) -> Any:
    """LLaMA-Factory's preprocessing of the job's data (load, template, tokenise) in a measured subprocess."""
    from measure import ToolRun, run_measured

    command = [str(python), str(Path(__file__).resolve()), "prep", str(config)]
    measured = run_measured(command, log, cwd=config.parent, env=env)
    stages: dict[str, Any] = {}
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if line.startswith(RESULT_PREFIX):
            stages = json.loads(line[len(RESULT_PREFIX) :])
            break
    version = versions(python)["llamafactory"]
    peak = (measured.returncode, measured.wall_s, measured.peak_rss, 0, str(log))
    return ToolRun("LLaMA-Factory", version, *peak, extra=stages)


def _prep_main(config_path: str) -> int:
    """In LLaMA-Factory's environment: parse the YAML as `train` does, then time its dataset preprocessing."""
    start = time.perf_counter()
    import yaml
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    with open(config_path, encoding="utf-8") as handle:
        args = yaml.safe_load(handle)
    model_args, data_args, training_args, _, _ = get_train_args(args)
    imported = time.perf_counter()
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    loaded = time.perf_counter()
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    built = time.perf_counter()
    dataset = module["train_dataset"]
    result = {
        "samples": len(dataset),
        "tokens": sum(len(ids) for ids in dataset["input_ids"]),
        "supervised_tokens": sum(sum(1 for t in labels if t != -100) for labels in dataset["labels"]),
        "import_s": imported - start,
        "tokenizer_s": loaded - imported,
        "prep_s": built - loaded,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "prep":
        sys.exit("usage: LF_PYTHON benchmarks/lf_runner.py prep LF_YAML")
    sys.exit(_prep_main(sys.argv[2]))
