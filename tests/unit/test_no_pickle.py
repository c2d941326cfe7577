"""A malicious pickle in every place tuneforge loads weights from: a canary file proves no code ran, and the user
gets an error naming the file instead of a traceback."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tuneforge.errors import UserError
from tuneforge.models.load import load_model


class Evil:
    """Unpickling this runs `exec`, which writes the canary file."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.canary)!r}, 'w').write('code ran')",))


def plant(path: Path, canary: Path) -> None:
    """Write a pickle at `path` that would create `canary` when unpickled (proved by test_the_canary_works)."""
    with path.open("wb") as handle:
        pickle.dump(Evil(canary), handle)


def test_the_canary_works(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    plant(tmp_path / "evil.bin", canary)
    with (tmp_path / "evil.bin").open("rb") as handle:
        pickle.load(handle)  # noqa: S301  (the point: an unsafe loader runs it)
    assert canary.read_text() == "code ran"


@pytest.mark.scenario("no_pickle")
def test_model_folder_with_pickle_weights(tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder, canary = tmp_path / "model", tmp_path / "canary"
    shutil.copytree(tiny_llama_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    plant(folder / "pytorch_model.bin", canary)
    with pytest.raises(UserError, match=r"no \.safetensors weights \(it has pytorch_model\.bin: pickle files"):
        load_model(str(folder))
    assert not canary.exists()


def adapter_run(base: Path, run_dir: Path) -> Path:
    """A LoRA run directory on `base` (adapter weights in safetensors, as tuneforge saves them)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(run_dir / "model")
    config = {"model": {"name_or_path": str(base)}, "adapter": {"name": "lora", "r": 2}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


@pytest.mark.scenario("no_pickle")
@pytest.mark.parametrize("decoy", [False, True], ids=["pickle-only", "pickle-beside-other-safetensors"])
def test_adapter_run_with_pickle_weights(tiny_llama_dir: Path, tmp_path: Path, decoy: bool) -> None:
    run_dir, canary = adapter_run(tiny_llama_dir, tmp_path / "run"), tmp_path / "canary"
    assert load_model(str(run_dir)).model.peft_config["default"].r == 2  # loads while its weights are safetensors
    (run_dir / "model" / "adapter_model.safetensors").unlink()
    plant(run_dir / "model" / "adapter_model.bin", canary)
    if decoy:  # a stray safetensors file must not let the pickle through
        shutil.copy(next(tiny_llama_dir.glob("*.safetensors")), run_dir / "model" / "other.safetensors")
    with pytest.raises(UserError, match="safetensors"):
        load_model(str(run_dir))
    assert not canary.exists()


@pytest.mark.scenario("no_pickle")
def test_checkpoint_training_state_with_a_pickle(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tuneforge.train.checkpoint import TENSORS_FILE, load_training_state, save_checkpoint
    from tuneforge.train.manifest import verify_checkpoint, write_manifest

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    folder = save_checkpoint(tmp_path / "checkpoints", 3, model, {"rng": torch.zeros(2)}, {"step": 3})
    assert torch.equal(load_training_state(folder)["rng"], torch.zeros(2))
    canary = tmp_path / "canary"
    plant(folder / TENSORS_FILE, canary)
    write_manifest(folder)  # a forger rewrites the manifest too: the hashes match, the loader must still refuse
    assert verify_checkpoint(folder) == []
    with pytest.raises(UserError, match=f"{TENSORS_FILE}: not a training state tuneforge wrote"):
        load_training_state(folder)
    assert not canary.exists()
