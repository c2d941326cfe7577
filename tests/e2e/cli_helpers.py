"""Run the real `tuneforge` CLI in a subprocess and write small configs for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

MEMORISE = [
    ("What colour is the sky?", "The sky is blue."),
    ("Name a fruit.", "An apple is a fruit."),
    ("What is two plus two?", "Two plus two is four."),
    ("Say hello.", "Hello there, friend."),
    ("What do cats say?", "Cats say meow."),
    ("Where is the sun?", "The sun is in the sky."),
    ("What is water?", "Water is a clear liquid."),
    ("Count to three.", "One, two, three."),
]


def run_cli(*args: str, cwd: Path, timeout: int = 300, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`tuneforge ARGS...` as a user would run it, capturing output (and typing `stdin`, if given)."""
    return subprocess.run(
        [sys.executable, "-m", "tuneforge.cli.main", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_memorisation_set(path: Path) -> Path:
    """A small OpenAI-messages JSONL file a tiny model can memorise."""
    lines = [
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        for q, a in MEMORISE
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_config(path: Path, model_dir: Path, data_file: Path, out: Path, **sections: dict[str, Any]) -> Path:
    """A config for a short run on a tiny model; `sections` override or add keys per section."""
    config: dict[str, Any] = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": [str(data_file)], "cutoff_len": 128, "val_size": 0},
        "adapter": {"name": "lora", "r": 8, "alpha": 16},
        "train": {"max_steps": 4, "batch_size": 4, "grad_accum": 1, "learning_rate": 1.0e-3, "warmup_ratio": 0.0},
        "output": {"dir": str(out)},
    }
    for name, values in sections.items():
        if name == "adapter":
            config["adapter"] = values  # an adapter's keys depend on its name: replace, never merge
        else:
            config.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def launch(config: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuneforge.cli.main", "train", str(config)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(run_dir: Path, step: int, process: subprocess.Popen[str], timeout: float = 240) -> None:
    """Poll until checkpoints/step-<step>/trainer_state.json exists (the run is still going)."""
    marker = run_dir / "checkpoints" / f"step-{step}" / "trainer_state.json"
    deadline = time.monotonic() + timeout
    while not marker.is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.005)


def newest_checkpoint(run_dir: Path) -> Path:
    found = [p for p in (run_dir / "checkpoints").glob("step-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1]))
