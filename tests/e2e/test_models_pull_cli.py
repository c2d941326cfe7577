"""`tuneforge models pull ID` fetches a model from a (fake, loopback) hub; afterwards the id loads with the network off,
and before, offline, the id is an error naming the command that fetches it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cli_helpers import run_cli

from fixtures.fake_hub import FakeHub, read_folder, serve
from tuneforge.cli.chat import stream_reply
from tuneforge.models.load import load_model

REPO = "tiny-org/tiny-llama"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache for the commands this test runs (they inherit the environment)."""
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return tmp_path / "home"


@pytest.mark.scenario("offline_default")
def test_pull_then_chat_with_the_network_off(
    tiny_llama_dir: Path, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(FakeHub(read_folder(tiny_llama_dir))) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        offline = run_cli("chat", REPO, "--prompt", "hi", cwd=tmp_path)
        assert offline.returncode == 2
        assert f"run `tuneforge models pull {REPO}` (or pass --online)" in offline.stderr
        assert hub.requests == []  # offline means the hub is never asked

        pulled = run_cli("models", "pull", REPO, cwd=tmp_path)
        assert pulled.returncode == 0, pulled.stderr
    folder = home / "cache" / "hub" / "huggingface" / "tiny-org--tiny-llama" / "main"
    assert f"is ready in {folder}" in pulled.stderr
    assert (folder / "model.safetensors").read_bytes() == (tiny_llama_dir / "model.safetensors").read_bytes()

    # the fake hub is gone and HF_HUB_OFFLINE=1: the id loads from the cache, the same model as the original folder
    chat = run_cli("chat", REPO, "--prompt", "hi", "--max-new-tokens", "6", cwd=tmp_path)
    assert chat.returncode == 0, chat.stderr
    original = load_model(str(tiny_llama_dir))
    expected = stream_reply(
        original.model, original.tokenizer, [{"role": "user", "content": "hi"}], 6, 0.0, io.StringIO()
    )
    assert chat.stdout.strip() == expected

    listed = run_cli("models", cwd=tmp_path)
    assert listed.returncode == 0
    assert REPO in listed.stderr and "huggingface" in listed.stderr


def test_pull_from_modelscope_and_a_missing_id(
    tiny_llama_dir: Path, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(FakeHub(read_folder(tiny_llama_dir))) as hub:
        monkeypatch.setenv("MODELSCOPE_DOMAIN", hub.url)
        pulled = run_cli("models", "pull", REPO, "--hub", "modelscope", "--revision", "v1.0", cwd=tmp_path)
        missing = run_cli("models", "pull", "tiny-org/nope", "--hub", "modelscope", cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    folder = home / "cache" / "hub" / "modelscope" / "tiny-org--tiny-llama" / "v1.0"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        read_folder(tiny_llama_dir)
    )
    asked = [r for r in hub.requests if r.path.startswith(f"/api/v1/models/{REPO}/")]
    assert len(asked) == 1 + len(read_folder(tiny_llama_dir))  # the listing, then each file once
    assert {r.query["Revision"][0] for r in asked} == {"v1.0"}
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert lines[-1].startswith("tuneforge: error: cannot load 'tiny-org/nope' from the ModelScope hub: ")
    assert "404" in lines[-1]
