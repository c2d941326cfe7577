"""End-to-end: sharded training (FSDP full shard). `torchrun` starts two gloo processes on CPU running the real
`tuneforge train` with train.fsdp: true; each holds half of every trained tensor, yet with half the batch each they
give the per-step losses, validation losses and final weights of one process with the whole batch — with LoRA and
with full fine-tuning (embeddings tied to the head). On the third step of each epoch rank 1 has no row of its own
and runs a filler pass. A checkpoint of the sharded run resumes exactly under `accelerate launch` with the shipped
FSDP config (which turns sharding on by itself), and a DDP launch may not resume it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import read_metrics, run_cli, write_config
from safetensors.torch import load_file
from test_distributed import ADAPTER, DATA, EXAMPLES, TORCHRUN, TRAIN, launch_two, write_data

from tuneforge.config.load import config_from_dict
from tuneforge.config.schema import RunConfig
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.models.adapters import ADAPTERS
from tuneforge.train.distributed import World, join_world
from tuneforge.train.lifecycle import checkpoint_store
from tuneforge.train.sharding import check_sharding

STEPS = TRAIN["max_steps"]
ACCELERATE_FSDP = ["accelerate.commands.launch", "--config_file", str(EXAMPLES / "accelerate_fsdp.yaml")]
ACCELERATE_FSDP += ["--num_processes", "2", "--main_process_port", "0"]
FULL = {"name": "full"}


# name: adapter, learning rate, extra config sections
CASES = {
    "lora": (ADAPTER, 1.0e-2, {}),
    "full": (FULL, 1.0e-3, {}),
    # pairs through the policy and a whole reference model on every process; 5 train pairs: rank 1 idles at times
    "dpo": (ADAPTER, 5.0e-3, {"method": {"name": "dpo", "beta": 0.1}, "data": {"train": ["preference_demo"]}}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict[str, Path]:
    """For each case: one process with batch 2, two sharded processes with batch 1 each."""
    work = tmp_path_factory.mktemp("fsdp")
    data = write_data(work / "data.jsonl")
    out: dict[str, Path] = {"work": work}
    for case, (adapter, learning_rate, extra) in CASES.items():
        for name, batch_size, fsdp in (("one", 2, {}), ("two", 1, {"fsdp": True})):
            key = f"{case}-{name}"
            train = {**TRAIN, "batch_size": batch_size, "learning_rate": learning_rate, **fsdp}
            sections = {"data": {**DATA, **extra.get("data", {})}, "adapter": adapter, "train": train}
            sections.update({k: v for k, v in extra.items() if k != "data"})
            config = write_config(work / f"{key}.yaml", tiny_llama_dir, data, work / key, **sections)
            if fsdp:
                result = launch_two(TORCHRUN, config, work)
            else:
                result = run_cli("train", str(config), cwd=work)
            assert result.returncode == 0, result.stderr[-3000:]
            out[key] = work / key
    return out


def assert_same_training(one: Path, two: Path, weights_file: str, learned: float = 1.0) -> None:
    a_records, b_records = read_metrics(one), read_metrics(two)
    assert [r["step"] for r in b_records] == [r["step"] for r in a_records] == list(range(1, STEPS + 1))
    for a, b in zip(a_records, b_records, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4, (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-5 * max(1.0, a["grad_norm"]), (a, b)
        assert ("val_loss" in a) == ("val_loss" in b)
        if "val_loss" in a:
            assert abs(a["val_loss"] - b["val_loss"]) <= 1e-4, (a, b)
    assert a_records[-1]["loss"] < a_records[0]["loss"] - learned  # it learned, so equal weights say something
    single, sharded = (load_file(str(run / "model" / weights_file)) for run in (one, two))
    assert single.keys() == sharded.keys() and len(single) > 0
    for name in single:
        assert torch.allclose(single[name], sharded[name], rtol=0, atol=1e-5), name


def test_two_sharded_lora_processes_train_like_one_process_with_their_whole_batch(runs: dict[str, Path]) -> None:
    assert_same_training(runs["lora-one"], runs["lora-two"], "adapter_model.safetensors")
    status = json.loads((runs["lora-two"] / "run.json").read_text(encoding="utf-8"))
    assert (status["status"], status["steps"], status["world_size"]) == ("finished", STEPS, 2)
    state = json.loads((runs["lora-two"] / "checkpoints" / "step-3" / "trainer_state.json").read_text("utf-8"))
    assert state["fingerprints"]["sharded"] is True


def test_sharded_full_fine_tuning_with_tied_embeddings_equals_one_process(runs: dict[str, Path]) -> None:
    assert_same_training(runs["full-one"], runs["full-two"], "model.safetensors")
    saved = load_file(str(runs["full-two"] / "model" / "model.safetensors"))
    assert any("embed_tokens" in name for name in saved)  # the root unit's weights, gathered whole


def test_sharded_dpo_with_a_whole_reference_model_equals_one_process(runs: dict[str, Path]) -> None:
    assert_same_training(runs["dpo-one"], runs["dpo-two"], "adapter_model.safetensors", learned=0.1)
    one, two = read_metrics(runs["dpo-one"]), read_metrics(runs["dpo-two"])
    assert two[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # the policy starts as the reference: ln 2
    margins = [(a["val_margin"], b["val_margin"]) for a, b in zip(one, two, strict=True) if "val_margin" in a]
    assert len(margins) == 2 and all(abs(a - b) <= 1e-4 for a, b in margins) and margins[-1][0] != margins[0][0]


def test_a_sharded_checkpoint_holds_whole_tensors_and_resumes_exactly_under_accelerate_fsdp(
    runs: dict[str, Path], tiny_llama_dir: Path
) -> None:
    checkpoint = runs["lora-two"] / "checkpoints" / "step-3"
    weights = load_file(str(checkpoint / "trainable.safetensors"))
    final = load_file(str(runs["lora-two"] / "model" / "adapter_model.safetensors"))
    assert len(weights) == len(final)  # every trainable tensor, whole (not one process's half)
    assert all(w.shape == f.shape for w, f in zip(weights.values(), final.values(), strict=True))
    optimizer = torch.load(checkpoint / "training_state.pt", weights_only=True)["optimizer"]
    assert all(isinstance(name, str) for name in optimizer["state"])  # keyed by parameter name
    config = runs["work"] / "lora-accelerate.yaml"  # no train.fsdp: the accelerate config asks for sharding
    train = {**TRAIN, "batch_size": 1}
    write_config(
        config, tiny_llama_dir, runs["work"] / "data.jsonl", runs["lora-two"], train=train, data=DATA, adapter=ADAPTER
    )
    resumed_dir = runs["work"] / "resumed"
    overrides = (f"output.dir={resumed_dir}", "--resume", str(checkpoint))
    result = launch_two(ACCELERATE_FSDP, config, runs["work"], *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, reference = read_metrics(resumed_dir), read_metrics(runs["lora-two"])
    for a, b in zip(resumed[3:], reference[3:], strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a, b)
    weights, expected = (
        load_file(str(d / "model" / "adapter_model.safetensors")) for d in (resumed_dir, runs["lora-two"])
    )
    assert max(float((weights[k] - expected[k]).abs().max()) for k in expected) <= 1e-6
    saved = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["fingerprints"]
    with pytest.raises(UserError, match=r"sharded \(true → false\) changed"):
        checkpoint_store(runs["work"] / "ddp", 3, None, {**saved, "sharded": False}, checkpoint, force=False)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "tuneforge shards with FSDP instead"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"}, "strategy SHARD_GRAD_OP"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_RESHARD_AFTER_FORWARD": "false"}, "fsdp_reshard_after_forward"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params: true"),
    ],
)
def test_a_launch_tuneforge_cannot_shard_as_asked_is_refused_before_joining(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=message):
        join_world()


def config_of(method: str, adapter: str) -> RunConfig:
    return config_from_dict(
        {
            "model": {"name_or_path": "m"},
            "data": {"train": ["d"]},
            "method": {"name": method},
            "adapter": {"name": adapter},
        }
    )


def test_methods_and_adapters_that_cannot_shard_are_refused_with_those_that_can() -> None:
    sharded = World(0, 2, sharded=True)
    ppo = config_of("ppo", "lora")
    with pytest.raises(UserError, match=r"method ppo cannot train sharded .*Methods that can: .*sft"):
        check_sharding(sharded, ppo, METHODS.get("ppo"), ADAPTERS.get("lora"))
    check_sharding(World(0, 2), ppo, METHODS.get("ppo"), ADAPTERS.get("lora"))  # DDP: fine
    check_sharding(sharded, config_of("dpo", "full"), METHODS.get("dpo"), ADAPTERS.get("full"))
    with pytest.raises(UserError, match=r"adapter prompt cannot train sharded .*Adapters that can: full, lora"):
        check_sharding(sharded, config_of("sft", "prompt"), METHODS.get("sft"), ADAPTERS.get("prompt"))
    assert not METHODS.get("grpo").shardable and METHODS.get("dpo").shardable
