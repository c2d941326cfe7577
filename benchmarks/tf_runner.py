"""tuneforge's side of a benchmark: its CLI as a subprocess (`tuneforge estimate`, `tuneforge train`), and data
preparation timed stage by stage in a subprocess of its own (`python tf_runner.py prep CONFIG CACHE_DIR`)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from measure import ToolRun, run_measured

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH_RESULT "


def tuneforge_command() -> list[str]:
    """The `tuneforge` entry point of the environment the harness runs in."""
    script = Path(sys.executable).with_name("tuneforge")
    if script.is_file():
        return [str(script)]
    found = shutil.which("tuneforge")
    return [found] if found else [sys.executable, "-m", "tuneforge.cli.main"]


def versions() -> dict[str, str]:
    """Versions of tuneforge and the libraries under it, in this environment."""
    names = ("tuneforge", "torch", "transformers", "peft", "accelerate")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_config(config: dict[str, Any], path: Path) -> Path:
    """Write a tuneforge YAML config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def estimate(config: Path, env: dict[str, str]) -> dict[str, Any]:
    """`tuneforge estimate CONFIG --json`, with the seconds it took; an `error` key when it failed."""
    start = time.perf_counter()
    proc = subprocess.run(
        [*tuneforge_command(), "estimate", str(config), "--json"], capture_output=True, text=True, env=env, check=False
    )
    seconds = time.perf_counter() - start
    text = proc.stdout[proc.stdout.find("{") :] if "{" in proc.stdout else ""
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        return {"error": (proc.stderr or proc.stdout).strip()[-2000:], "returncode": proc.returncode}
    result["estimate_s"] = seconds
    return result


def read_run(run_dir: Path) -> tuple[list[float], float | None, int | None, dict[str, Any]]:
    """Training losses per logged step, training seconds and steps from a tuneforge run directory."""
    losses = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            record = json.loads(line) if line.strip() else {}
            if isinstance(record.get("loss"), (int, float)):
                losses.append(float(record["loss"]))
    run_json = run_dir / "run.json"
    summary = json.loads(run_json.read_text(encoding="utf-8")) if run_json.is_file() else {}
    extra = {key: summary[key] for key in ("data_summary", "train_samples", "tokens_per_s") if key in summary}
    return losses, summary.get("seconds"), summary.get("steps"), extra


def train(config: Path, run_dir: Path, env: dict[str, str], log: Path, cuda: bool) -> ToolRun:
    """Run `tuneforge train CONFIG` measured, and read its run directory."""
    measured = run_measured([*tuneforge_command(), "train", str(config)], log, cwd=ROOT, env=env, cuda=cuda)
    losses, seconds, steps, extra = read_run(run_dir)
    return ToolRun(
        "tuneforge",
        versions()["tuneforge"],
        measured.returncode,
        measured.wall_s,
        measured.peak_rss,
        measured.peak_cuda,
        str(log),
        losses,
        seconds,
        steps,
        extra,
    )


def prepare(config: Path, cache_dir: Path, env: dict[str, str], log: Path) -> ToolRun:
    """Data preparation of CONFIG's data in a measured subprocess; the stage timings come from its last line."""
    command = [sys.executable, str(Path(__file__).resolve()), "prep", str(config), str(cache_dir)]
    measured = run_measured(command, log, cwd=ROOT, env=env)
    stages = last_result(log)
    return ToolRun(
        "tuneforge",
        versions()["tuneforge"],
        measured.returncode,
        measured.wall_s,
        measured.peak_rss,
        0,
        str(log),
        extra=stages,
    )


def last_result(log: Path) -> dict[str, Any]:
    """The JSON a prep subprocess printed after RESULT_PREFIX (empty when it printed none)."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    for line in reversed(lines):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return {}


def _prep_main(config_path: str, cache_dir: str) -> int:
    """Time reading + rendering + masking + dedup (build), packing and the cache of CONFIG's data, in-process."""
    start = time.perf_counter()
    import tuneforge.methods  # noqa: F401  (registers the method and adapter sections a config is checked against)
    from tuneforge.config.load import load_config
    from tuneforge.data.build import build_dataset
    from tuneforge.data.packing import best_fit_packs
    from tuneforge.models.load import load_tokenizer

    config = load_config(config_path)
    imported = time.perf_counter()
    tokenizer = load_tokenizer(config.model.name_or_path)
    loaded = time.perf_counter()
    prepared, hit = build_dataset(config.data, tokenizer, config.train.seed, cache_dir=Path(cache_dir))
    built = time.perf_counter()
    lengths = [sample.total_tokens for sample in prepared.train]
    packs = best_fit_packs(lengths, config.data.cutoff_len) if config.data.packing else []
    packed = time.perf_counter()
    result = {
        "cache_hit": hit,
        "samples": len(lengths),
        "tokens": sum(lengths),
        "supervised_tokens": sum(sample.supervised_tokens for sample in prepared.train),
        "packs": len(packs),
        "report": prepared.report.summary(),
        "import_s": imported - start,
        "tokenizer_s": loaded - imported,
        "build_s": built - loaded,
        "pack_s": packed - built,
        "prep_s": packed - loaded,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "prep":
        sys.exit("usage: python benchmarks/tf_runner.py prep CONFIG CACHE_DIR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(_prep_main(sys.argv[2], sys.argv[3]))
