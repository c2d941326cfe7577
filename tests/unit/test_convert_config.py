"""LLaMA-Factory training options → tuneforge config (tuneforge.config.llamafactory_yaml): values and reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import tuneforge.methods  # noqa: F401  (registers the method and adapter parameters configs are checked against)
from tuneforge.cli.convert_config import render
from tuneforge.config.llamafactory_options import NO_COUNTERPART, NOT_NEEDED_OPTIONS
from tuneforge.config.llamafactory_yaml import (
    BUNDLED_TEMPLATES,
    UNKNOWN,
    convert_llamafactory,
    known_options,
    read_llamafactory_yaml,
)
from tuneforge.config.load import config_from_dict
from tuneforge.data.templates import TEMPLATES
from tuneforge.errors import UserError

# LLaMA-Factory's own defaults, written out where tuneforge's differ
LF_DATA = {"cutoff_len": 2048, "val_size": 0.0, "packing": False}
LF_TRAIN = {"batch_size": 8, "grad_accum": 1, "learning_rate": 5.0e-5, "warmup_ratio": 0.0, "scheduler": "linear"}
LF_LORA = {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}


def convert(**options: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The converted config (checked by tuneforge's loader) and the options not carried over, by name."""
    config, unmapped = convert_llamafactory(options)
    config_from_dict(config, "<converted>")
    return config, dict(unmapped)


def test_a_bare_config_spells_out_llamafactorys_defaults() -> None:
    config, unmapped = convert(model_name_or_path="models/base", dataset="alpaca_en_demo")
    assert config == {
        "model": {"name_or_path": "models/base"},
        "data": {"dataset": ["alpaca_en_demo"], "dataset_dir": "data", **LF_DATA},
        "method": {"name": "sft"},
        "adapter": LF_LORA,
        "train": LF_TRAIN,
    }
    assert unmapped == {}


def test_lora_options_and_numbers_written_as_strings() -> None:
    config, unmapped = convert(
        lora_rank=16,
        lora_dropout=0.05,
        lora_target="q_proj, v_proj",
        additional_target="embed_tokens,lm_head",
        use_rslora=True,
        use_dora=False,
        pissa_init=True,
        pissa_iter=16,
        loraplus_lr_ratio=16.0,
        learning_rate="1e-4",  # YAML reads 1e-4 (no dot) as a string
        num_train_epochs="2",
    )
    assert config["adapter"] == {
        "name": "lora",
        "r": 16,
        "alpha": 32,  # LLaMA-Factory: 2 × rank
        "dropout": 0.05,
        "target_modules": ["q_proj", "v_proj"],
        "modules_to_save": ["embed_tokens", "lm_head"],
        "use_rslora": True,
        "use_dora": False,
        "init": "pissa",
        "loraplus_lr_ratio": 16.0,
    }
    assert config["train"]["learning_rate"] == 1.0e-4 and config["train"]["epochs"] == 2
    assert unmapped == {"pissa_iter": "tuneforge's PiSSA runs its fast SVD with 4 iterations"}


@pytest.mark.parametrize(
    ("stage", "method", "packing"),
    [("sft", "sft", False), ("pt", "pretrain", True), ("rm", "reward", False), ("dpo", "dpo", False)],
)
def test_stages_become_methods_and_pretraining_packs(stage: str, method: str, packing: bool) -> None:
    config, _ = convert(stage=stage)
    assert config["method"]["name"] == method
    assert config["data"]["packing"] is packing


def test_neat_packing_turns_packing_on_for_any_stage() -> None:
    assert convert(stage="sft", neat_packing=True)[0]["data"]["packing"] is True
    assert convert(stage="pt", packing=False)[0]["data"]["packing"] is False


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "orpo", "simpo"])
def test_dpo_losses_and_their_options(loss: str) -> None:
    config, unmapped = convert(
        stage="dpo", pref_beta=0.2, pref_loss=loss, pref_ftx=0.5, dpo_label_smoothing=0.1, simpo_gamma=1.0
    )
    assert config["method"] == {
        "name": "dpo",
        "beta": 0.2,
        "loss": loss,
        "sft_weight": 0.5,
        "label_smoothing": 0.1,
        "gamma": 1.0,
    }
    assert unmapped == {}


def test_a_dpo_loss_tuneforge_lacks_is_listed_and_sigmoid_stays() -> None:
    config, unmapped = convert(stage="dpo", pref_loss="kto_pair")
    assert config["method"] == {"name": "dpo"}
    assert unmapped == {
        "pref_loss": "tuneforge's preference losses are sigmoid, ipo, hinge, orpo, simpo; dpo uses sigmoid"
    }


def test_kto_options_and_the_sft_term_it_lacks() -> None:
    config, unmapped = convert(
        stage="kto", pref_beta=0.3, kto_chosen_weight=1.5, kto_rejected_weight=0.5, pref_ftx=0.1, pref_loss="sigmoid"
    )
    assert config["method"] == {"name": "kto", "beta": 0.3, "desirable_weight": 1.5, "undesirable_weight": 0.5}
    assert unmapped == {
        "pref_ftx": "tuneforge's kto has no SFT term",
        "pref_loss": "not needed: LLaMA-Factory's kto training does not use it",
    }
    assert convert(stage="kto", pref_ftx=0)[1] == {"pref_ftx": "not needed: 0 adds no SFT term"}


def test_ppo_takes_llamafactorys_sampling_and_adaptive_kl_and_the_reward_run() -> None:
    config, unmapped = convert(
        stage="ppo", reward_model="saves/rm", max_new_tokens=256, top_p=0.9, top_k=0, ppo_epochs=4, ppo_target=3.0
    )
    assert config["method"] == {
        "name": "ppo",
        "max_new_tokens": 256,
        "temperature": 0.95,
        "top_p": 0.9,
        "kl_coef": 0.2,
        "target_kl": 3.0,
        "rewards": [{"name": "reward_model", "path": "saves/rm"}],
    }
    assert unmapped == {
        "top_k": "not needed: 0 changes nothing in sampling",
        "ppo_epochs": "tuneforge's ppo makes one policy update per batch of sampled answers",
    }


def test_generation_options_are_not_needed_outside_ppo() -> None:
    _, unmapped = convert(stage="sft", top_k=50, max_new_tokens=64, reward_model="saves/rm")
    assert unmapped == {
        "top_k": "not needed: LLaMA-Factory's sft training does not use it",
        "max_new_tokens": "not needed: LLaMA-Factory's sft training does not use it",
        "reward_model": "not needed: only LLaMA-Factory's ppo stage uses it",
    }


def test_quantization_bit_4_becomes_qlora() -> None:
    config, unmapped = convert(quantization_bit=4, quantization_method="bitsandbytes", fp16=True, pissa_init=True)
    assert config["adapter"] == {**LF_LORA, "name": "qlora", "compute_dtype": "float16"}
    assert config["train"]["dtype"] == "fp16"
    assert unmapped == {"pissa_init": "PiSSA cannot start from 4-bit weights in tuneforge; the adapter starts as LoRA"}


@pytest.mark.parametrize(
    ("options", "adapter", "expected"),
    [
        (
            {"quantization_bit": 8},
            "lora",
            {"quantization_bit": "tuneforge's QLoRA is 4-bit only; this config trains LoRA unquantised"},
        ),
        (
            {"quantization_bit": 4, "quantization_method": "hqq"},
            "lora",
            {
                "quantization_bit": "quantization_method hqq is not available; this trains LoRA unquantised",
                "quantization_method": "tuneforge quantizes with bitsandbytes only (adapter.name: qlora)",
            },
        ),
        (
            {"quantization_bit": 4, "finetuning_type": "full", "quantization_type": "nf4"},
            "full",
            {
                "quantization_bit": "tuneforge quantizes only under LoRA (QLoRA); the model trains unquantised",
                "quantization_type": "not needed: quantization_bit is not carried over",
            },
        ),
        (
            {"quantization_bit": 4, "quantization_type": "fp4", "double_quantization": False},
            "qlora",
            {
                "quantization_type": "tuneforge's QLoRA uses NF4",
                "double_quantization": "tuneforge's QLoRA always quantizes the scales too",
            },
        ),
    ],
)
def test_quantization_tuneforge_cannot_do_is_listed(
    options: dict[str, Any], adapter: str, expected: dict[str, str]
) -> None:
    config, unmapped = convert(**options)
    assert config["adapter"]["name"] == adapter
    assert unmapped == expected


def test_full_and_freeze_list_the_lora_options_as_not_needed() -> None:
    config, unmapped = convert(finetuning_type="full", lora_rank=16, freeze_trainable_layers=4)
    assert config["adapter"] == {"name": "full"}
    assert unmapped == {
        "lora_rank": "not needed: only finetuning_type: lora uses it",
        "freeze_trainable_layers": "not needed: only finetuning_type: freeze uses it",
    }


def test_freeze_layers_and_extra_modules() -> None:
    config, unmapped = convert(
        finetuning_type="freeze", freeze_trainable_layers=4, freeze_extra_modules="embed_tokens,norm,lm_head"
    )
    assert config["adapter"] == {"name": "freeze", "trainable_layers": 4, "train_embeddings": True, "train_head": True}
    assert unmapped == {"freeze_extra_modules": "tuneforge can add embed_tokens and lm_head only, not norm"}
    config, unmapped = convert(finetuning_type="freeze", freeze_trainable_layers=-2, freeze_trainable_modules="mlp")
    assert config["adapter"] == {"name": "freeze"}
    assert set(unmapped) == {"freeze_trainable_layers", "freeze_trainable_modules"}


def test_bundled_template_names_map_and_others_use_the_models_own() -> None:
    assert set(BUNDLED_TEMPLATES) <= set(TEMPLATES.names())  # each name mapped is one tuneforge ships
    for name in BUNDLED_TEMPLATES:
        config, unmapped = convert(template=name)
        assert config["data"]["template"] == name and unmapped == {}
    config, unmapped = convert(template="qwen")
    assert "template" not in config["data"]
    assert unmapped == {
        "template": "tuneforge uses the model's own chat template (without one: data.template: chatml, gemma, "
        "llama3, mistral)"
    }


def test_schedules_warmup_and_optimizers() -> None:
    config, unmapped = convert(lr_scheduler_type="constant", warmup_ratio=0.1, warmup_steps=5, optim="adamw_torch")
    assert config["train"] == {**LF_TRAIN, "scheduler": "constant", "warmup_ratio": 0.0, "optimizer": "adamw"}
    assert set(unmapped) == {"warmup_ratio", "warmup_steps"}
    config, unmapped = convert(lr_scheduler_type="cosine_with_restarts", warmup_steps=20, optim="paged_adamw_8bit")
    assert "scheduler" not in config["train"] and config["train"]["warmup_steps"] == 20
    assert set(unmapped) == {"lr_scheduler_type", "optim"}


def test_training_and_output_options() -> None:
    config, unmapped = convert(
        output_dir="saves/run",
        overwrite_output_dir=True,
        logging_steps=10,
        save_steps=500,
        save_total_limit=3,
        eval_steps=50.0,
        val_size=0.1,
        eval_strategy="steps",
        bf16=True,
        disable_gradient_checkpointing=True,
        report_to="wandb,swanlab",
        max_grad_norm=0.5,
        weight_decay=0.01,
        seed=7,
        max_steps=100,
    )
    assert config["output"] == {"dir": "saves/run", "overwrite": True}
    assert config["train"] == {
        **LF_TRAIN,
        "max_steps": 100,
        "weight_decay": 0.01,
        "max_grad_norm": 0.5,
        "seed": 7,
        "save_total_limit": 3,
        "logging_steps": 10,
        "save_steps": 500,
        "eval_steps": 50,
        "dtype": "bf16",
        "gradient_checkpointing": False,
        "report_to": ["wandb"],
    }
    assert unmapped == {"report_to": "tuneforge reports to tensorboard, wandb, mlflow only, not swanlab"}


def test_eval_strategy_no_with_a_validation_split_is_listed() -> None:
    assert convert(val_size=0.1, eval_strategy="no")[1] == {
        "eval_strategy": "tuneforge evaluates whenever data.val_size > 0; set val_size: 0 to train without it"
    }
    assert convert(eval_strategy="no")[1] == {
        "eval_strategy": "not needed: tuneforge evaluates only with validation data, and val_size is 0"
    }
    assert convert(save_strategy="no")[0]["train"]["save_steps"] == 0


def test_max_samples_keeps_the_first_rows_as_llamafactory_does() -> None:
    config, _ = convert(dataset="a,b", max_samples=100, mix_strategy="interleave_under", interleave_probs="0.7,0.3")
    assert config["data"] == {
        "dataset": ["a", "b"],
        "dataset_dir": "data",
        "cutoff_len": 2048,
        "max_samples": 100,
        "val_size": 0.0,
        "shuffle": False,
        "packing": False,
        "mix_ratios": [0.7, 0.3],
    }


def test_unknown_and_null_options_are_listed() -> None:
    _, unmapped = convert(lora_rnak=4, frobnicate=True, resume_from_checkpoint=None)
    assert unmapped == {
        "lora_rnak": UNKNOWN + " (did you mean lora_rank?)",
        "frobnicate": UNKNOWN,
        "resume_from_checkpoint": "not needed: null keeps LLaMA-Factory's default",
    }


def test_the_unmapped_list_keeps_the_input_order() -> None:
    _, unmapped = convert_llamafactory({"plot_loss": True, "ddp_timeout": 9, "deepspeed": "ds.json", "zzz": 1})
    assert [key for key, _ in unmapped] == ["plot_loss", "ddp_timeout", "deepspeed", "zzz"]


def test_deepspeed_zero_2_and_3_and_fsdp_become_train_fsdp(tmp_path: Path) -> None:
    written = tmp_path / "my_deepspeed.json"  # the stage is read from the file when it is there
    written.write_text(json.dumps({"zero_optimization": {"stage": 3}}), encoding="utf-8")
    cases = {
        str(written): (True, "ZeRO-3 becomes FSDP full shard"),
        "examples/deepspeed/ds_z2_offload_config.json": (True, "ZeRO-2 becomes FSDP full shard"),
        "examples/deepspeed/ds_z0_config.json": (None, "ZeRO-0 does not shard the model"),
        "cluster.json": (None, "its ZeRO stage is unknown; to shard the model set train.fsdp: true"),
    }
    for source, (fsdp, reason) in cases.items():
        config, unmapped = convert_llamafactory({"stage": "sft", "deepspeed": source})
        assert config["train"].get("fsdp") is fsdp, source
        assert unmapped[0][0] == "deepspeed" and unmapped[0][1].startswith(reason), unmapped
    assert "CPU offload is not done" in convert_llamafactory({"deepspeed": "ds_z3_offload_config.json"})[1][0][1]
    config, unmapped = convert_llamafactory({"stage": "sft", "fsdp": "full_shard auto_wrap"})
    assert config["train"]["fsdp"] is True and [key for key, _ in unmapped] == ["fsdp"]


def test_table_options_carry_their_reason_and_false_turns_them_off() -> None:
    for key, reason in NOT_NEEDED_OPTIONS.items():
        assert convert_llamafactory({key: True})[1] == [(key, "not needed: " + reason)]
    for key, reason in NO_COUNTERPART.items():
        assert convert_llamafactory({key: "x"})[1] == [(key, reason)]
        assert convert_llamafactory({key: False})[1] == [(key, "not needed: false turns it off")]


@pytest.mark.parametrize("stage", ["sft", "dpo", "kto", "rm", "ppo"])
@pytest.mark.parametrize("finetuning_type", ["lora", "freeze", "full"])
def test_no_option_is_dropped_silently(stage: str, finetuning_type: str) -> None:
    """Any value of any known option either changes the output or is listed with a reason."""
    base = {"stage": stage, "finetuning_type": finetuning_type, "dataset": "a,b"}
    baseline, _ = convert_llamafactory(base)
    for key in known_options():
        for value in ("x", 3, 0.5):
            if key in base:
                continue
            config, unmapped = convert_llamafactory({**base, key: value})
            assert key in dict(unmapped) or config != baseline, (key, value)


def test_rendered_output_keeps_each_unmapped_option_on_one_comment_line() -> None:
    options = {"model_name_or_path": "m", "default_system": "You are\nhelpful. " * 10, "tf32": False}
    config, unmapped = convert_llamafactory(options)
    text = render("lf.yaml", config, options, unmapped)
    assert text.splitlines()[:4] == [
        "# tuneforge config converted from lf.yaml (LLaMA-Factory) by `tuneforge convert-config`.",
        "# LLaMA-Factory options not carried over (2):",
        "#   default_system: 'You are helpful. You are helpful. You are helpful. You a... -- tuneforge adds no "
        "system prompt of its own: put it in the data (a system column or message)",
        "#   tf32: false -- not needed: false turns it off",
    ]
    assert yaml.safe_load(text) == config
    everything = render("lf.yaml", {"model": {"name_or_path": "m"}}, {"model_name_or_path": "m"}, [])
    assert everything.splitlines()[1] == "# Every LLaMA-Factory option was carried over."


def test_read_refuses_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    listing = tmp_path / "list.yaml"
    listing.write_text("- stage: sft\n", encoding="utf-8")
    with pytest.raises(
        UserError, match=rf"{listing} is not a YAML mapping of LLaMA-Factory options \(it holds a list\)"
    ):
        read_llamafactory_yaml(listing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("stage: sft\n  bad: [\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"{broken}:2: invalid YAML"):
        read_llamafactory_yaml(broken)
    with pytest.raises(UserError, match="missing.yaml not found"):
        read_llamafactory_yaml(tmp_path / "missing.yaml")
