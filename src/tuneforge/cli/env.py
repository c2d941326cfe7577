"""`tuneforge env`: versions, hardware, threads and accelerators, for bug reports."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "collect_environment", "run"]

NAME = "env"
HELP = "print versions, hardware and threads"

PACKAGES = ("tuneforge", "torch", "transformers", "peft", "accelerate", "safetensors", "gguf")


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.set_defaults(handler=run)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect_environment() -> dict[str, str]:
    """Everything `tuneforge env` prints, as strings."""
    import torch

    from tuneforge.paths import tuneforge_home

    info = {"python": platform.python_version(), "platform": platform.platform()}
    info.update({name: _version(name) for name in PACKAGES})
    info["cpu cores"] = str(os.cpu_count())
    info["torch threads"] = str(torch.get_num_threads())
    info["cuda available"] = str(torch.cuda.is_available())
    if torch.cuda.is_available():
        info["cuda device"] = torch.cuda.get_device_name(0)
        info["bf16 supported"] = str(torch.cuda.is_bf16_supported())
    info["mps available"] = str(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
    info["TUNEFORGE_HOME"] = str(tuneforge_home())
    info["HF_HUB_OFFLINE"] = os.environ.get("HF_HUB_OFFLINE", "unset")
    return info


def run(args: argparse.Namespace) -> int:
    from tuneforge.progress import console

    for key, value in collect_environment().items():
        console.print(f"{key:>16}: {value}", highlight=False, soft_wrap=True)
    return 0
