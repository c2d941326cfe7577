"""What `tuneforge serve` decides to serve, and the clear errors for adapters and engines it cannot serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuneforge.errors import UserError
from tuneforge.serve import loading
from tuneforge.serve.engines.transformers_engine import attach_adapter
from tuneforge.serve.loading import open_engine, pick_engine
from tuneforge.serve.plan import Adapter, plan_serving


def _base(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def _run(tmp_path: Path, name: str, base: Path, adapter: bool = True) -> Path:
    """A finished-looking run directory trained on `base` (with a LoRA adapter, or a whole saved model)."""
    run = tmp_path / name
    (run / "model").mkdir(parents=True)
    config = {"model": {"name_or_path": str(base)}, "data": {"train": ["d.jsonl"]}, "output": {"dir": str(run)}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if adapter:
        _peft_files(run / "model", base)
    else:
        (run / "model" / "model.safetensors").write_bytes(b"")
    return run


def _peft_files(folder: Path, base: Path | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def test_a_model_is_served_under_its_name_or_name(tmp_path: Path) -> None:
    base = _base(tmp_path, "tiny-base")
    assert plan_serving(str(base)).catalog().ids() == ["tiny-base"]
    assert plan_serving(str(base), "mine").catalog().ids() == ["mine"]


def test_a_lora_run_serves_its_base_and_itself_and_answers_as_itself_by_default(tmp_path: Path) -> None:
    base = _base(tmp_path, "tiny-base")
    run = _run(tmp_path, "my-run", base)
    other = _run(tmp_path, "other-run", base)
    plan = plan_serving(str(run), adapter_specs=[f"o={other}", f"p={_peft_files(tmp_path / 'peft', base)}"])
    assert plan.base == str(base)
    assert plan.adapters == (
        Adapter("my-run", run / "model"),
        Adapter("o", other / "model"),
        Adapter("p", tmp_path / "peft"),
    )
    assert plan.catalog().ids() == ["tiny-base", "my-run", "o", "p"] and plan.catalog().default_id() == "my-run"


def test_an_adapter_trained_on_another_base_is_refused(tmp_path: Path) -> None:
    base, elsewhere = _base(tmp_path, "base"), _base(tmp_path, "elsewhere")
    run = _run(tmp_path, "run", elsewhere)
    with pytest.raises(UserError, match=r"--adapter x: run .* was trained on base model .*elsewhere"):
        plan_serving(str(base), adapter_specs=[f"x={run}"])
    with pytest.raises(UserError, match="was made for base model"):
        plan_serving(str(base), adapter_specs=[f"y={_peft_files(tmp_path / 'peft', elsewhere)}"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-equals-sign", "write NAME=PATH"),
        ("x=/nowhere/at/all", "neither a tuneforge run directory"),
        ("base=FOLDER", "two served models are named 'base'"),
        ("x=FULL_RUN", "saved no peft adapter"),
    ],
)
def test_bad_adapter_options_are_user_errors(tmp_path: Path, spec: str, message: str) -> None:
    base = _base(tmp_path, "base")
    full_run = _run(tmp_path, "full", base, adapter=False)
    peft = _peft_files(tmp_path / "peft", base)
    spec = spec.replace("FOLDER", str(peft)).replace("FULL_RUN", str(full_run))
    with pytest.raises(UserError, match=message):
        plan_serving(str(base), adapter_specs=[spec])


def test_auto_picks_llama_cpp_for_gguf_only_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "find_spec", lambda name: object())
    assert pick_engine("auto", "model.gguf") == "llamacpp"
    assert pick_engine("auto", "folder") == "transformers"
    monkeypatch.setattr(loading, "find_spec", lambda name: None)
    assert pick_engine("auto", "model.gguf") == "transformers"
    assert pick_engine("vllm", "folder") == "vllm"


@pytest.mark.parametrize(
    ("kind", "install"), [("vllm", "pip install vllm"), ("llamacpp", "pip install llama-cpp-python")]
)
def test_a_missing_optional_engine_names_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, install: str
) -> None:
    monkeypatch.setattr(loading, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=install):
        open_engine(kind, plan_serving(str(tmp_path / "model.gguf")))


def test_virtual_token_adapters_are_refused_with_the_way_out(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "model"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(UserError, match="tuneforge chat"):
        attach_adapter(object(), Adapter("p", folder), "adapter_0", "base")
