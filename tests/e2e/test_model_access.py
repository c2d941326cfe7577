"""Remote code and the hub are off unless the command line asks: an edited run folder cannot run code, and a typo in
a local path is an error naming it, never a download."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli

from tuneforge import access
from tuneforge.errors import UserError
from tuneforge.models import sources
from tuneforge.models.load import load_model
from tuneforge.serve.plan import plan_serving

CANARY_CODE = """
import os
from pathlib import Path
from transformers import LlamaForCausalLM

Path(os.environ["TUNEFORGE_CANARY"]).write_text("remote code ran")


class CanaryForCausalLM(LlamaForCausalLM):
    pass
"""


def canary_model(tiny_llama_dir: Path, folder: Path) -> Path:
    """A copy of the tiny model whose config asks for its own Python code, which writes a canary file when run."""
    shutil.copytree(tiny_llama_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "canary.CanaryForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "canary.py").write_text(CANARY_CODE)
    return folder


def adapter_run(base: Path, run_dir: Path) -> Path:
    """A LoRA run directory on `base` whose recorded config turns trust_remote_code on (an edited run folder)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(run_dir / "model")
    config = {"model": {"name_or_path": str(base), "trust_remote_code": True}, "adapter": {"name": "lora", "r": 2}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "canary.txt"
    monkeypatch.setenv("TUNEFORGE_CANARY", str(path))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    access.forbid_remote_code()
    yield path
    access.forbid_remote_code()


@pytest.mark.scenario("remote_code")
def test_a_run_folder_cannot_turn_remote_code_on(tiny_llama_dir: Path, tmp_path: Path, canary: Path) -> None:
    run_dir = adapter_run(canary_model(tiny_llama_dir, tmp_path / "base"), tmp_path / "run")
    loaded = load_model(str(run_dir))
    assert type(loaded.model.get_base_model()).__name__ == "LlamaForCausalLM"
    assert plan_serving(str(run_dir)).trust_remote_code is False
    assert not canary.exists()

    answer = run_cli("chat", str(run_dir), "--prompt", "hi", "--max-new-tokens", "2", cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr
    assert not canary.exists()
    assert "code shipped with the model will run" not in answer.stderr


@pytest.mark.scenario("remote_code")
def test_the_command_line_turns_remote_code_on_visibly(tiny_llama_dir: Path, tmp_path: Path, canary: Path) -> None:
    run_dir = adapter_run(canary_model(tiny_llama_dir, tmp_path / "base"), tmp_path / "run")
    answer = run_cli(
        "chat", str(run_dir), "--prompt", "hi", "--max-new-tokens", "2", "--trust-remote-code", cwd=tmp_path
    )
    assert answer.returncode == 0, answer.stderr
    assert canary.read_text() == "remote code ran"
    assert "--trust-remote-code: Python code shipped with the model will run on this machine" in answer.stderr


def record_folder_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the transformers loader with one that records what it was asked to load."""
    calls: list[str] = []

    def fake_load_folder(source: str, *args: object, **kwargs: object) -> tuple[object, object]:
        calls.append(source)
        raise OSError("no network in this test")

    monkeypatch.setattr(sources, "load_folder", fake_load_folder)
    return calls


@pytest.mark.scenario("offline_default")
@pytest.mark.parametrize("offline_value", [None, "1", "yes"])
def test_a_typo_in_a_local_path_is_an_error_not_a_download(
    offline_value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    if offline_value is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline_value)
    calls = record_folder_loads(monkeypatch)
    with pytest.raises(UserError) as raised:
        sources.load_pretrained("runs/my-rnu")
    assert calls == []
    message = str(raised.value)
    assert f"no such file or folder ({tmp_path / 'runs' / 'my-rnu'})" in message
    assert "--online" in message


@pytest.mark.scenario("offline_default")
def test_the_hub_is_asked_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record_folder_loads(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the attempt fails at once
    with pytest.raises(
        UserError, match=r"cannot load 'org/model' from the Hugging Face hub: http://127\.0\.0\.1:9 is"
    ):
        sources.load_pretrained("org/model")
    assert calls == []  # asked the hub, got nothing, loaded nothing


@pytest.mark.scenario("offline_default")
def test_the_cli_sets_offline_mode_unless_online_is_asked(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from tuneforge.cli.main import main\n"
        "from tuneforge.errors import UserError\n"
        "code = main(sys.argv[1:])\n"
        "print('HF_HUB_OFFLINE=' + os.environ.get('HF_HUB_OFFLINE', ''))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: an attempted download fails at once
    import subprocess

    offline = subprocess.run(
        [sys.executable, "-c", script, "chat", "org/my-modl", "--prompt", "x"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "HF_HUB_OFFLINE=1" in offline.stdout
    assert "model 'org/my-modl' not found" in offline.stderr and "--online" in offline.stderr

    online = subprocess.run(
        [sys.executable, "-c", script, "chat", "org/my-modl", "--prompt", "x", "--online"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "HF_HUB_OFFLINE=0" in online.stdout
    assert "cannot load 'org/my-modl' from the Hugging Face hub" in online.stderr
