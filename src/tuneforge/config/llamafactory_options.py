"""The tables and the small state of the LLaMA-Factory conversion (`tuneforge.config.llamafactory_yaml`).

Stages and method options with the tuneforge keys they become; options that change nothing in tuneforge ("not
needed") and options tuneforge has no counterpart for, each with a reason that says what tuneforge does instead or
where the setting lives; and `Conversion`, the options being converted with the config and reasons so far.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conversion",
    "METHOD_OPTIONS",
    "NOT_NEEDED",
    "NOT_NEEDED_OPTIONS",
    "NO_COUNTERPART",
    "PPO_DEFAULTS",
    "PPO_NEUTRAL",
    "PPO_OPTIONS",
    "STAGES",
    "as_names",
    "as_number",
]

NOT_NEEDED = "not needed: "

# LLaMA-Factory stage → tuneforge method
STAGES = {"sft": "sft", "pt": "pretrain", "rm": "reward", "dpo": "dpo", "kto": "kto", "ppo": "ppo"}

# option → {LLaMA-Factory stage: the tuneforge `method:` key it becomes}
METHOD_OPTIONS: dict[str, dict[str, str]] = {
    "pref_beta": {"dpo": "beta", "kto": "beta"},
    "pref_loss": {"dpo": "loss"},
    "pref_ftx": {"dpo": "sft_weight"},
    "dpo_label_smoothing": {"dpo": "label_smoothing"},
    "simpo_gamma": {"dpo": "gamma"},
    "kto_chosen_weight": {"kto": "desirable_weight"},
    "kto_rejected_weight": {"kto": "undesirable_weight"},
    "ppo_target": {"ppo": "target_kl"},
    "max_new_tokens": {"ppo": "max_new_tokens"},
    "temperature": {"ppo": "temperature"},
    "top_p": {"ppo": "top_p"},
}

# LLaMA-Factory's PPO: its generation defaults, and trl's adaptive KL control (start 0.2, target ppo_target = 6)
PPO_DEFAULTS = {"max_new_tokens": 1024, "temperature": 0.95, "top_p": 0.7, "kl_coef": 0.2, "target_kl": 6.0}


def _each(reason: str, *options: str) -> dict[str, str]:
    return dict.fromkeys(options, reason)


_ONE_UPDATE = "tuneforge's ppo makes one policy update per batch of sampled answers"
_SAMPLING = "tuneforge's ppo samples with method.temperature and method.top_p only"
# options only LLaMA-Factory's ppo stage (and its predictions) uses → why tuneforge's ppo goes without them
PPO_OPTIONS: dict[str, str] = {
    **_each(_ONE_UPDATE, "ppo_buffer_size", "ppo_epochs"),
    "ppo_score_norm": "tuneforge's ppo uses the scores as they are and whitens the advantages (method.whiten)",
    "ppo_whiten_rewards": "tuneforge's ppo whitens the advantages (method.whiten), not the rewards",
    "reward_model_adapters": "method.rewards takes a tuneforge reward run, which holds its own adapter",
    "reward_model_quantization_bit": "tuneforge loads the reward run unquantised",
    **_each(_SAMPLING, "top_k", "num_beams", "repetition_penalty", "length_penalty", "max_length"),
    "do_sample": "tuneforge's ppo always samples its answers (no greedy decoding)",
    "skip_special_tokens": NOT_NEEDED + "tuneforge's ppo scores the answers' tokens",
}
# sampling options at the value that changes nothing (top_k 0 turns top-k sampling off)
PPO_NEUTRAL = {"top_k": 0, "num_beams": 1, "repetition_penalty": 1.0, "length_penalty": 1.0}

_SPEED = "it changes only the speed (tuneforge tokenises once, cached by content hash, and batches from memory)"
_LOGGING = "it changes only the logs (tuneforge writes loss, lr and tokens_per_s to metrics.jsonl)"
# options that change nothing in tuneforge (the reason follows "not needed: ")
NOT_NEEDED_OPTIONS: dict[str, str] = {
    "plot_loss": "tuneforge always plots the loss (loss.png in the run directory)",
    **_each(
        "tuneforge caches tokenised data by content hash, so changed data or settings never reuse a stale cache",
        "overwrite_cache",
        "tokenized_path",
    ),
    **_each(_SPEED, "preprocessing_num_workers", "preprocessing_batch_size", "dataloader_num_workers"),
    **_each(_SPEED, "dataloader_pin_memory", "dataloader_persistent_workers", "low_cpu_mem_usage"),
    **_each(_LOGGING, "logging_dir", "logging_strategy", "logging_first_step", "disable_tqdm", "run_name"),
    **_each(_LOGGING, "print_param_status", "include_num_input_tokens_seen", "include_tokens_per_second"),
    "include_effective_tokens_per_second": "tuneforge reports tokens_per_s in metrics.jsonl",
    "per_device_eval_batch_size": "the batch size does not change the validation loss (tuneforge evaluates "
    "with train.batch_size)",
    "ignore_pad_token_for_loss": "tuneforge never trains on padding",
    "use_fast_tokenizer": "tuneforge loads the tokenizer transformers picks (the fast one where there is one)",
    "create_new_adapter": "tuneforge always starts a new adapter",
    "pissa_convert": "tuneforge always saves a PiSSA adapter converted to plain LoRA, which loads onto the "
    "unchanged base model",
    "use_cache": "the generation cache is not used in training",
    "do_eval": "tuneforge evaluates the validation data (data.val_size) during training",
}

_MODEL_LOADING = "tuneforge reads models from local folders (model.hub: true allows hub ids) and has no such option"
_TEXT_ONLY = "tuneforge trains text models only"
# options tuneforge has no counterpart for (false turns most of them off, and is then "not needed")
NO_COUNTERPART: dict[str, str] = {
    **_each(
        "tuneforge trains a new adapter on model_name_or_path: merge an existing adapter into its base first "
        "(tuneforge export) and start from that",
        "adapter_name_or_path",
        "adapter_folder",
    ),
    **_each(
        "tuneforge's reference model is the base model before training",
        "ref_model",
        "ref_model_adapters",
        "ref_model_quantization_bit",
    ),
    "ddp_timeout": "tuneforge leaves the process-group timeout to torchrun / accelerate",
    "fsdp_config": "tuneforge shards every decoder layer fully under train.fsdp: true (README: Scale out)",
    **_each("tuneforge reads local data files whole (no streaming)", "streaming", "buffer_size"),
    "tool_format": "tuneforge writes tool calls in the chat template's own format",
    "default_system": "tuneforge adds no system prompt of its own: put it in the data (a system column or message)",
    "enable_thinking": "tuneforge keeps <think> reasoning as the data has it (data.keep_thinking)",
    "eval_on_each_dataset": "tuneforge reports one validation loss (and a curve per dataset in loss.png)",
    **_each("tuneforge trains float32 weights under autocast (train.dtype)", "pure_bf16", "upcast_layernorm"),
    "tf32": "tuneforge leaves TF32 matmuls to PyTorch's defaults",
    **_each("tuneforge reports the validation loss; score answers with tuneforge eval", "compute_accuracy"),
    "do_predict": "predictions are not part of training: run tuneforge eval on the finished run",
    **_each("tuneforge never changes the vocabulary (no token is added)", "resize_vocab", "new_special_tokens"),
    **_each(_MODEL_LOADING, "cache_dir", "model_revision", "hf_hub_token", "ms_hub_token", "om_hub_token"),
    "offload_folder": _MODEL_LOADING,
    **_each("tuneforge has no such model patch", "rope_scaling", "shift_attn", "mixture_of_depths"),
    **_each("tuneforge has no such kernel option", "use_unsloth", "use_unsloth_gc", "enable_liger_kernel"),
    **_each("tuneforge has no such option", "upcast_lmhead_output", "moe_aux_loss_coef", "train_from_scratch"),
    "use_llama_pro": "tuneforge does not expand the model with new blocks",
    **_each("tuneforge has no such optimizer", "use_galore", "use_apollo", "use_badam", "use_adam_mini", "use_muon"),
    **_each(_TEXT_ONLY, "freeze_vision_tower", "freeze_multi_modal_projector", "media_dir", "train_mm_proj_only"),
    **_each(_TEXT_ONLY, "image_max_pixels", "image_min_pixels", "video_max_pixels", "video_fps", "video_maxlen"),
    "disable_shuffling": "tuneforge shuffles the training rows every epoch",
    **_each("export with tuneforge export after training", "export_dir", "export_size", "export_quantization_bit"),
    **_each("serve or chat with tuneforge serve / tuneforge chat", "infer_backend", "infer_dtype"),
    **_each("tuneforge reports to tensorboard, wandb or mlflow (train.report_to)", "use_swanlab", "swanlab_project"),
    "label_smoothing_factor": "tuneforge's SFT loss has no label smoothing",
    "group_by_length": "tuneforge packs samples instead (data.packing)",
}


class Conversion:
    """The options read so far, the config being built, and the reasons for what is not carried over."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.config: dict[str, dict[str, Any]] = {}
        self.reasons: dict[str, str] = {}

    def take(self, key: str, default: Any = None) -> Any:
        """The option's value, or `default` when the file does not set it."""
        return self.raw.get(key, default)

    def has(self, key: str) -> bool:
        """Whether the file sets the option."""
        return key in self.raw

    def put(self, section: str, key: str, value: Any) -> None:
        """Set `section.key` of the tuneforge config."""
        self.config.setdefault(section, {})[key] = value

    def skip(self, key: str, reason: str) -> None:
        """Record why the option is not carried over (when the file sets it)."""
        if key in self.raw:
            self.reasons[key] = reason


def as_number(value: Any) -> Any:
    """A number written as a string ("1e-4", which YAML leaves a string) as a number; anything else unchanged."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def as_names(value: Any) -> list[str]:
    """LLaMA-Factory's comma-separated names (or a YAML list) as a list."""
    if value is None:
        return []
    parts = value if isinstance(value, list) else str(value).split(",")
    return [str(part).strip() for part in parts if str(part).strip()]
