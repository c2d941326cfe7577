"""Crash-safe writes: a file or folder appears whole under its name, or not at all.

Temporary names are random and live in the target's own folder (so the final rename is atomic and no other
process can guess and pre-create them); data and the folder entry are fsynced before and after the rename, so a
power cut cannot leave a renamed-but-empty file behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "TEMP_MARK",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "fsync_tree",
    "temp_dir_beside",
    "temp_path_beside",
]

TEMP_MARK = ".tmp-"


def temp_path_beside(target: Path) -> Path:
    """An unused, unguessable name in `target`'s folder (not created)."""
    return target.with_name(f".{target.name}{TEMP_MARK}{secrets.token_hex(8)}")


def temp_dir_beside(target: Path) -> Path:
    """A new empty folder with an unguessable name in `target`'s folder (created here, mode 0700)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}{TEMP_MARK}", dir=target.parent))


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk; a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder` and every folder entry, deepest first."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically and durably."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}{TEMP_MARK}", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    fsync_dir(target.parent)


def atomic_write_text(target: Path, text: str) -> None:
    """Write UTF-8 `text` to `target` atomically and durably."""
    atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a random temporary path beside `target`; when the block succeeds it is fsynced and renamed onto it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temp_path_beside(target)
    try:
        yield temporary
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    fsync_dir(target.parent)
