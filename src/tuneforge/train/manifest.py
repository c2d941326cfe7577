"""Checkpoint manifests: the size and sha256 of every file of a checkpoint, written last, checked before a resume.

A checkpoint folder appears under its final name only once complete (see tuneforge.train.checkpoint), but a disk
can still lose or truncate files afterwards (a power cut before the data reached the platter, a full disk on a
network file system, a copy cut short). The manifest lets a resume tell such a checkpoint from a good one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_FILE", "file_digest", "read_manifest", "verify_checkpoint", "write_manifest"]

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> dict[str, Any]:
    """Write `folder/manifest.json` listing every other file in `folder` with its size and sha256; returns it."""
    files = {
        path.name: {"size": path.stat().st_size, "sha256": file_digest(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }
    manifest = {"version": MANIFEST_VERSION, "files": files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of `folder` (None when there is none); an unreadable one raises ValueError."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{MANIFEST_FILE} is unreadable ({err})") from None
    return manifest


def verify_checkpoint(folder: Path, required: bool = True) -> list[str]:
    """What is wrong with the checkpoint at `folder` against its manifest ([] when every file is intact).

    Sizes are compared first (cheap, and what a truncation changes), then the sha256 of every file. Without
    `required`, a checkpoint without a manifest (written before manifests existed) passes unchecked.
    """
    try:
        manifest = read_manifest(folder)
    except ValueError as err:
        return [str(err)]
    if manifest is None:
        return [f"{MANIFEST_FILE} is missing"] if required else []
    problems = []
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        if size != expected.get("size"):
            problems.append(f"{name} has {size} bytes, {expected.get('size')} were written")
        elif file_digest(path) != expected.get("sha256"):
            problems.append(f"{name} does not match its sha256")
    return problems
