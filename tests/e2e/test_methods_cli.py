"""End-to-end: the preference and pretraining methods through the real CLI on the tiny models, each showing its
own signal moving the right way (DPO margin and accuracy, KTO desirable over undesirable reward, held-out
perplexity for continued pretraining), with LoRA and full fine-tuning; runs resume exactly and export."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import launch, newest_checkpoint, read_metrics, run_cli, wait_for_checkpoint
from safetensors.torch import load_file

from tuneforge.cli.main import main

FAST = {"grad_accum": 1, "warmup_ratio": 0.0, "scheduler": "constant", "eval_steps": 4, "logging_steps": 1}


def write_run_config(path: Path, model_dir: Path, out: Path, method: dict[str, Any], **sections: Any) -> Path:
    """A short run of `method` on the tiny model (LoRA unless an adapter is given)."""
    config: dict[str, Any] = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": ["preference_demo"], "cutoff_len": 128, "val_size": 6},
        "method": method,
        "adapter": {"name": "lora", "r": 8, "alpha": 16},
        "train": {"max_steps": 12, "batch_size": 2, "learning_rate": 5.0e-3, **FAST},
        "output": {"dir": str(out)},
    }
    for name, values in sections.items():
        config[name] = values if name in ("adapter", "method") else {**config.get(name, {}), **values}
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def train(config: Path) -> list[dict[str, Any]]:
    assert main(["train", str(config)]) == 0
    return read_metrics(Path(json.loads(config.read_text())["output"]["dir"]))


def validation(records: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in records if key in r]


@pytest.mark.parametrize("adapter", [{"name": "lora", "r": 8, "alpha": 16}, {"name": "full"}], ids=["lora", "full"])
def test_dpo_raises_the_margin_and_accuracy_on_held_out_pairs(tiny_llama_dir: Path, tmp_path: Path, adapter):
    lr = 5.0e-3 if adapter["name"] == "lora" else 3.0e-4
    config = write_run_config(
        tmp_path / "dpo.yaml", tiny_llama_dir, tmp_path / "run", {"name": "dpo", "beta": 0.1}, adapter=adapter,
        train={"learning_rate": lr},
    )  # fmt: skip
    records = train(config)
    first = records[0]
    # the policy starts as the reference: zero rewards, loss ln 2
    assert first["reward_chosen"] == pytest.approx(0.0, abs=1e-5) and first["loss"] == pytest.approx(0.6931, abs=1e-3)
    margins, accuracy = validation(records, "val_margin"), validation(records, "val_accuracy")
    assert len(margins) == 3 and margins[-1] > margins[0] + 0.5, margins
    assert accuracy[-1] >= 0.8 and accuracy[-1] >= accuracy[0], accuracy
    assert records[-1]["loss"] < 0.5 * first["loss"]


@pytest.mark.parametrize("loss", ["ipo", "hinge", "orpo", "simpo"])
def test_every_dpo_loss_moves_the_margin(tiny_llama_dir: Path, tmp_path: Path, loss: str):
    method = {"name": "dpo", "loss": loss, "beta": {"simpo": 2.0, "orpo": 1.0}.get(loss, 0.1)}
    records = train(write_run_config(tmp_path / "c.yaml", tiny_llama_dir, tmp_path / "run", method))
    margins = validation(records, "val_margin")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert margins[-1] > margins[0], (loss, margins)


def test_prompt_tuning_trains_dpo_on_padded_pairs(tiny_llama_dir: Path, tmp_path: Path):
    adapter = {"name": "prompt", "num_virtual_tokens": 4}
    config = write_run_config(tmp_path / "c.yaml", tiny_llama_dir, tmp_path / "run", {"name": "dpo"}, adapter=adapter)
    margins = validation(train(config), "val_margin")
    assert margins[-1] > margins[0], margins


@pytest.mark.parametrize("adapter", [{"name": "lora", "r": 8, "alpha": 16}, {"name": "full"}], ids=["lora", "full"])
def test_kto_lifts_desirable_answers_over_undesirable_ones(tiny_llama_dir: Path, tmp_path: Path, adapter):
    lr = 5.0e-3 if adapter["name"] == "lora" else 3.0e-4
    config = write_run_config(
        tmp_path / "kto.yaml", tiny_llama_dir, tmp_path / "run", {"name": "kto", "beta": 0.1}, adapter=adapter,
        data={"train": ["kto_demo"]}, train={"batch_size": 4, "learning_rate": lr},
    )  # fmt: skip
    records = train(config)
    assert records[0]["loss"] == pytest.approx(0.5, abs=1e-4)  # σ(0) everywhere at the start
    gaps = [r["reward_desirable"] - r["reward_undesirable"] for r in records if "reward_undesirable" in r]
    assert gaps[0] == pytest.approx(0.0, abs=1e-4) and min(gaps[-3:]) > 0.5, gaps
    assert records[-1]["loss"] < records[0]["loss"]


def held_out_loss(model: Path, work: Path) -> float:
    out = work / f"eval-{model.name}"
    result = run_cli("eval", str(model), "--data", "domain_text_eval", "--out", str(out), cwd=work)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "loss.json").read_text())["loss"]


def test_continued_pretraining_lowers_held_out_perplexity_of_the_domain(tiny_llama_dir: Path, tmp_path: Path):
    config = write_run_config(
        tmp_path / "pt.yaml", tiny_llama_dir, tmp_path / "run", {"name": "pretrain"},
        data={"train": ["domain_text"], "val_size": 0.1}, train={"max_steps": 16, "batch_size": 1},
    )  # fmt: skip
    records = train(config)
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]
    before, after = held_out_loss(tiny_llama_dir, tmp_path), held_out_loss(tmp_path / "run", tmp_path)
    assert after < 0.7 * before, (before, after)


def test_methods_refuse_data_of_the_wrong_kind(tiny_llama_dir: Path, tmp_path: Path):
    for method, data, wanted in (
        ("dpo", "identity", "trains on preference pairs (chosen/rejected), but the data holds conversations"),
        ("kto", "preference_demo", "trains on KTO-labelled conversations, but the data holds preference pairs"),
        ("pretrain", "kto_demo", "trains on raw text, but the data holds KTO-labelled conversations"),
    ):
        config = write_run_config(
            tmp_path / f"{method}.yaml", tiny_llama_dir, tmp_path / method, {"name": method}, data={"train": [data]}
        )
        result = run_cli("train", str(config), "data.variables.name=A", "data.variables.author=B", cwd=tmp_path)
        assert result.returncode == 2 and wanted in " ".join(result.stderr.split()), result.stderr[-800:]


def test_a_dpo_run_resumes_exactly_after_sigkill_and_exports(tiny_llama_dir: Path, tmp_path: Path):
    train_keys = {"max_steps": 14, "save_steps": 3, "deterministic": True, "eval_steps": 5}
    method = {"name": "dpo", "sft_weight": 0.5}
    reference = write_run_config(tmp_path / "ref.yaml", tiny_llama_dir, tmp_path / "ref", method, train=train_keys)
    killed = write_run_config(tmp_path / "kill.yaml", tiny_llama_dir, tmp_path / "kill", method, train=train_keys)
    assert run_cli("train", str(reference), cwd=tmp_path).returncode == 0
    process = launch(killed, tmp_path)
    wait_for_checkpoint(tmp_path / "kill", 6, process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    step = json.loads((newest_checkpoint(tmp_path / "kill") / "trainer_state.json").read_text())["step"]
    assert 6 <= step < 14
    resumed = run_cli("train", str(killed), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    got, want = read_metrics(tmp_path / "kill"), read_metrics(tmp_path / "ref")
    assert [r["step"] for r in got] == list(range(1, 15))
    for a, b in zip(got, want, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["margin"] == pytest.approx(b["margin"], abs=1e-5)
    weights = load_file(str(tmp_path / "kill" / "model" / "adapter_model.safetensors"))
    expected = load_file(str(tmp_path / "ref" / "model" / "adapter_model.safetensors"))
    assert max(float((weights[k] - expected[k]).abs().max()) for k in weights) <= 1e-6

    exported = run_cli("export", str(tmp_path / "kill"), "--to", str(tmp_path / "merged"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert any((tmp_path / "merged").glob("*.safetensors"))


def test_ewc_from_the_cli_estimates_fisher_on_general_answers_and_logs_its_penalty(tiny_llama_dir, tmp_path):
    config = write_run_config(
        tmp_path / "ewc.yaml", tiny_llama_dir, tmp_path / "run", {"name": "sft"},
        data={"train": ["identity"], "variables": {"name": "A", "author": "B"}},
        train={"max_steps": 4, "ewc": {"prompts": "general_prompts", "samples": 4, "max_new_tokens": 8, "weight": 50}},
    )  # fmt: skip
    result = run_cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "EWC: Fisher information from 4 answers to general_prompts, weight 50" in " ".join(result.stderr.split())
    penalties = [r["penalty"] for r in read_metrics(tmp_path / "run")]
    assert penalties[0] == pytest.approx(0.0, abs=1e-9) and penalties[-1] > 0


@pytest.mark.parametrize("adapter", [{"name": "lora", "r": 8, "alpha": 16}, {"name": "full"}], ids=["lora", "full"])
def test_a_reward_model_ranks_held_out_pairs_and_loads_back_as_a_scorer(tiny_llama_dir: Path, tmp_path: Path, adapter):
    from tuneforge.methods.reward import load_reward_model

    lr = 3.0e-3 if adapter["name"] == "lora" else 2.0e-4
    config = write_run_config(
        tmp_path / "rm.yaml", tiny_llama_dir, tmp_path / "rm", {"name": "reward"}, adapter=adapter,
        data={"val_size": 8}, train={"max_steps": 16, "batch_size": 4, "learning_rate": lr},
    )  # fmt: skip
    records = train(config)
    assert records[-1]["loss"] < records[0]["loss"]
    accuracy = validation(records, "val_accuracy")
    assert accuracy[-1] >= 0.85 and validation(records, "val_margin")[-1] > 0, accuracy
    scorer = load_reward_model(tmp_path / "rm")
    pairs = json.loads((Path(__file__).parents[2] / "src/tuneforge/resources/data/preference_demo.json").read_text())
    prompts = [[{"role": "user", "content": p["instruction"]}] for p in pairs[:12]]
    chosen = scorer.score(
        [[*m, {"role": "assistant", "content": p["chosen"]}] for m, p in zip(prompts, pairs, strict=False)]
    )
    rejected = scorer.score(
        [[*m, {"role": "assistant", "content": p["rejected"]}] for m, p in zip(prompts, pairs, strict=False)]
    )
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) >= 10
    if adapter["name"] != "lora":
        return
    evaluated = run_cli(
        "eval", str(tmp_path / "rm"), "--pairs", "preference_demo", "--max-samples", "16", cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr[-1500:]
    ranking = json.loads((tmp_path / "rm" / "eval" / "ranking.json").read_text())
    assert ranking["pairs"] == 16 and ranking["accuracy"] >= 0.8 and ranking["margin"] > 0
    assert f"{100 * ranking['accuracy']:.1f}% of 16 pairs ranked right" in " ".join(evaluated.stderr.split())
    not_a_reward_run = run_cli("eval", str(tiny_llama_dir), "--pairs", "preference_demo", cwd=tmp_path)
    assert not_a_reward_run.returncode == 2 and "is not a reward-model run" in not_a_reward_run.stderr
    # the reward model as GRPO's reward: its scores are what the policy is trained on
    grpo = {
        "name": "grpo",
        "num_generations": 2,
        "max_new_tokens": 6,
        "rewards": [{"name": "reward_model", "path": str(tmp_path / "rm")}],
    }
    records = train(
        write_run_config(
            tmp_path / "grpo.yaml", tiny_llama_dir, tmp_path / "grpo", grpo,
            data={"train": ["arithmetic_train"], "max_samples": 8, "val_size": 0}, train={"max_steps": 2},
        )
    )  # fmt: skip
    assert all(math.isfinite(r["reward_reward_model"]) and r["reward"] == r["reward_reward_model"] for r in records)


def test_precomputed_reference_gives_the_run_a_frozen_copy_gives(tiny_llama_dir: Path, tmp_path: Path):
    """Full fine-tuning: reference log-probabilities scored once before training equal a frozen copy's."""
    runs = {}
    for precompute in (False, True):
        method = {"name": "dpo", "precompute_reference": precompute}
        config = write_run_config(
            tmp_path / f"{precompute}.yaml", tiny_llama_dir, tmp_path / str(precompute), method,
            adapter={"name": "full"}, train={"max_steps": 4, "learning_rate": 3.0e-4},
        )  # fmt: skip
        runs[precompute] = train(config)
    for live, stored in zip(runs[False], runs[True], strict=True):
        for key in ("loss", "margin", "reward_chosen", "val_margin"):
            if key in live:
                assert stored[key] == pytest.approx(live[key], abs=1e-4), (key, live, stored)
    assert runs[True][-1]["margin"] > 0


def test_train_replay_puts_general_data_into_every_step(tiny_llama_dir: Path, tmp_path: Path):
    config = write_run_config(
        tmp_path / "replay.yaml", tiny_llama_dir, tmp_path / "run", {"name": "sft"},
        data={"train": ["identity"], "variables": {"name": "A", "author": "B"}, "packing": False, "val_size": 0},
        train={"max_steps": 3, "batch_size": 2, "grad_accum": 2, "replay": {"data": ["arithmetic_train"], "share": 0.5}},
    )  # fmt: skip
    result = run_cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replay: 200 samples from arithmetic_train, 50% of every step's rows" in " ".join(result.stderr.split())
    # 76 identity rows, 2 of the 4 rows per step are new data: 38 steps per epoch
    assert read_metrics(tmp_path / "run")[-1]["epoch"] == pytest.approx(3 / 38, abs=1e-3)
    wrong = run_cli("train", str(config), "train.batch_size=1", "train.grad_accum=1", "output.dir=x", cwd=tmp_path)
    assert wrong.returncode == 2 and "at least 2 rows per step" in wrong.stderr


def test_replay_toward_the_base_distribution_is_refused_for_methods_that_cannot(tiny_llama_dir: Path, tmp_path: Path):
    replay = {"prompts": "general_prompts", "limit": 4, "target": "distribution"}
    config = write_run_config(
        tmp_path / "dist.yaml", tiny_llama_dir, tmp_path / "run", {"name": "dpo"},
        data={"train": ["identity"], "variables": {"name": "A", "author": "B"}, "replay": replay},
    )  # fmt: skip
    refused = run_cli("train", str(config), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    said = " ".join(refused.stderr.split())
    assert "data.replay.target: distribution needs a method that trains toward a distribution (sft)" in said
    assert "set data.replay.target to answer" in said
    assert not (tmp_path / "run").exists()  # refused before anything was loaded or written
