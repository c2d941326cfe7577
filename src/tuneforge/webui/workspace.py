"""The web UI's workspace: the one folder the page works in, and the sandbox for every path a user types.

    WORKSPACE/runs/<name>/      run directories (output.dir)
              configs/<name>.yaml  configs the page saved or started
              data/uploads/     uploaded data files
              models/           local models to pick from (any folder of the workspace works)
              exported/         exports
              .webui/jobs/      logs of the jobs the page started

A typed path is resolved against the workspace (relative paths start there; `..`, `~`, absolute paths and
symbolic links are followed first) and must land inside the workspace or inside one of the allow-listed data
folders (`tuneforge webui --data-dir`); outputs must land inside the workspace. Bundled dataset and zoo model
names are names, not paths.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from tuneforge.atomic import atomic_output
from tuneforge.data.catalog import bundled_names
from tuneforge.data.files import SUPPORTED_SUFFIXES
from tuneforge.errors import UserError
from tuneforge.models.rundir import is_run_dir
from tuneforge.models.zoo import ZOO

__all__ = ["DEFAULT_UPLOAD_LIMIT_MB", "Workspace"]

DEFAULT_UPLOAD_LIMIT_MB = 200
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".webui", "checkpoints", ".cache"}
_MAX_DEPTH = 3
_SAFE_NAME = re.compile(r"[^\w.\-]+")


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


class Workspace:
    """The workspace folder and the allow-listed data folders; see the module docstring."""

    def __init__(self, root: str | Path, data_roots: Sequence[str | Path] = (), upload_limit_mb: float = 200) -> None:
        self.root = Path(root).expanduser().resolve()
        self.data_roots = tuple(Path(p).expanduser().resolve() for p in data_roots)
        self.upload_limit_bytes = int(upload_limit_mb * 1024 * 1024)
        for folder in self.data_roots:
            if not folder.is_dir():
                raise UserError(f"--data-dir {folder}: no such folder")

    # ------------------------------------------------------------------------------------------ layout

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def configs_dir(self) -> Path:
        return self.root / "configs"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "data" / "uploads"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exported"

    @property
    def jobs_dir(self) -> Path:
        return self.root / ".webui" / "jobs"

    def create(self) -> None:
        """Create the workspace's folders."""
        for folder in (self.runs_dir, self.configs_dir, self.uploads_dir, self.jobs_dir):
            folder.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------ the sandbox

    def resolve(self, typed: str, what: str, output: bool = False, must_exist: bool = True) -> Path:
        """The real path of `typed`, refused unless it lies inside the workspace (or, for inputs, a data folder).

        Raises UserError naming the field (`what`), the path and how to fix it.
        """
        text = str(typed).strip()
        if not text or "\x00" in text:
            raise UserError(f"{what}: give a path")
        path = Path(text).expanduser()
        real = (path if path.is_absolute() else self.root / path).resolve()
        allowed = (self.root,) if output else (self.root, *self.data_roots)
        if not any(_inside(real, root) for root in allowed):
            where = f"the workspace {self.root}" + (
                "" if output or not self.data_roots else " or the data folders " + ", ".join(map(str, self.data_roots))
            )
            hint = "" if output else "; to use files elsewhere, start `tuneforge webui --data-dir FOLDER`"
            raise UserError(f"{what}: {text!r} is outside {where}{hint}")
        if must_exist and not real.exists():
            raise UserError(f"{what}: {text!r} not found in {self.root}")
        return real

    def display(self, path: Path) -> str:
        """How a path is written in configs and commands: relative to the workspace when inside it."""
        return str(path.relative_to(self.root)) if _inside(path, self.root) and path != self.root else str(path)

    def safe_entry(self, typed: str, what: str, names: Sequence[str] = (), output: bool = False) -> str:
        """A typed name or path as the config should hold it: a known name as is, else a checked path."""
        text = str(typed).strip()
        if text in names:
            return text
        return self.display(self.resolve(text, what, output=output, must_exist=not output))

    # ------------------------------------------------------------------------------------------ uploads

    def save_upload(self, source: str | Path, name: str | None = None) -> Path:
        """Copy an uploaded data file into data/uploads (size-limited, data suffixes only); returns its path."""
        source = Path(source)
        filename = _SAFE_NAME.sub("_", Path(name or source.name).name).lstrip(".") or "upload"
        if Path(filename).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise UserError(f"{filename}: not a data file; upload one of {', '.join(SUPPORTED_SUFFIXES)}")
        size = source.stat().st_size
        if size > self.upload_limit_bytes:
            raise UserError(
                f"{filename} is {size / 2**20:.1f} MB, over the upload limit of "
                f"{self.upload_limit_bytes / 2**20:.0f} MB (tuneforge webui --max-upload-mb); put large files in a "
                "--data-dir folder instead"
            )
        target = self.uploads_dir / filename
        with atomic_output(target) as tmp:
            shutil.copyfile(source, tmp)
        return target

    # ------------------------------------------------------------------------------------------ what to pick from

    def _walk(self, root: Path, depth: int = 0) -> Iterator[Path]:
        try:
            entries = sorted(root.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.name in _SKIP_DIRS:
                continue
            yield entry
            if entry.is_dir() and depth < _MAX_DEPTH and not (entry / "config.json").is_file():
                yield from self._walk(entry, depth + 1)

    def _roots(self) -> tuple[Path, ...]:
        return (self.root, *self.data_roots)

    def model_choices(self) -> list[str]:
        """Zoo names, then model folders (config.json), .gguf files and finished runs found in the folders."""
        found = []
        for root in self._roots():
            for entry in self._walk(root):
                is_model = entry.is_dir() and (entry / "config.json").is_file()
                if is_model or (entry.suffix == ".gguf" and entry.is_file()) or is_run_dir(entry):
                    found.append(self.display(entry))
        return [*ZOO, *dict.fromkeys(found)]  # the workspace's first, each folder in name order

    def data_choices(self) -> list[str]:
        """Bundled dataset names, then data files in the workspace (runs and exports left out) and data folders."""
        skip = (self.runs_dir, self.exports_dir, self.configs_dir)
        found = []
        for root in self._roots():
            for entry in self._walk(root):
                if any(_inside(entry, s) for s in skip) or entry.name == "dataset_info.json":
                    continue
                if entry.is_file() and entry.suffix.lower() in SUPPORTED_SUFFIXES:
                    found.append(self.display(entry))
        return [*bundled_names(), *dict.fromkeys(found)]

    def catalog_dirs(self) -> list[str]:
        """Folders holding a LLaMA-Factory dataset_info.json."""
        found = [
            self.display(entry.parent)
            for root in self._roots()
            for entry in self._walk(root)
            if entry.name == "dataset_info.json"
        ]
        found += [self.display(root) for root in self._roots() if (root / "dataset_info.json").is_file()]
        return sorted(set(found))

    def run_dirs(self) -> list[Path]:
        """Run directories under runs/ (finished or not: anything with a run.json or config.yaml)."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(
            (p for p in self.runs_dir.iterdir() if (p / "run.json").is_file() or (p / "config.yaml").is_file()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )

    def config_files(self) -> list[str]:
        """Saved configs (configs/*.yaml), newest first."""
        if not self.configs_dir.is_dir():
            return []
        files = sorted(self.configs_dir.glob("*.y*ml"), key=lambda p: p.stat().st_mtime, reverse=True)
        return [self.display(p) for p in files]
