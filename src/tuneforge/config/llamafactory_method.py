"""LLaMA-Factory's stage and finetuning options as tuneforge's `method:` and `adapter:` sections."""

from __future__ import annotations

from tuneforge.config.llamafactory_options import (
    METHOD_OPTIONS,
    NOT_NEEDED,
    PPO_DEFAULTS,
    PPO_NEUTRAL,
    PPO_OPTIONS,
    STAGES,
    Conversion,
    as_names,
    as_number,
)

__all__ = ["METHOD_AND_ADAPTER_OPTIONS", "convert_adapter", "convert_method"]

_PAIR_LOSSES = ("sigmoid", "ipo", "hinge", "orpo", "simpo")
_LORA = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "additional_target", "use_rslora", "use_dora")
_LORA += ("pissa_init", "pissa_iter", "pissa_convert", "loraplus_lr_ratio", "loraplus_lr_embedding")
_FREEZE = ("freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules")
_QUANTIZATION = ("quantization_method", "quantization_type", "double_quantization", "quantization_device_map")
# every option read here, the tables included
METHOD_AND_ADAPTER_OPTIONS = ("stage", "finetuning_type", "reward_model", "reward_model_type", "quantization_bit")
METHOD_AND_ADAPTER_OPTIONS += (*_LORA, *_FREEZE, *_QUANTIZATION, *METHOD_OPTIONS, *PPO_OPTIONS)


def convert_method(c: Conversion) -> str:
    """Set `method:` from stage and its options; returns LLaMA-Factory's stage name."""
    stage = str(c.take("stage", "sft"))
    if stage not in STAGES:
        c.skip("stage", f"no such stage (LLaMA-Factory's: {', '.join(STAGES)}); tuneforge trains sft")
        stage = "sft"
    c.put("method", "name", STAGES[stage])
    if stage == "ppo":
        for key, value in PPO_DEFAULTS.items():
            c.put("method", key, value)
    unused = NOT_NEEDED + f"LLaMA-Factory's {stage} training does not use it"
    for key, targets in METHOD_OPTIONS.items():
        value = as_number(c.take(key))
        if stage in targets and key == "pref_loss" and value not in _PAIR_LOSSES:
            c.skip(key, f"tuneforge's preference losses are {', '.join(_PAIR_LOSSES)}; dpo uses sigmoid")
        elif stage in targets and c.has(key):
            c.put("method", targets[stage], value)
        elif stage == "kto" and key == "pref_ftx":
            c.skip(key, "tuneforge's kto has no SFT term" if value else NOT_NEEDED + "0 adds no SFT term")
        else:
            c.skip(key, unused)
    _reward_model(c, stage)
    for key, reason in PPO_OPTIONS.items():
        if stage != "ppo":
            c.skip(key, unused)
        elif key == "do_sample" and c.take(key) is not False:
            c.skip(key, NOT_NEEDED + "tuneforge's ppo always samples its answers")
        elif key in PPO_NEUTRAL and as_number(c.take(key)) == PPO_NEUTRAL[key]:
            c.skip(key, NOT_NEEDED + f"{PPO_NEUTRAL[key]} changes nothing in sampling")
        else:
            c.skip(key, reason)
    return stage


def _reward_model(c: Conversion, stage: str) -> None:
    path, kind = c.take("reward_model"), c.take("reward_model_type", "lora")
    if stage != "ppo":
        for key in ("reward_model", "reward_model_type"):
            c.skip(key, NOT_NEEDED + "only LLaMA-Factory's ppo stage uses it")
    elif kind == "api":
        reason = "tuneforge scores with a reward run (method.rewards: [{name: reward_model, path: RUN}]) or rules"
        c.skip("reward_model", reason)
        c.skip("reward_model_type", reason)
    elif path:  # the output_dir of the converted rm config, trained with tuneforge
        c.put("method", "rewards", [{"name": "reward_model", "path": str(path)}])
    else:
        c.skip("reward_model", NOT_NEEDED + "it names no reward model")
        c.skip("reward_model_type", NOT_NEEDED + "there is no reward_model")


def convert_adapter(c: Conversion) -> None:
    """Set `adapter:` from finetuning_type, its options and quantization_bit."""
    kind = str(c.take("finetuning_type", "lora"))
    if kind not in ("lora", "full", "freeze"):
        c.skip(
            "finetuning_type", "tuneforge converts lora, full and freeze (other adapters: adapter.name); lora is used"
        )
        kind = "lora"
    c.put("adapter", "name", kind)
    if kind == "lora":
        _lora(c)
    else:
        for key in _LORA:
            c.skip(key, NOT_NEEDED + "only finetuning_type: lora uses it")
    if kind == "freeze":
        _freeze(c)
    else:
        for key in _FREEZE:
            c.skip(key, NOT_NEEDED + "only finetuning_type: freeze uses it")
    _quantization(c, kind)


def _lora(c: Conversion) -> None:
    rank = as_number(c.take("lora_rank", 8))
    alpha = as_number(c.take("lora_alpha")) or (2 * rank if isinstance(rank, int) else 16)
    targets = as_names(c.take("lora_target", "all"))
    c.config["adapter"].update(r=rank, alpha=alpha, dropout=as_number(c.take("lora_dropout", 0.0)))
    c.put("adapter", "target_modules", "all-linear" if targets in ([], ["all"]) else targets)
    if as_names(c.take("additional_target")):
        c.put("adapter", "modules_to_save", as_names(c.take("additional_target")))
    for key in ("use_rslora", "use_dora"):
        if c.has(key):
            c.put("adapter", key, bool(c.take(key)))
    if c.take("pissa_init"):
        c.put("adapter", "init", "pissa")
        c.skip("pissa_iter", "tuneforge's PiSSA runs its fast SVD with 4 iterations")
    else:
        c.skip("pissa_iter", NOT_NEEDED + "only pissa_init uses it")
    ratio = as_number(c.take("loraplus_lr_ratio"))
    if ratio is not None:
        c.put("adapter", "loraplus_lr_ratio", ratio)
        c.skip("loraplus_lr_embedding", "tuneforge's LoRA+ has no separate rate for embedding layers")
    else:
        c.skip("loraplus_lr_embedding", NOT_NEEDED + "only loraplus_lr_ratio uses it")


def _freeze(c: Conversion) -> None:
    layers = as_number(c.take("freeze_trainable_layers", 2))
    if isinstance(layers, int) and layers >= 1:
        c.put("adapter", "trainable_layers", layers)
    else:
        c.skip(
            "freeze_trainable_layers",
            "tuneforge trains the last N layers (adapter.trainable_layers, N >= 1) or modules named in "
            "adapter.trainable_modules (e.g. [layers.0., layers.1.])",
        )
    if as_names(c.take("freeze_trainable_modules", "all")) != ["all"]:
        c.skip(
            "freeze_trainable_modules",
            "tuneforge trains whole last layers, or every module whose name contains a part listed in "
            "adapter.trainable_modules (e.g. [layers.31.mlp])",
        )
    extra = as_names(c.take("freeze_extra_modules"))
    flags = {"embed_tokens": "train_embeddings", "lm_head": "train_head"}
    for name in extra:
        if name in flags:
            c.put("adapter", flags[name], True)
    rest = [name for name in extra if name not in flags]
    if rest:
        c.skip("freeze_extra_modules", f"tuneforge can add embed_tokens and lm_head only, not {', '.join(rest)}")


def _quantization(c: Conversion, kind: str) -> None:
    bits = as_number(c.take("quantization_bit"))
    method = c.take("quantization_method", "bitsandbytes")
    if bits is None:
        for key in _QUANTIZATION:
            c.skip(key, NOT_NEEDED + "only quantization_bit uses it")
        return
    if kind != "lora":
        c.skip("quantization_bit", "tuneforge quantizes only under LoRA (QLoRA); the model trains unquantised")
    elif bits != 4:
        c.skip("quantization_bit", "tuneforge's QLoRA is 4-bit only; this config trains LoRA unquantised")
    elif method != "bitsandbytes":
        c.skip("quantization_method", "tuneforge quantizes with bitsandbytes only (adapter.name: qlora)")
        c.skip("quantization_bit", f"quantization_method {method} is not available; this trains LoRA unquantised")
    else:
        c.put("adapter", "name", "qlora")
        if c.config["adapter"].pop("init", None) == "pissa":
            c.skip("pissa_init", "PiSSA cannot start from 4-bit weights in tuneforge; the adapter starts as LoRA")
        if c.take("fp16") and not c.take("bf16"):
            c.put("adapter", "compute_dtype", "float16")
        if c.take("quantization_type", "nf4") != "nf4":
            c.skip("quantization_type", "tuneforge's QLoRA uses NF4")
        if c.take("double_quantization", True) is not True:
            c.skip("double_quantization", "tuneforge's QLoRA always quantizes the scales too")
        c.skip("quantization_device_map", NOT_NEEDED + "QLoRA loads onto the current CUDA device")
        return
    for key in _QUANTIZATION:
        if key not in c.reasons:
            c.skip(key, NOT_NEEDED + "quantization_bit is not carried over")
