"""The export-format registry, and writing any export safely: a temporary folder renamed into place.

Export never deletes what it did not write. Every export folder carries a marker file, `.tuneforge-export.json`
(format, source, tuneforge version); an existing `--to` folder is replaced, with `--force`, only when it holds that
marker. Whatever `--force` says, the target may not be the source being exported (or the base model of a source
run), a folder that contains it, or a folder inside it; nor the current folder, the home folder, a folder above
either, or a filesystem root; nor a file or a symbolic link (an export is a folder). A single GGUF file written by
`export_gguf` is recognised by its own metadata key instead (see tuneforge.export.gguf).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.atomic import fsync_dir, fsync_tree, temp_dir_beside, temp_path_beside
from tuneforge.errors import UserError
from tuneforge.registry import Registry

__all__ = [
    "EXPORTERS",
    "EXPORT_MARKER",
    "ExportOptions",
    "Exporter",
    "check_target",
    "publish_folder",
    "read_export_marker",
    "run_export",
    "write_export_marker",
]

EXPORT_MARKER = ".tuneforge-export.json"


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


# ------------------------------------------------------------------------------------------------ marker


def write_export_marker(folder: Path, format_name: str, source: str) -> None:
    """Mark `folder` as an export of `source` in `format_name` (what lets a later --force replace it)."""
    from tuneforge import __version__

    local = Path(source).expanduser()
    record = {"format": format_name, "source": str(local.resolve()) if local.exists() else source}
    record["tuneforge"] = __version__
    (folder / EXPORT_MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_export_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of an export folder ({format, source, tuneforge}), or None when `folder` is not an export."""
    path = folder / EXPORT_MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("format"), str) else None


# ------------------------------------------------------------------------------------------------ target


def _local_sources(source: str) -> list[tuple[str, Path]]:
    """What an export of `source` reads from disk: the source itself and, for a run, its base model."""
    from tuneforge.models.rundir import is_run_dir, read_run_record

    path = Path(source).expanduser()
    if not path.exists():
        return []  # a hub id or a zoo name: nothing on disk to protect
    found = [("the source being exported", path.resolve())]
    if is_run_dir(path):
        try:
            base = Path(read_run_record(path).base_model).expanduser()
        except UserError:
            return found  # loading the run fails later, with its own message
        if base.exists():
            found.append(("the base model of the source run", base.resolve()))
    return found


def _protected_places() -> list[tuple[str, Path]]:
    places = [("current folder", Path.cwd())]
    try:
        places.append(("home folder", Path.home()))
    except (KeyError, RuntimeError):  # no home folder known: nothing to protect there
        pass
    return [(what, place.resolve()) for what, place in places]


def _refuse_places(out: Path, real: Path) -> None:
    if real.parent == real:
        raise UserError(f"--to {out} is a filesystem root; export into a new folder, e.g. --to {real / 'export'}")
    for what, place in _protected_places():
        if real == place or real in place.parents:
            relation = f"your {what}" if real == place else f"a folder above your {what} {place}"
            raise UserError(f"--to {out} is {relation}; export into a new folder, e.g. --to {place / 'export'}")


def _refuse_sources(source: str, out: Path, real: Path) -> None:
    for what, path in _local_sources(source):
        if real == path:
            raise UserError(f"--to {out} is {what} ({path}); export into a new folder, e.g. --to {path}-export")
        if real in path.parents:
            raise UserError(f"--to {out} contains {what} ({path}); export into a new folder next to it instead")
        if path in real.parents:
            raise UserError(f"--to {out} is inside {what} ({path}); export into a folder outside it")


def check_target(source: str, out: Path, force: bool) -> Path:
    """Refuse a target export must not write (before any work is done); returns it as an absolute path."""
    target = Path(os.path.abspath(Path(out).expanduser()))
    real = target.resolve()
    _refuse_places(out, real)
    _refuse_sources(source, out, real)
    if target.is_symlink():
        raise UserError(f"--to {out} is a symbolic link; pass the folder it points to, or a new folder")
    if not target.exists():
        return target
    if not target.is_dir():
        raise UserError(f"--to {out} is a file, and an export is a folder: pass a new folder path")
    if read_export_marker(target) is None:
        raise UserError(
            f"--to {out} exists and is not a tuneforge export (it has no {EXPORT_MARKER}); export replaces only "
            "its own earlier exports: choose a new folder, or move that folder away yourself"
        )
    if not force:
        raise UserError(f"--to {out} holds an earlier export; pass --force to replace it, or choose a new folder")
    return target


# ---------------------------------------------------------------------------------------------- publish


def publish_folder(tmp: Path, out: Path, force: bool) -> Path:
    """Move a finished temporary folder into place; an existing `out` is replaced only if it is an export and `force`.

    `tmp` is removed when `out` may not be replaced (e.g. a folder appeared there while exporting).
    """
    fsync_tree(tmp)
    if out.exists() or out.is_symlink():
        if not (force and out.is_dir() and not out.is_symlink() and read_export_marker(out) is not None):
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"{out} appeared while exporting; nothing was changed (only an earlier export is replaced, "
                "with --force)"
            )
        old = temp_path_beside(out)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    fsync_dir(out.parent)
    return out


def run_export(source: str, out: Path, format_name: str, options: ExportOptions, force: bool = False) -> list[str]:
    """Export `source` as `format_name` into `out` (complete or untouched); returns the exporter's next steps."""
    exporter = EXPORTERS.get(format_name)
    target = check_target(source, out, force)
    tmp = temp_dir_beside(target)
    try:
        exporter.write(source, tmp, dataclasses.replace(options, name=target.name))
        write_export_marker(tmp, format_name, source)
        publish_folder(tmp, target, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return exporter.next_steps(target, options)
