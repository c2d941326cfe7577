"""A LLaMA-Factory training YAML as a tuneforge config: what maps onto which key, and why the rest does not.

`convert_llamafactory` is pure: LLaMA-Factory's flat options in, the nested tuneforge config and the options it
could not carry over (each with its reason) out. Where LLaMA-Factory's default differs from tuneforge's and changes
what is trained (no validation split, cutoff 2048, learning rate 5e-5 on a linear schedule without warm-up, batch 8,
LoRA alpha = 2 × rank, packing only for pretraining, PPO's sampling and adaptive KL), the output spells out
LLaMA-Factory's value, so that the run trains as it did there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config.llamafactory_method import METHOD_AND_ADAPTER_OPTIONS, convert_adapter, convert_method
from tuneforge.config.llamafactory_options import (
    NO_COUNTERPART,
    NOT_NEEDED,
    NOT_NEEDED_OPTIONS,
    Conversion,
    as_names,
    as_number,
)
from tuneforge.errors import UserError
from tuneforge.registry import closest

__all__ = [
    "BUNDLED_TEMPLATES",
    "NOT_NEEDED",
    "UNKNOWN",
    "convert_llamafactory",
    "known_options",
    "read_llamafactory_yaml",
]

UNKNOWN = "unknown LLaMA-Factory option"
# tuneforge's bundled chat templates (tuneforge.data.templates) that carry the same name in LLaMA-Factory
BUNDLED_TEMPLATES = ("chatml", "gemma", "llama3", "mistral")

_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant", "constant_with_warmup": "constant"}
_OPTIMIZERS = {"adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adamw_hf": "adamw", "adafactor": "adafactor"}
_OPTIMIZERS |= {name: name for name in ("sgd", "adagrad", "rmsprop")}
_TRACKERS = ("tensorboard", "wandb", "mlflow")
_TRAIN = {
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "learning_rate": "learning_rate",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "seed": "seed",
    "save_total_limit": "save_total_limit",
}
# every option read here or in llamafactory_method (the tables of llamafactory_options aside)
_HANDLED = (
    ("model_name_or_path", "trust_remote_code", "flash_attn", "do_train", "dataset", "dataset_dir", "eval_dataset")
    + ("template", "cutoff_len", "max_samples", "train_on_prompt", "mask_history", "val_size", "packing")
    + ("neat_packing", "mix_strategy", "interleave_probs", "output_dir", "overwrite_output_dir", "lr_scheduler_type")
    + ("optim", "warmup_steps", "logging_steps", "save_steps", "eval_steps", "save_strategy", "save_only_model")
    + ("eval_strategy", "evaluation_strategy", "bf16", "fp16", "gradient_checkpointing", "report_to")
    + ("disable_gradient_checkpointing", "resume_from_checkpoint", "deepspeed", "fsdp", *_TRAIN)
    + METHOD_AND_ADAPTER_OPTIONS
)


def _model(c: Conversion) -> None:
    if c.has("model_name_or_path"):
        c.put("model", "name_or_path", str(c.take("model_name_or_path")))
    if c.has("trust_remote_code"):
        c.put("model", "trust_remote_code", bool(c.take("trust_remote_code")))
    attention = c.take("flash_attn", "auto")
    if attention in ("auto", "sdpa", "disabled"):
        if c.has("flash_attn"):
            c.put("model", "attn_implementation", "eager" if attention == "disabled" else "sdpa")
    else:
        c.skip("flash_attn", "tuneforge's attention is eager or sdpa (PyTorch's fused kernels, the default)")


def _data(c: Conversion, stage: str) -> None:
    names = as_names(c.take("dataset"))
    folder = c.take("dataset_dir", "data")
    if names:
        c.put("data", "dataset", names)
    if names and folder != "ONLINE":
        c.put("data", "dataset_dir", str(folder))
    elif names:
        c.skip("dataset_dir", "tuneforge reads local files only: put them in a folder with a dataset_info.json")
    else:
        c.skip("dataset_dir", NOT_NEEDED + "no dataset names it")
    if c.has("eval_dataset"):
        c.skip("eval_dataset", "data.eval takes files, not dataset_info.json names: set it to those datasets' files")
    template = c.take("template")
    if template in BUNDLED_TEMPLATES:
        c.put("data", "template", template)
    else:
        choices = ", ".join(BUNDLED_TEMPLATES)
        c.skip("template", f"tuneforge uses the model's own chat template (without one: data.template: {choices})")
    for key, default in (("cutoff_len", 2048), ("max_samples", None), ("val_size", 0.0)):
        if c.has(key) or default is not None:
            c.put("data", key, as_number(c.take(key, default)))
    if c.has("max_samples"):
        c.put("data", "shuffle", False)  # LLaMA-Factory keeps the first max_samples rows of each dataset
    for key in ("train_on_prompt", "mask_history"):
        if c.has(key):
            c.put("data", key, bool(c.take(key)))
    # tuneforge's packing never lets samples attend to each other (LLaMA-Factory's neat_packing)
    packing = c.take("packing")
    c.put("data", "packing", bool(c.take("neat_packing") or (stage == "pt" if packing is None else packing)))
    _mix(c, len(names))


def _mix(c: Conversion, datasets: int) -> None:
    strategy = c.take("mix_strategy", "concat")
    ratios = [as_number(p) for p in as_names(c.take("interleave_probs"))]
    if strategy == "concat":
        c.skip("mix_strategy", NOT_NEEDED + "tuneforge concatenates datasets unless data.mix_ratios is set")
        c.skip("interleave_probs", NOT_NEEDED + "LLaMA-Factory uses it only with an interleave mix_strategy")
        return
    if strategy not in ("interleave_under", "interleave_over"):
        c.skip("mix_strategy", "LLaMA-Factory's strategies are concat, interleave_under and interleave_over")
        return
    if strategy == "interleave_over":
        c.skip("mix_strategy", "tuneforge samples to data.mix_ratios without repeating rows (interleave_under)")
    if ratios or datasets > 1:
        c.put("data", "mix_ratios", ratios or [1.0] * datasets)
    else:
        c.skip("mix_strategy", NOT_NEEDED + "one dataset: there is nothing to mix")


def _train(c: Conversion) -> None:
    defaults = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 5.0e-5}
    for key, target in _TRAIN.items():
        if c.has(key) or key in defaults:
            c.put("train", target, as_number(c.take(key, defaults.get(key))))
    for key, target in (
        ("logging_steps", "logging_steps"),
        ("save_steps", "save_steps"),
        ("eval_steps", "eval_steps"),
    ):
        steps = as_number(c.take(key))
        if isinstance(steps, float) and steps.is_integer() and steps >= 1:
            steps = int(steps)
        if isinstance(steps, int) and not isinstance(steps, bool):
            c.put("train", target, steps)
        else:
            c.skip(key, f"tuneforge takes train.{target} as a whole number of steps, not a share of the run")
    _schedule(c)
    _precision(c)
    _sharding(c)
    _saving(c)
    _reporting(c)


def _sharding(c: Conversion) -> None:
    """DeepSpeed ZeRO-2/3 and FSDP shard the training state: tuneforge does that with FSDP full shard."""
    launch = "launch with torchrun or accelerate (README: Scale out)"
    if c.take("deepspeed"):
        stage = _zero_stage(str(c.take("deepspeed")))
        if stage is not None and stage >= 2:
            c.put("train", "fsdp", True)
            offload = "; CPU offload is not done" if "offload" in str(c.take("deepspeed")) else ""
            c.skip("deepspeed", f"ZeRO-{stage} becomes FSDP full shard: train.fsdp: true, {launch}{offload}")
        elif stage is not None:
            c.skip("deepspeed", f"ZeRO-{stage} does not shard the model: tuneforge trains data-parallel, {launch}")
        else:
            c.skip("deepspeed", f"its ZeRO stage is unknown; to shard the model set train.fsdp: true and {launch}")
    if c.take("fsdp"):
        c.put("train", "fsdp", True)
        c.skip("fsdp", f"train.fsdp: true (each decoder layer sharded fully), {launch}")


def _zero_stage(source: str) -> int | None:
    """The ZeRO stage of a DeepSpeed config: its zero_optimization.stage when the file is readable here, else what
    its name says (LLaMA-Factory's examples/deepspeed/ds_z3_config.json: 3)."""
    try:
        return int(json.loads(Path(source).read_text(encoding="utf-8"))["zero_optimization"]["stage"])
    except (OSError, ValueError, KeyError, TypeError):
        found = re.search(r"(?:^|[^a-z])z(?:ero)?[_-]?([0-3])(?![0-9])", Path(source).name.lower())
        return int(found.group(1)) if found else None


def _schedule(c: Conversion) -> None:
    kind = c.take("lr_scheduler_type", "linear")
    c.config["train"].setdefault("warmup_ratio", 0.0)
    if kind in _SCHEDULERS:
        c.put("train", "scheduler", _SCHEDULERS[kind])
    else:
        c.skip("lr_scheduler_type", "tuneforge's schedules are cosine, linear and constant (cosine is used)")
    warmup = as_number(c.take("warmup_steps", 0))
    if kind == "constant":  # transformers' constant schedule ignores warm-up
        c.put("train", "warmup_ratio", 0.0)
        for key in ("warmup_ratio", "warmup_steps"):
            c.skip(key, NOT_NEEDED + "LLaMA-Factory's constant schedule has no warm-up (constant_with_warmup has)")
    elif isinstance(warmup, int) and warmup > 0:
        c.put("train", "warmup_steps", warmup)
    else:
        c.skip("warmup_steps", NOT_NEEDED + "0 means warmup_ratio decides")
    optimizer = c.take("optim", "adamw_torch")
    if optimizer in _OPTIMIZERS and c.has("optim"):
        c.put("train", "optimizer", _OPTIMIZERS[optimizer])
    elif optimizer not in _OPTIMIZERS:
        c.skip("optim", f"tuneforge's optimizers are {', '.join(sorted(set(_OPTIMIZERS.values())))}; adamw is used")


def _precision(c: Conversion) -> None:
    if c.take("bf16") or c.take("pure_bf16"):
        c.put("train", "dtype", "bf16")
    elif c.take("fp16"):
        c.put("train", "dtype", "fp16")
    chosen = c.config["train"].get("dtype")
    for key in ("bf16", "fp16"):
        if not c.take(key):
            why = f"train.dtype is {chosen}" if chosen else "train.dtype auto picks bf16 on a GPU with it, else fp32"
            c.skip(key, NOT_NEEDED + f"off; {why}")
    if c.take("disable_gradient_checkpointing"):
        c.put("train", "gradient_checkpointing", False)
    elif c.has("gradient_checkpointing"):
        c.put("train", "gradient_checkpointing", bool(c.take("gradient_checkpointing")))
    else:
        c.skip("disable_gradient_checkpointing", NOT_NEEDED + "train.gradient_checkpointing: auto decides")


def _saving(c: Conversion) -> None:
    if c.has("output_dir"):
        c.put("output", "dir", str(c.take("output_dir")))
    if c.has("overwrite_output_dir"):
        c.put("output", "overwrite", bool(c.take("overwrite_output_dir")))
    save = c.take("save_strategy", "steps")
    if save == "no":
        c.put("train", "save_steps", 0)
    elif save != "steps":
        c.skip("save_strategy", "tuneforge saves every train.save_steps steps (default: at every evaluation)")
    if c.take("save_only_model"):
        c.skip("save_only_model", "tuneforge checkpoints always hold the optimizer state, so a run resumes exactly")
    else:
        c.skip("save_only_model", NOT_NEEDED + "tuneforge checkpoints hold the optimizer state")
    if c.has("resume_from_checkpoint"):
        c.skip("resume_from_checkpoint", "tuneforge resumes its own checkpoints only (train.resume: auto)")
    evaluate = c.take("eval_strategy", c.take("evaluation_strategy", "steps"))
    for key in ("eval_strategy", "evaluation_strategy"):
        if evaluate == "no" and c.config["data"]["val_size"]:
            c.skip(key, "tuneforge evaluates whenever data.val_size > 0; set val_size: 0 to train without it")
        elif evaluate == "no":
            c.skip(key, NOT_NEEDED + "tuneforge evaluates only with validation data, and val_size is 0")
        elif evaluate not in ("steps", "no"):
            c.skip(key, "tuneforge evaluates every train.eval_steps steps (default: about 5 times per run)")
    if c.take("do_train") is False:
        c.skip("do_train", "tuneforge train always trains")
    else:
        c.skip("do_train", NOT_NEEDED + "tuneforge train always trains")


def _reporting(c: Conversion) -> None:
    names = [name.lower() for name in as_names(c.take("report_to", "none"))]
    trackers = [name for name in names if name in _TRACKERS]
    if trackers:
        c.put("train", "report_to", trackers)
    others = [name for name in names if name not in _TRACKERS and name != "none"]
    if others:
        c.skip("report_to", f"tuneforge reports to {', '.join(_TRACKERS)} only, not {', '.join(others)}")
    elif not trackers:
        c.skip("report_to", NOT_NEEDED + "tuneforge reports to no tracker unless train.report_to names one")


def _table_reason(key: str, value: Any) -> str:
    """Why an option the tables list is not carried over (false turns a feature off: nothing to carry)."""
    if key in NOT_NEEDED_OPTIONS:
        return NOT_NEEDED + NOT_NEEDED_OPTIONS[key]
    return NOT_NEEDED + "false turns it off" if value is False else NO_COUNTERPART[key]


def known_options() -> list[str]:
    """Every LLaMA-Factory option the conversion knows (mapped, not needed or without a counterpart), sorted."""
    return sorted({*_HANDLED, *NOT_NEEDED_OPTIONS, *NO_COUNTERPART})


def convert_llamafactory(raw: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """LLaMA-Factory's training options as a tuneforge config, and every option not carried over with its reason.

    Returns (config, unmapped): `config` is the nested dict of tuneforge sections; `unmapped` lists (option,
    reason) in the input's order, the reason starting with "not needed: " when the option changes nothing here.
    """
    c = Conversion({key: value for key, value in raw.items() if value is not None})
    stage = convert_method(c)
    convert_adapter(c)
    _model(c)
    _data(c, stage)
    _train(c)
    tables = {**NOT_NEEDED_OPTIONS, **NO_COUNTERPART}
    known = known_options()
    for key, value in raw.items():
        if value is None:
            c.reasons[key] = NOT_NEEDED + "null keeps LLaMA-Factory's default"
        elif key not in known:
            hint = closest(key, known)
            c.reasons[key] = UNKNOWN + (f" (did you mean {hint}?)" if hint else "")
        elif key in tables and key not in c.reasons:
            c.reasons[key] = _table_reason(key, value)
    sections = {name: c.config.get(name) for name in ("model", "data", "method", "adapter", "train", "output")}
    config = {name: values for name, values in sections.items() if values}
    return config, [(key, c.reasons[key]) for key in raw if key in c.reasons]


def read_llamafactory_yaml(path: Path) -> dict[str, Any]:
    """The options of a LLaMA-Factory YAML (or JSON) training file; anything else is a UserError naming it."""
    if not path.is_file():
        raise UserError(f"{path} not found: give the LLaMA-Factory training YAML to convert")
    try:
        options = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file: give a LLaMA-Factory training YAML") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(options, dict):
        raise UserError(
            f"{path} is not a YAML mapping of LLaMA-Factory options (it holds a {type(options).__name__}); "
            "it should read like `model_name_or_path: ...`, `stage: sft`, one option per line"
        )
    return {str(key): value for key, value in options.items()}
