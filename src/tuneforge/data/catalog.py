"""Resolve `data.train` entries: bundled dataset names, files and folders of files."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tuneforge.data.files import SUPPORTED_SUFFIXES
from tuneforge.data.formats import Columns
from tuneforge.errors import UserError
from tuneforge.registry import closest

__all__ = ["DataSource", "bundled_names", "bundled_path", "folder_files", "resolve_sources"]


@dataclass(frozen=True)
class DataSource:
    """One file to read, the name it is reported under, and (from a catalog) its format and column mapping."""

    path: Path
    name: str
    formatting: str | None = None
    columns: Columns | None = None
    group: str = ""
    num_samples: int | None = None  # rows to use (a LLaMA-Factory catalog entry's num_samples)
    notes: tuple[str, ...] = ()  # lines for the data report (e.g. catalog datasets not available offline)

    @property
    def dataset(self) -> str:
        """The dataset this file belongs to (a folder's files form one dataset)."""
        return self.group or self.name


def _bundled_dir() -> Path:
    return Path(str(resources.files("tuneforge") / "resources" / "data"))


def bundled_names() -> list[str]:
    """Names of the datasets shipped with tuneforge (usable wherever a data file path is)."""
    return sorted(p.stem for p in _bundled_dir().glob("*.json"))


def bundled_path(name: str) -> Path | None:
    """The file of bundled dataset `name`, or None."""
    path = _bundled_dir() / f"{name}.json"
    return path if path.is_file() else None


def resolve_file(entry: str, base_dir: Path | None = None) -> Path:
    """A single file named by path (relative to the working directory, then `base_dir`) or bundled name."""
    for candidate in _candidates(entry, base_dir):
        if candidate.is_file():
            return candidate
    bundled = bundled_path(entry)
    if bundled is not None:
        return bundled
    raise _not_found(entry)


def _candidates(entry: str, base_dir: Path | None) -> list[Path]:
    path = Path(entry).expanduser()
    paths = [path]
    if base_dir is not None and not path.is_absolute():
        paths.append(base_dir / path)
    return paths


def _not_found(entry: str) -> UserError:
    names = bundled_names()
    hint = closest(entry, names)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    return UserError(
        f"data file {entry!r} not found (nor is it a bundled dataset).{did_you_mean} Bundled: {', '.join(names)}"
    )


def resolve_sources(entries: list[str], base_dir: Path | None = None) -> list[DataSource]:
    """Expand `data.train` entries into files; a folder contributes its .json/.jsonl files in name order."""
    if not entries:
        raise UserError("data.train is empty: give at least one data file, folder or bundled dataset name")
    sources: list[DataSource] = []
    for entry in entries:
        folder = next((c for c in _candidates(entry, base_dir) if c.is_dir()), None)
        if folder is None:
            sources.append(DataSource(resolve_file(entry, base_dir), entry, group=entry))
            continue
        sources += [DataSource(p, f"{entry}/{p.name}", group=entry) for p in folder_files(folder)]
    return sources


def folder_files(folder: Path) -> list[Path]:
    """The data files of a folder in name order; a folder without any is an error."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise UserError(f"data folder {folder} holds no data files ({', '.join(SUPPORTED_SUFFIXES)})")
    return files
