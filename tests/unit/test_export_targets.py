"""Where an export may be written: export never deletes what it did not write, whatever --force says.

The source is a tiny model folder copied to `runs/r` (an export of a model folder reads it like a run's model);
each refused target leaves every file under the test's folder byte for byte as it was, with no temporary left.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import tuneforge.export.base as export_base
from tuneforge import __version__
from tuneforge.errors import UserError
from tuneforge.export import ExportOptions, run_export
from tuneforge.export.base import EXPORT_MARKER


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and link under `root` (not followed) → its sha256 or link target."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif path.is_file():
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[key] = "dir"
    return found


@pytest.fixture
def source(tiny_llama_dir: Path, tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "r"
    shutil.copytree(tiny_llama_dir, run)
    return run


def _export(source: Path | str, to: Path | str, force: bool = True) -> list[str]:
    return run_export(str(source), Path(to), "hf", ExportOptions(), force=force)


@pytest.mark.scenario("export_refusals")
def test_force_replaces_an_earlier_export_and_nothing_else(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "m"
    _export(source, out, force=False)
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert marker == {"format": "hf", "source": str(source.resolve()), "tuneforge": __version__}
    expected = load_file(source / "model.safetensors")
    exported = load_file(out / "model.safetensors")
    assert exported.keys() == expected.keys()
    assert all(exported[key].equal(expected[key]) for key in expected)

    with pytest.raises(UserError, match="holds an earlier export; pass --force"):
        _export(source, out, force=False)
    (out / "stale.txt").write_text("left by the earlier export")
    _export(source, out, force=True)
    assert "stale.txt" not in {p.name for p in out.iterdir()}
    assert json.loads((out / EXPORT_MARKER).read_text()) == marker
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no temporary or old copy left


def _fake_run(folder: Path, base: Path) -> Path:
    """A folder shaped like a run directory whose config names `base` as its base model."""
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "adapter_config.json").write_text("{}")
    config = {"model": {"name_or_path": str(base)}, "adapter": {"name": "lora"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


REFUSALS = {
    "source": ("runs/r", "is the source being exported"),
    "parent of the source": ("runs", "contains the source being exported"),
    "inside the source": ("runs/r/export", "is inside the source being exported"),
    "base model of the run": ("base", "is the base model of the source run"),
    "not an export": ("mine", "is not a tuneforge export"),
    "a file": ("notes.txt", "is a file, and an export is a folder"),
    "a symbolic link": ("link", "is a symbolic link"),
    "current folder": (".", "is your current folder"),
    "above the current folder": ("work", "is a folder above your current folder"),
    "home folder": ("home", "is your home folder"),
    "filesystem root": ("/", "is a filesystem root"),
}


@pytest.mark.scenario("export_refusals")
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_targets_are_left_untouched(
    case: str, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    to, message = REFUSALS[case]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    (tmp_path / "notes.txt").write_text("notes")
    _export(source, tmp_path / "earlier")
    (tmp_path / "link").symlink_to(tmp_path / "earlier")
    (tmp_path / "work" / "deep").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "work" / "deep" if case == "above the current folder" else tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    exported = source
    if case == "base model of the run":
        shutil.copytree(source, tmp_path / "base")
        exported = _fake_run(tmp_path / "runs" / "lora-run", tmp_path / "base")
    if case == "current folder":
        monkeypatch.chdir(tmp_path / "work")
    target = to if to in (".", "/") else str(tmp_path / to)
    before = _snapshot(tmp_path)

    with pytest.raises(UserError, match=re.escape(message)):
        _export(exported, target, force=True)
    assert _snapshot(tmp_path) == before


@pytest.mark.scenario("export_refusals")
def test_a_folder_that_appears_while_exporting_is_not_replaced(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    original = export_base.write_export_marker

    def someone_else_creates_out(folder: Path, format_name: str, exported: str) -> None:
        out.mkdir()
        (out / "theirs.txt").write_text("not ours")
        original(folder, format_name, exported)

    monkeypatch.setattr(export_base, "write_export_marker", someone_else_creates_out)
    with pytest.raises(UserError, match="appeared while exporting; nothing was changed"):
        _export(source, out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]


def test_the_temporary_folder_has_a_random_name_and_spares_old_temporaries(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old-style `.out.tmp` (or one planted by another user) is neither used nor deleted."""
    planted = tmp_path / ".out.tmp"
    planted.mkdir()
    (planted / "keep.txt").write_text("not an export temporary")
    used: list[str] = []
    original = export_base.write_export_marker

    def record(folder: Path, format_name: str, exported: str) -> None:
        used.append(folder.name)
        original(folder, format_name, exported)

    monkeypatch.setattr(export_base, "write_export_marker", record)
    _export(source, tmp_path / "out", force=False)
    _export(source, tmp_path / "out", force=True)
    assert all(re.fullmatch(r"\.out\.tmp-\w{8,}", name) for name in used) and used[0] != used[1]
    assert (planted / "keep.txt").read_text() == "not an export temporary"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp", "out", "runs"]
