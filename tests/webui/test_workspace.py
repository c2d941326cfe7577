"""The workspace sandbox: every path typed in the page stays inside the workspace or an allow-listed data folder;
uploads are size-limited data files; the config the page builds is checked path by path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tuneforge.methods  # noqa: F401
from tuneforge.errors import UserError
from tuneforge.webui.configs import sandbox_paths
from tuneforge.webui.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "mine.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "corpus.jsonl").write_text('{"text": "b"}\n', encoding="utf-8")
    return Workspace(root, [shared], upload_limit_mb=0.001)


@pytest.mark.parametrize(
    "typed", ["../../etc/passwd", "/etc/passwd", "~/.ssh/id_rsa", "data/../../outside.json", "a\x00b"]
)
def test_paths_outside_the_workspace_are_refused(ws: Workspace, typed: str) -> None:
    with pytest.raises(UserError) as err:
        ws.resolve(typed, "data.train")
    assert str(err.value).startswith("data.train: ")
    assert "outside the workspace" in str(err.value) or "give a path" in str(err.value)


def test_a_symbolic_link_out_of_the_workspace_is_refused(ws: Workspace) -> None:
    os.symlink("/etc", ws.root / "etc-link")
    with pytest.raises(UserError, match="outside the workspace"):
        ws.resolve("etc-link/passwd", "data.train")


def test_inside_paths_and_data_folders_resolve(ws: Workspace) -> None:
    assert ws.resolve("data/mine.jsonl", "data.train") == ws.root / "data" / "mine.jsonl"
    assert ws.resolve(str(ws.root / "data" / "mine.jsonl"), "x") == ws.root / "data" / "mine.jsonl"
    shared_file = ws.data_roots[0] / "corpus.jsonl"
    assert ws.resolve(str(shared_file), "data.train") == shared_file
    assert ws.display(shared_file) == str(shared_file)
    assert ws.display(ws.root / "data" / "mine.jsonl") == "data/mine.jsonl"
    with pytest.raises(UserError, match="not found"):
        ws.resolve("data/missing.jsonl", "data.train")


def test_outputs_only_go_into_the_workspace(ws: Workspace) -> None:
    assert ws.resolve("runs/new", "output.dir", output=True, must_exist=False) == ws.root / "runs" / "new"
    with pytest.raises(UserError, match="outside the workspace"):
        ws.resolve(str(ws.data_roots[0] / "run"), "output.dir", output=True, must_exist=False)


def test_config_paths_are_checked_one_by_one(ws: Workspace) -> None:
    raw = {
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "data": {"train": ["identity", "data/mine.jsonl", str(ws.data_roots[0] / "corpus.jsonl")]},
        "eval": {"questions": "demo_questions", "judge": "http://127.0.0.1:9000/v1"},
        "output": {"dir": "runs/a"},
    }
    assert sandbox_paths(raw, ws) == {
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "data": {"train": ["identity", "data/mine.jsonl", str(ws.data_roots[0] / "corpus.jsonl")]},
        "eval": {"questions": "demo_questions", "judge": "http://127.0.0.1:9000/v1"},
        "output": {"dir": "runs/a"},
    }
    absolute = sandbox_paths(raw, ws, absolute=True)
    assert absolute["data"]["train"][1] == str(ws.root / "data" / "mine.jsonl")
    assert absolute["output"]["dir"] == str(ws.root / "runs" / "a")


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"data": {"train": ["../../etc/passwd"]}}, "data.train"),
        ({"data": {"eval": ["/etc/passwd"]}}, "data.eval"),
        ({"model": {"name_or_path": "/etc"}}, "model.name_or_path"),
        ({"model": {"name_or_path": "Qwen/Qwen3-0.6B"}}, "model.name_or_path"),  # a hub id needs model.hub
        ({"output": {"dir": "../elsewhere"}}, "output.dir"),
        ({"plugins": ["/tmp/evil.py"]}, "plugins"),
        ({"train": {"resume": "/var/checkpoints/step-4"}}, "train.resume"),
        ({"method": {"name": "distill", "teacher": "../../models/x"}}, "method.teacher"),
        ({"method": {"name": "ppo", "rewards": [{"name": "reward_model", "path": "/srv/rm"}]}}, "method.rewards.path"),
        ({"data": {"template": "/etc/shadow"}}, "data.template"),  # any path-like string, listed or not
        ({"data": {"replay": {"prompts": "../../prompts.json"}}}, "data.replay.prompts"),
    ],
)
def test_config_paths_outside_are_refused(ws: Workspace, raw: dict, where: str) -> None:
    with pytest.raises(UserError) as err:
        sandbox_paths(raw, ws)
    assert str(err.value).startswith(f"{where}: ")


def test_a_hub_id_is_a_name_only_when_the_hub_is_allowed(ws: Workspace) -> None:
    raw = {"model": {"name_or_path": "Qwen/Qwen3-0.6B", "hub": True}}
    assert sandbox_paths(raw, ws)["model"]["name_or_path"] == "Qwen/Qwen3-0.6B"


def test_uploads_are_data_files_within_the_size_limit(ws: Workspace, tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text('{"text": "hello"}\n', encoding="utf-8")
    saved = ws.save_upload(small, "../../evil name.jsonl")
    assert saved == ws.uploads_dir / "evil_name.jsonl"
    assert saved.read_text(encoding="utf-8") == '{"text": "hello"}\n'
    big = tmp_path / "big.jsonl"
    big.write_text("x" * 2000, encoding="utf-8")  # the limit is 0.001 MB = 1048 bytes
    with pytest.raises(UserError, match="over the upload limit"):
        ws.save_upload(big)
    script = tmp_path / "run.py"
    script.write_text("print(1)", encoding="utf-8")
    with pytest.raises(UserError, match="not a data file"):
        ws.save_upload(script)
    assert sorted(p.name for p in ws.uploads_dir.iterdir()) == ["evil_name.jsonl"]


def test_pickers_list_what_the_workspace_holds(ws: Workspace) -> None:
    model = ws.root / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    (ws.root / "models" / "small.gguf").write_bytes(b"GGUF")
    run = ws.runs_dir / "r1"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {name_or_path: x}\n", encoding="utf-8")
    (run / "metrics.jsonl").write_text("", encoding="utf-8")
    (run / "data_report.txt").write_text("", encoding="utf-8")
    assert ws.model_choices() == ["smollm2-135m-instruct", "models/small.gguf", "models/tiny", "runs/r1"]
    data = ws.data_choices()
    assert data[-2:] == ["data/mine.jsonl", str(ws.data_roots[0] / "corpus.jsonl")]
    assert "identity" in data and not any(entry.startswith("runs/") for entry in data)
