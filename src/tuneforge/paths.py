"""Where tuneforge keeps its caches: one home for the layout of $TUNEFORGE_HOME."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_cache_dir", "hub_cache_dir", "model_cache_dir", "replay_cache_dir", "tuneforge_home"]


def tuneforge_home() -> Path:
    """Where caches live: $TUNEFORGE_HOME, default ~/.cache/tuneforge."""
    return Path(os.environ.get("TUNEFORGE_HOME") or Path.home() / ".cache" / "tuneforge").expanduser()


def model_cache_dir(cache_name: str) -> Path:
    """The safetensors cache folder of a zoo model: $TUNEFORGE_HOME/models/<cache_name>."""
    return tuneforge_home() / "models" / cache_name


def data_cache_dir() -> Path:
    """Where tokenised datasets are cached: $TUNEFORGE_HOME/cache/data."""
    return tuneforge_home() / "cache" / "data"


def hub_cache_dir() -> Path:
    """Where models fetched from a hub live: $TUNEFORGE_HOME/cache/hub/<hub>/<owner>--<name>/<revision>."""
    return tuneforge_home() / "cache" / "hub"


def replay_cache_dir() -> Path:
    """Where self-replay answers of base models are cached: $TUNEFORGE_HOME/replay."""
    return tuneforge_home() / "replay"
