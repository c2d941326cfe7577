"""The export-format registry, and writing any export atomically: a temporary folder renamed into place."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tuneforge.errors import UserError
from tuneforge.registry import Registry

__all__ = ["EXPORTERS", "ExportOptions", "Exporter", "check_target", "publish_folder", "run_export"]


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Settings an export format may read (each format documents which); `name` is the output folder's name."""

    name: str = "model"
    dtype: str = "auto"
    shard_size: str = "2GB"
    gguf_type: str = "f16"


@dataclasses.dataclass(frozen=True)
class Exporter:
    """One export format.

    Attributes:
        help: one line for `tuneforge export --help`.
        write: (source run or model, empty folder to fill, options) → None.
        next_steps: (final folder, options) → lines telling the user what was written and how to use it.
    """

    help: str
    write: Callable[[str, Path, ExportOptions], None]
    next_steps: Callable[[Path, ExportOptions], list[str]]


EXPORTERS: Registry[Exporter] = Registry("export format")


def check_target(out: Path, force: bool) -> Path:
    """Refuse an existing target without --force (before any work); return the temporary folder to write."""
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def publish_folder(tmp: Path, out: Path, force: bool) -> Path:
    """Move a finished temporary folder into place; an existing `out` is replaced only with `force`."""
    if out.exists():
        if not force:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"{out} already exists; pass --force to replace it")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def run_export(source: str, out: Path, format_name: str, options: ExportOptions, force: bool = False) -> list[str]:
    """Export `source` as `format_name` into `out` (complete or untouched); returns the exporter's next steps."""
    exporter = EXPORTERS.get(format_name)
    tmp = check_target(out, force)
    tmp.mkdir(parents=True)
    try:
        exporter.write(source, tmp, dataclasses.replace(options, name=out.name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_folder(tmp, out, force)
    return exporter.next_steps(out, options)
