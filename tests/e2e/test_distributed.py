"""End-to-end: data-parallel training. `torchrun` starts two gloo processes on CPU running the real
`tuneforge train`; with half the batch each, they give the per-step losses and final weights of one process with
the whole batch, and only rank 0 writes the run directory. A checkpoint of that run resumes exactly with two
processes again, started by `accelerate launch` with the shipped 8-GPU config (gloo on this CPU), and is refused
with another number of processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import MEMORISE, read_metrics, run_cli, write_config
from safetensors.torch import load_file

from tuneforge.errors import UserError
from tuneforge.train.distributed import World, join_world
from tuneforge.train.lifecycle import checkpoint_store

STEPS = 6
# 12 conversations, 2 for validation; packed into at most 112 tokens they make 9 rows (one pack holds two samples).
# A step takes 2 micro-batches of 2 rows: the third step of each epoch has a single row, so rank 1 gets nothing.
TRAIN = {
    "max_steps": STEPS,
    "grad_accum": 2,
    "learning_rate": 1.0e-2,
    "warmup_steps": 1,
    "weight_decay": 0.1,
    "eval_steps": 3,
    "save_steps": 3,
    "num_threads": 1,
}
DATA = {"val_size": 2, "packing": True, "cutoff_len": 112}
ADAPTER = {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0}  # dropout draws differ between the processes


def write_data(path: Path) -> Path:
    lines = []
    for i in range(12):
        question, answer = MEMORISE[i % len(MEMORISE)]
        answer = f"{answer} Item {i}." + " And more." * (i % 3)
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "distributed"


def launch_two(launcher: list[str], config: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`LAUNCHER -m tuneforge.cli.main train CONFIG ARGS...` (two processes), as a user would run it."""
    command = [sys.executable, "-m", *launcher, "-m", "tuneforge.cli.main", "train", str(config), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


TORCHRUN = ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE = ["accelerate.commands.launch", "--config_file", str(EXAMPLES / "accelerate_8gpus.yaml")]
ACCELERATE += ["--num_processes", "2", "--main_process_port", "0"]


def adapter_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict[str, Path]:
    """One process with batch 2, and two processes with batch 1 each (the same global batch)."""
    work = tmp_path_factory.mktemp("distributed")
    data = write_data(work / "data.jsonl")
    configs = {
        name: write_config(
            work / f"{name}.yaml",
            tiny_llama_dir,
            data,
            work / name,
            train={**TRAIN, "batch_size": batch_size},
            data=DATA,
            adapter=ADAPTER,
        )
        for name, batch_size in (("one", 2), ("two", 1))
    }
    single = run_cli("train", str(configs["one"]), cwd=work)
    assert single.returncode == 0, single.stderr[-3000:]
    double = launch_two(TORCHRUN, configs["two"], work)
    assert double.returncode == 0, double.stderr[-3000:]
    return {"work": work, "one": work / "one", "two": work / "two", "two_config": configs["two"]}


def test_two_processes_train_like_one_process_with_their_whole_batch(runs: dict[str, Path]) -> None:
    one, two = read_metrics(runs["one"]), read_metrics(runs["two"])
    # rank 0 alone writes: every step once, in order
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, STEPS + 1))
    for a, b in zip(one, two, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4, (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4, (a, b)
        assert a["lr"] == b["lr"]
        assert ("val_loss" in a) == ("val_loss" in b)
        if "val_loss" in a:
            assert abs(a["val_loss"] - b["val_loss"]) <= 1e-4, (a, b)
    assert one[-1]["loss"] < one[0]["loss"] - 1.0  # it learned something, so equal weights say something
    single, double = adapter_weights(runs["one"]), adapter_weights(runs["two"])
    assert single.keys() == double.keys() and len(single) > 0
    for name in single:
        assert torch.allclose(single[name], double[name], rtol=0, atol=1e-5), name
    status = json.loads((runs["two"] / "run.json").read_text(encoding="utf-8"))
    assert (status["status"], status["steps"], status["world_size"]) == ("finished", STEPS, 2)
    assert "world_size" not in json.loads((runs["one"] / "run.json").read_text(encoding="utf-8"))


def test_two_process_checkpoint_resumes_exactly_with_two_processes_from_accelerate_launch(
    runs: dict[str, Path],
) -> None:
    checkpoint = runs["two"] / "checkpoints" / "step-3"
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    ranks = state["rng_ranks"]  # each process's own generators, each restored by its own process
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    assert torch.equal(state["rng"]["torch"], ranks[0]["torch"])

    resumed_dir = runs["work"] / "resumed"
    overrides = (f"output.dir={resumed_dir}", "--resume", str(checkpoint))
    result = launch_two(ACCELERATE, runs["two_config"], runs["work"], *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, reference = read_metrics(resumed_dir), read_metrics(runs["two"])
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(resumed[3:], reference[3:], strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a, b)
    weights, expected = adapter_weights(resumed_dir), adapter_weights(runs["two"])
    assert max(float((weights[k] - expected[k]).abs().max()) for k in expected) <= 1e-6
    assert json.loads((resumed_dir / "run.json").read_text(encoding="utf-8"))["resumed_from_step"] == 3


def test_resuming_with_another_number_of_processes_is_refused(runs: dict[str, Path]) -> None:
    checkpoint = runs["two"] / "checkpoints" / "step-3"
    saved = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["fingerprints"]
    assert saved["world_size"] == 2
    with pytest.raises(UserError, match=r"world_size \(2 → 1\) changed"):
        checkpoint_store(runs["work"] / "elsewhere", 3, None, {**saved, "world_size": 1}, checkpoint, force=False)
    store = checkpoint_store(runs["work"] / "elsewhere", 3, None, {**saved, "world_size": 1}, checkpoint, force=True)
    assert store.fingerprints["world_size"] == 1


def test_a_sharding_engine_launch_is_refused_not_run_as_plain_data_parallel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(UserError, match="DeepSpeed"):
        join_world()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert join_world() == World()


def test_each_process_takes_a_disjoint_slice_of_every_micro_batch() -> None:
    rows = [[0], [1, 2], [3], [4], [5]]
    worlds = [World(rank, 3) for rank in range(3)]
    parts = [world.part(rows, 2) for world in worlds]
    assert parts == [[[0], [1, 2]], [[3], [4]], [[5]]]
    assert [world.every_nth(list(range(7))) for world in worlds] == [[0, 3, 6], [1, 4], [2, 5]]


def test_the_shipped_launch_configs_are_what_they_say() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    import tuneforge.methods  # noqa: F401  (registers the method and adapter sections)
    from tuneforge.config.load import load_config

    one_node = load_config_from_file(str(EXAMPLES / "accelerate_8gpus.yaml"))
    two_nodes = load_config_from_file(str(EXAMPLES / "accelerate_2nodes.yaml"))
    assert (one_node.distributed_type.value, one_node.num_machines, one_node.num_processes) == ("MULTI_GPU", 1, 8)
    assert (two_nodes.distributed_type.value, two_nodes.num_machines, two_nodes.num_processes) == ("MULTI_GPU", 2, 16)
    assert one_node.mixed_precision == two_nodes.mixed_precision == "no"  # precision is train.dtype
    config = load_config(str(EXAMPLES / "sft_lora.yaml"), [])
    assert (config.adapter.name, config.train.batch_size, config.train.grad_accum) == ("lora", 4, 2)
