"""Prompt learning through peft: trained virtual tokens in front of every sequence, the whole model frozen.

- `prefix`: prefix tuning, a trained key/value prefix in every attention layer; with `prefix_projection` the
  prefix comes from an MLP over a small embedding (the P-Tuning v2 deep-prompt variant).
- `prompt`: prompt tuning, trained input embeddings, started at random vocabulary embeddings or at a text.
- `ptuning`: P-tuning, input embeddings produced by a small prompt encoder (MLP or LSTM).

Virtual tokens go in front of each sequence, so these methods train on padded batches, never packed rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from tuneforge.config.schema import AdapterParams
from tuneforge.errors import UserError
from tuneforge.models.adapters.base import AdapterSpec, register_adapter

__all__ = ["PrefixParams", "PromptParams", "PtuningParams", "apply_prefix", "apply_prompt", "apply_ptuning"]


def _virtual_tokens(default: int) -> Any:
    return Field(default, ge=1, le=512, description="Number of virtual tokens put in front of every sequence.")


class PrefixParams(AdapterParams):
    name: Literal["prefix"] = Field("prefix", description="Adapter method.")
    num_virtual_tokens: int = _virtual_tokens(20)
    prefix_projection: bool = Field(
        False, description="Produce the prefix with an MLP over a small embedding (P-Tuning v2 deep prompts)."
    )
    encoder_hidden_size: int = Field(512, ge=1, description="Hidden size of that MLP (with prefix_projection).")


class PromptParams(AdapterParams):
    name: Literal["prompt"] = Field("prompt", description="Adapter method.")
    num_virtual_tokens: int = _virtual_tokens(20)
    init: Literal["random", "text"] = Field(
        "random",
        description="Start from embeddings of random vocabulary tokens, or from the embeddings of init_text.",
    )
    init_text: str | None = Field(
        None,
        validate_default=True,
        description="With init=text: a task description such as 'Answer as the assistant Conch would.'",
    )

    @field_validator("init_text")
    @classmethod
    def _text_for_text_init(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("init") == "text" and not (value or "").strip():
            raise ValueError("init=text needs init_text, e.g. 'Answer briefly and politely.'")
        return value


class PtuningParams(AdapterParams):
    name: Literal["ptuning"] = Field("ptuning", description="Adapter method.")
    num_virtual_tokens: int = _virtual_tokens(20)
    encoder_hidden_size: int = Field(128, ge=1, description="Hidden size of the prompt encoder.")
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = Field(
        "MLP", description="Prompt encoder: a 3-layer MLP, or a bidirectional LSTM followed by an MLP."
    )


def apply_prefix(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Wrap `model` in a peft prefix-tuning model."""
    assert isinstance(params, PrefixParams)
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=params.num_virtual_tokens,
        prefix_projection=params.prefix_projection,
        encoder_hidden_size=params.encoder_hidden_size,
    )
    return get_peft_model(model, config)


def _tokenizer_folder(model: nn.Module) -> str:
    """The folder the base model (and so its tokenizer) was loaded from."""
    folder = str(getattr(model, "name_or_path", "") or "")
    if not folder or not (Path(folder) / "tokenizer_config.json").is_file():
        raise UserError(
            "adapter.init=text needs the model's tokenizer folder, which this model was not loaded from "
            f"({folder or 'unknown'}); load a Hugging Face folder or zoo name, or use adapter.init: random"
        )
    return folder


def apply_prompt(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Wrap `model` in a peft prompt-tuning model, started at vocabulary embeddings (random tokens or a text)."""
    assert isinstance(params, PromptParams)
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    text = params.init == "text"
    config = PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=params.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.SAMPLE_VOCAB,
        prompt_tuning_init_text=params.init_text if text else None,
        tokenizer_name_or_path=_tokenizer_folder(model) if text else None,
    )
    return get_peft_model(model, config)


def apply_ptuning(model: nn.Module, params: AdapterParams) -> nn.Module:
    """Wrap `model` in a peft P-tuning model (virtual token embeddings from a prompt encoder)."""
    assert isinstance(params, PtuningParams)
    from peft import PromptEncoderConfig, get_peft_model

    config = PromptEncoderConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=params.num_virtual_tokens,
        encoder_hidden_size=params.encoder_hidden_size,
        encoder_reparameterization_type=params.encoder_reparameterization_type,
    )
    return get_peft_model(model, config)


def _virtual_token_spec(params: type[AdapterParams], apply: Any, where: Any, peft_type: str) -> AdapterSpec:
    """Prompt-learning adapters: not mergeable, not batched by the server; prefix tuning lives in the cache."""
    return AdapterSpec(
        params=params,
        apply=apply,
        saves_full_model=False,
        mergeable=False,
        virtual_tokens=where,
        batched_serving=False,
        gradient_checkpointing=where != "cache",  # checkpointing turns the attention cache off
        peft_type=peft_type,
    )


register_adapter("prefix", _virtual_token_spec(PrefixParams, apply_prefix, "cache", "PREFIX_TUNING"))
register_adapter("prompt", _virtual_token_spec(PromptParams, apply_prompt, "inputs", "PROMPT_TUNING"))
register_adapter("ptuning", _virtual_token_spec(PtuningParams, apply_ptuning, "inputs", "P_TUNING"))
