"""Bad input gets one line naming the problem and the fix, exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import run_cli, write_config, write_memorisation_set


def _assert_user_error(result, *fragments: str) -> None:  # noqa: ANN001
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("tuneforge: error:")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], (fragment, error_lines[0])


def test_missing_data_file(tiny_llama_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, tmp_path / "nope.jsonl", tmp_path / "run")
    _assert_user_error(run_cli("train", str(config), cwd=tmp_path), "nope.jsonl", "not found")


def test_unknown_model_lists_known_ones(tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    config = write_config(tmp_path / "cfg.yaml", Path("smollm3"), data, tmp_path / "run")
    _assert_user_error(run_cli("train", str(config), cwd=tmp_path), "smollm3", "smollm2-135m-instruct")


def test_misspelled_key_names_file_key_and_fix(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run", train={"learnin_rate": 1})
    _assert_user_error(run_cli("train", str(config), cwd=tmp_path), "cfg.yaml", "train.learnin_rate", "learning_rate")


def test_empty_dataset_after_filtering(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}\n')
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run")
    _assert_user_error(
        run_cli("train", str(config), cwd=tmp_path), "no training samples", "empty answer", "bad.jsonl:1"
    )


def test_finished_run_is_not_overwritten_unless_asked(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run", train={"max_steps": 1})
    assert run_cli("train", str(config), cwd=tmp_path).returncode == 0
    _assert_user_error(run_cli("train", str(config), cwd=tmp_path), "already holds a finished run", "output.overwrite")
    again = run_cli("train", str(config), "output.overwrite=true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_debug_shows_the_traceback(tiny_llama_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, tmp_path / "nope.jsonl", tmp_path / "run")
    result = run_cli("--debug", "train", str(config), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_models_and_env(tmp_path: Path) -> None:
    models = run_cli("models", cwd=tmp_path)
    assert models.returncode == 0 and "smollm2-135m-instruct" in models.stderr + models.stdout
    env = run_cli("env", cwd=tmp_path)
    text = env.stderr + env.stdout
    assert env.returncode == 0
    for key in ("torch", "transformers", "cuda available", "torch threads", "TUNEFORGE_HOME"):
        assert key in text, key
