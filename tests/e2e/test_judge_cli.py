"""`tuneforge train` with a judge: where the API key goes, and the judge settings refused before training starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli, write_config, write_memorisation_set

from fixtures.judge_server import fake_judges

KEY = "train-judge-key"


@pytest.fixture(autouse=True)
def _judge_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEFORGE_JUDGE_API_KEY", KEY)
    monkeypatch.delenv("TUNEFORGE_JUDGE_URL", raising=False)


def _config(tmp_path: Path, model: Path, **eval_section: object) -> Path:
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps(["Who are you?", "What colour is the sky?"]), encoding="utf-8")
    data = write_memorisation_set(tmp_path / "m.jsonl")
    section = {"questions": str(questions), "max_new_tokens": 2, "judge_model": "fake-judge", **eval_section}
    return write_config(tmp_path / "cfg.yaml", model, data, tmp_path / "run", train={"max_steps": 1}, eval=section)


@pytest.mark.scenario("judge_key")
def test_train_sends_the_key_to_the_command_line_judge_not_the_config_one(tiny_llama_dir: Path, tmp_path: Path):
    with fake_judges() as serve:
        configured, named = serve(reply=lambda prompt: "A"), serve(reply=lambda prompt: "B")
        config = _config(tmp_path, tiny_llama_dir, judge=configured.url)
        result = run_cli("train", str(config), "--judge", named.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert configured.seen == []  # --judge replaced the config's judge
    assert named.authorizations() == [f"Bearer {KEY}"] * 4  # 2 questions, both orders
    record = json.loads((tmp_path / "run" / "eval" / "compare.json").read_text())
    assert record["judge"] is True and [q["outcome"] for q in record["questions"]] == ["tie", "tie"]


@pytest.mark.scenario("judge_key")
@pytest.mark.parametrize("where", ["config", "command line"])
def test_train_refuses_a_remote_judge_before_training(tiny_llama_dir: Path, tmp_path: Path, where: str):
    url = "https://judge.example.com/v1"
    config = _config(tmp_path, tiny_llama_dir, **({"judge": url} if where == "config" else {}))
    result = run_cli("train", str(config), *(["--judge", url] if where == "command line" else []), cwd=tmp_path)
    assert result.returncode == 2
    assert "'judge.example.com' is not on this machine" in result.stderr
    assert "eval.judge_remote: true" in result.stderr and "--judge-remote" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing was trained


def test_train_refuses_an_old_config_that_names_a_key_variable(tiny_llama_dir: Path, tmp_path: Path):
    config = _config(tmp_path, tiny_llama_dir, judge="http://127.0.0.1:9/v1")
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["eval"]["judge_api_key_env"] = "HF_TOKEN"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = run_cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "'eval.judge_api_key_env' was removed" in result.stderr and "TUNEFORGE_JUDGE_API_KEY" in result.stderr
