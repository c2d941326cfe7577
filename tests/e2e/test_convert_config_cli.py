"""End-to-end: `tuneforge convert-config LF.yaml` on LLaMA-Factory training YAMLs of every kind.

Each input is written here in LLaMA-Factory's layout; the test checks the exact converted values, that tuneforge's
own loader reads the output, and the exact list of options not carried over (stderr and the comment block).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import read_metrics, run_cli

import tuneforge.methods  # noqa: F401  (registers the method and adapter parameters configs are checked against)
from fixtures.shared_data import LLAMAFACTORY, needs_llamafactory
from tuneforge.config.load import load_config

# the options every input shares, as LLaMA-Factory's example files have them
COMMON: dict[str, Any] = {
    "model_name_or_path": "models/base-model",
    "trust_remote_code": True,
    "do_train": True,
    "dataset_dir": "lf_data",
    "template": "llama3",
    "cutoff_len": 1024,
    "max_samples": 500,
    "overwrite_cache": True,
    "preprocessing_num_workers": 8,
    "output_dir": "saves/run",
    "logging_steps": 5,
    "save_steps": 200,
    "plot_loss": True,
    "overwrite_output_dir": True,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "learning_rate": 2.0e-5,
    "num_train_epochs": 2.0,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.05,
    "bf16": True,
    "ddp_timeout": 3600,
}
COMMON_UNMAPPED = [
    "do_train: true -- not needed: tuneforge train always trains",
    "overwrite_cache: true -- not needed: tuneforge caches tokenised data by content hash, so changed data or "
    "settings never reuse a stale cache",
    "preprocessing_num_workers: 8 -- not needed: it changes only the speed (tuneforge tokenises once, cached by "
    "content hash, and batches from memory)",
    "plot_loss: true -- not needed: tuneforge always plots the loss (loss.png in the run directory)",
    "ddp_timeout: 3600 -- tuneforge leaves the process-group timeout to torchrun / accelerate",
]
LORA = {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}


def expected_config(
    dataset: list[str],
    method: dict[str, Any],
    adapter: dict[str, Any],
    train: dict[str, Any] | None = None,
    **data: Any,
) -> dict[str, Any]:
    """The converted COMMON options with the case's own values."""
    return {
        "model": {"name_or_path": "models/base-model", "trust_remote_code": True},
        "data": {
            "dataset": dataset,
            "dataset_dir": "lf_data",
            "template": "llama3",
            "cutoff_len": 1024,
            "max_samples": 500,
            "val_size": 0.0,
            "shuffle": False,
            "packing": False,
            **data,
        },
        "method": method,
        "adapter": adapter,
        "train": {
            "batch_size": 2,
            "grad_accum": 4,
            "learning_rate": 2.0e-5,
            "epochs": 2.0,
            "warmup_ratio": 0.05,
            "logging_steps": 5,
            "save_steps": 200,
            "scheduler": "cosine",
            "dtype": "bf16",
            **(train or {}),
        },
        "output": {"dir": "saves/run", "overwrite": True},
    }


CASES = {
    "sft": (
        {"stage": "sft", "finetuning_type": "lora", "lora_target": "all", "dataset": "identity,alpaca_en_demo"},
        expected_config(["identity", "alpaca_en_demo"], {"name": "sft"}, LORA),
        [],
    ),
    "dpo": (
        {"stage": "dpo", "lora_rank": 16, "pref_beta": 0.2, "pref_loss": "simpo", "simpo_gamma": 1.0},
        expected_config(
            ["dpo_en_demo"],
            {"name": "dpo", "beta": 0.2, "loss": "simpo", "gamma": 1.0},
            {**LORA, "r": 16, "alpha": 32},
        ),
        [],
    ),
    "kto": (
        {"stage": "kto", "pref_beta": 0.1, "kto_chosen_weight": 1.0, "kto_rejected_weight": 1.33, "pref_ftx": 0.2},
        expected_config(
            ["kto_en_demo"],
            {"name": "kto", "beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.33},
            LORA,
        ),
        ["pref_ftx: 0.2 -- tuneforge's kto has no SFT term"],
    ),
    "reward": (
        {"stage": "rm", "lora_rank": 8, "save_only_model": False, "report_to": "none", "resume_from_checkpoint": None},
        expected_config(["dpo_en_demo"], {"name": "reward"}, LORA),
        [
            "save_only_model: false -- not needed: tuneforge checkpoints hold the optimizer state",
            "report_to: none -- not needed: tuneforge reports to no tracker unless train.report_to names one",
            "resume_from_checkpoint: null -- not needed: null keeps LLaMA-Factory's default",
        ],
    ),
    "pretrain": (
        {"stage": "pt", "lora_target": "q_proj,v_proj", "val_size": 0.1, "eval_strategy": "steps", "eval_steps": 50},
        expected_config(
            ["c4_demo"],
            {"name": "pretrain"},
            {**LORA, "target_modules": ["q_proj", "v_proj"]},
            train={"eval_steps": 50},
            val_size=0.1,
            packing=True,
        ),
        [],
    ),
    "full": (
        {"stage": "sft", "finetuning_type": "full", "deepspeed": "ds_z3_config.json", "per_device_eval_batch_size": 1},
        expected_config(["alpaca_en_demo"], {"name": "sft"}, {"name": "full"}, train={"fsdp": True}),
        [
            "deepspeed: ds_z3_config.json -- ZeRO-3 becomes FSDP full shard: train.fsdp: true, launch with torchrun "
            "or accelerate (README: Scale out)",
            "per_device_eval_batch_size: 1 -- not needed: the batch size does not change the validation loss "
            "(tuneforge evaluates with train.batch_size)",
        ],
    ),
    "qlora": (
        {"stage": "sft", "quantization_bit": 4, "quantization_method": "bitsandbytes", "lora_rank": 8, "use_kt": True},
        expected_config(["alpaca_en_demo"], {"name": "sft"}, {**LORA, "name": "qlora"}),
        ["use_kt: true -- unknown LLaMA-Factory option"],
    ),
}
DATASETS = {"dpo": "dpo_en_demo", "kto": "kto_en_demo", "reward": "dpo_en_demo", "pretrain": "c4_demo"}


@pytest.mark.parametrize("case", list(CASES))
def test_converted_config_has_the_exact_values_and_lists_what_is_not_carried_over(case: str, tmp_path: Path) -> None:
    extra, expected, unmapped = CASES[case]
    options = {**COMMON, "dataset": DATASETS.get(case, "alpaca_en_demo"), **extra}
    source = tmp_path / f"llama3_lora_{case}.yaml"
    source.write_text("### LLaMA-Factory\n" + yaml.safe_dump(options, sort_keys=False), encoding="utf-8")

    result = run_cli("convert-config", str(source), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == expected
    lines = sorted(COMMON_UNMAPPED + unmapped, key=lambda line: list(options).index(line.split(":")[0]))
    header = [f"# tuneforge config converted from {source.name} (LLaMA-Factory) by `tuneforge convert-config`."]
    header += [f"# LLaMA-Factory options not carried over ({len(lines)}):", *(f"#   {line}" for line in lines)]
    assert result.stdout.splitlines()[: len(header)] == header
    assert not result.stdout.splitlines()[len(header)].startswith("#")
    assert result.stderr.splitlines() == [
        f"{len(lines)} LLaMA-Factory option(s) of {source} not carried over:",
        *(f"  {line}" for line in lines),
    ]
    converted = tmp_path / "tuneforge.yaml"
    converted.write_text(result.stdout, encoding="utf-8")
    config = load_config(converted)  # tuneforge's own loader reads the output as written
    assert config.method.name == expected["method"]["name"]
    assert config.adapter.name == expected["adapter"]["name"]
    assert config.train.learning_rate == 2.0e-5 and config.data.dataset == expected["data"]["dataset"]


def test_a_file_that_is_not_a_mapping_is_refused_naming_it(tmp_path: Path) -> None:
    source = tmp_path / "lf.yaml"
    source.write_text("- model_name_or_path: m\n- stage: sft\n", encoding="utf-8")
    result = run_cli("convert-config", str(source), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"tuneforge: error: {source} is not a YAML mapping of LLaMA-Factory options (it holds a list); it should "
        "read like `model_name_or_path: ...`, `stage: sft`, one option per line"
    )


def test_a_value_tuneforge_refuses_names_the_key_and_the_file(tmp_path: Path) -> None:
    source = tmp_path / "lf.yaml"
    source.write_text("model_name_or_path: m\nlora_dropout: 1.5\n", encoding="utf-8")
    result = run_cli("convert-config", str(source), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert f"{source} (converted): adapter.dropout: Input should be less than 1" in result.stderr
    assert f"fix that option in {source}" in result.stderr


@needs_llamafactory
def test_a_converted_llamafactory_config_trains(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """LLaMA-Factory's own demo catalog and a tiny model: the converted config trains as it is."""
    options = {
        "model_name_or_path": str(tiny_llama_dir),
        "stage": "sft",
        "finetuning_type": "lora",
        "lora_target": "all",
        "dataset": "alpaca_en_demo",
        "dataset_dir": str(LLAMAFACTORY),
        "template": "qwen",
        "cutoff_len": 128,
        "max_samples": 16,
        "output_dir": str(tmp_path / "saves" / "sft"),
        "per_device_train_batch_size": 4,
        "learning_rate": 1.0e-3,
        "max_steps": 2,
    }
    source = tmp_path / "lf.yaml"
    source.write_text(yaml.safe_dump(options), encoding="utf-8")
    converted = run_cli("convert-config", str(source), cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    (tmp_path / "tuneforge.yaml").write_text(converted.stdout, encoding="utf-8")

    result = run_cli("train", "tuneforge.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    steps = [row for row in read_metrics(tmp_path / "saves" / "sft") if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in steps)
