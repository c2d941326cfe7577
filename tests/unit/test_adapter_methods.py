"""Adapter methods on a tiny model: settings, what trains, bottleneck adapters, LoRA+ groups, PiSSA conversion,
QLoRA's early refusal without CUDA, and prompt-learning models in the loss and in generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from tuneforge.config.load import config_from_dict
from tuneforge.data.packing import collate_packed, collate_padded
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods.loss import causal_lm_loss_sum
from tuneforge.models.adapters import ADAPTERS, prepended_tokens
from tuneforge.models.adapters.bottleneck import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Bottleneck,
    load_bottleneck,
    save_bottleneck,
)
from tuneforge.models.adapters.lora import pissa_as_lora
from tuneforge.models.generate import generate_new_tokens
from tuneforge.models.load import load_model


def adapted(model_dir: Path, **settings: Any) -> Any:
    """The tiny model with the adapter described by `settings` applied (seeded)."""
    spec = ADAPTERS.get(settings["name"])
    base = load_model(str(model_dir)).model
    torch.manual_seed(0)
    return spec.apply(base, spec.params.model_validate(settings))


def logits(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits


def trainable_names(model: Any) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


INPUT = torch.tensor([[1, 40, 41, 42, 43, 44, 2]])


# ---------------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("name", ["full", "freeze", "lora", "qlora", "ia3", "prefix", "prompt", "ptuning", "adapter"])
def test_every_adapter_setting_is_documented(name: str) -> None:
    params = ADAPTERS.get(name).params
    assert params.model_validate({"name": name}).name == name
    for field, info in params.model_fields.items():
        assert info.description, f"adapter {name}: {field} has no description"


@pytest.mark.parametrize(
    ("adapter", "key"),
    [
        ({"name": "prompt", "init": "text"}, "adapter.init_text"),
        ({"name": "ia3", "feedforward_modules": ["up_proj"]}, "adapter.feedforward_modules"),
        ({"name": "freeze", "trainable_modules": []}, "adapter.trainable_modules"),
        ({"name": "qlora", "init": "pissa"}, "adapter.init"),
        ({"name": "adapter", "placement": "everywhere"}, "adapter.placement"),
        ({"name": "ptuning", "encoder_reparameterization_type": "GRU"}, "adapter.encoder_reparameterization_type"),
    ],
)
def test_inconsistent_settings_name_the_key(adapter: dict[str, Any], key: str) -> None:
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        config_from_dict({"adapter": adapter})


# ---------------------------------------------------------------------------------------------------- freeze


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"trainable_layers": 1}, lambda n: n.startswith("model.layers.1.")),
        ({"trainable_modules": ["mlp"]}, lambda n: ".mlp." in n),
        ({"trainable_modules": ["layers.0.self_attn.q_proj"]}, lambda n: n.startswith("model.layers.0.self_attn.q_")),
        ({"trainable_layers": 1, "train_embeddings": True}, lambda n: "layers.1." in n or "embed_tokens" in n),
        ({"trainable_modules": ["mlp"], "train_head": True}, lambda n: ".mlp." in n or "embed_tokens" in n),
    ],
)
def test_freeze_trains_the_chosen_parts(tiny_llama_dir: Path, settings: dict[str, Any], expected: Any) -> None:
    model = adapted(tiny_llama_dir, name="freeze", **settings)
    names = {name for name, _ in model.named_parameters()}
    assert trainable_names(model) == {name for name in names if expected(name)}


def test_freeze_explains_what_does_not_fit(tiny_llama_dir: Path) -> None:
    with pytest.raises(UserError, match="matches no module"):
        adapted(tiny_llama_dir, name="freeze", trainable_modules=["transformer.h"])
    with pytest.raises(UserError, match="at most 2"):
        adapted(tiny_llama_dir, name="freeze", trainable_layers=3)


# ---------------------------------------------------------------------------------------------------- LoRA


def test_loraplus_gives_the_b_matrices_the_higher_learning_rate(tiny_llama_dir: Path) -> None:
    model = adapted(tiny_llama_dir, name="lora", loraplus_lr_ratio=16)
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = ADAPTERS.get("lora").parameter_groups(model, trainable, 1.0e-3, 0.0)
    names = {id(p): name for name, p in model.named_parameters()}
    by_lr = {group["lr"]: {names[id(p)] for p in group["params"]} for group in groups}
    assert set(by_lr) == {1.0e-3, 1.6e-2}
    assert by_lr[1.6e-2] and all(".lora_B." in name for name in by_lr[1.6e-2])
    assert by_lr[1.0e-3] and all(".lora_A." in name for name in by_lr[1.0e-3])
    assert by_lr[1.0e-3] | by_lr[1.6e-2] == trainable_names(model)
    optimizer = torch.optim.AdamW(groups, lr=1.0e-3)
    assert sorted(group["lr"] for group in optimizer.param_groups) == [1.0e-3, 1.6e-2]


def test_lora_without_loraplus_keeps_one_group(tiny_llama_dir: Path) -> None:
    model = adapted(tiny_llama_dir, name="lora")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert ADAPTERS.get("lora").parameter_groups(model, trainable, 1.0e-3, 0.0) is None


@pytest.mark.parametrize("init", ["default", "gaussian", "pissa"])
def test_lora_variants_train_only_their_own_weights(tiny_llama_dir: Path, init: str) -> None:
    model = adapted(tiny_llama_dir, name="lora", init=init, use_dora=True, use_rslora=True, target_modules=["q_proj"])
    assert trainable_names(model) and all("lora_" in name and ".q_proj." in name for name in trainable_names(model)), (
        trainable_names(model)
    )
    assert any("lora_magnitude_vector" in name for name in trainable_names(model))


def test_a_pissa_adapter_converts_to_the_same_weight_update() -> None:
    torch.manual_seed(0)
    a, b, a0, b0 = torch.randn(4, 16), torch.randn(8, 4), torch.randn(4, 16), torch.randn(8, 4)
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    saved = {f"{key}.lora_A.weight": a, f"{key}.lora_B.weight": b, "other": torch.ones(3)}
    start = {f"{key}.lora_A.weight": a0, f"{key}.lora_B.weight": b0}
    converted = pissa_as_lora(saved, start)
    delta = converted[f"{key}.lora_B.weight"] @ converted[f"{key}.lora_A.weight"]
    torch.testing.assert_close(delta, b @ a - b0 @ a0)
    assert torch.equal(converted["other"], saved["other"])


# ---------------------------------------------------------------------------------------------------- QLoRA


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_qlora_without_cuda_is_refused_before_any_model_is_loaded(tiny_llama_dir: Path) -> None:
    spec = ADAPTERS.get("qlora")
    params = config_from_dict({"adapter": {"name": "qlora", "r": 4}}).adapter
    with pytest.raises(UserError, match=r"needs a CUDA GPU with bitsandbytes.*adapter\.name: lora"):
        spec.load_kwargs(params)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        spec.apply(load_model(str(tiny_llama_dir)).model, params)


def test_quantised_loading_needs_a_model_folder(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(UserError, match="needs a Hugging Face model folder"):
        load_model(str(gguf), model_kwargs={"device_map": "cpu"})


# ---------------------------------------------------------------------------------------------------- bottleneck


@pytest.mark.parametrize("placement", ["attention", "mlp", "both"])
def test_a_fresh_bottleneck_adapter_leaves_the_model_unchanged(tiny_llama_dir: Path, placement: str) -> None:
    expected = logits(load_model(str(tiny_llama_dir)).model, INPUT)
    model = adapted(tiny_llama_dir, name="adapter", placement=placement, bottleneck_size=8)
    assert torch.equal(logits(model, INPUT), expected)
    slots = {"attention": ["attention_adapter"], "mlp": ["mlp_adapter"], "both": ["attention_adapter", "mlp_adapter"]}
    expected_names = {
        f"model.layers.{layer}.{slot}.{part}.{kind}"
        for layer in range(2)
        for slot in slots[placement]
        for part in ("down", "up")
        for kind in ("weight", "bias")
    }
    assert trainable_names(model) == expected_names


@pytest.mark.parametrize(("placement", "sub_module"), [("attention", "self_attn"), ("mlp", "mlp")])
def test_bottleneck_adapters_sit_after_their_sub_module(tiny_llama_dir: Path, placement: str, sub_module: str) -> None:
    model = adapted(tiny_llama_dir, name="adapter", placement=placement, bottleneck_size=8)
    layer = model.model.layers[0]
    adapter = getattr(layer, f"{placement}_adapter")
    seen: dict[str, torch.Tensor] = {}
    adapter.register_forward_pre_hook(lambda module, args: seen.__setitem__("adapter_input", args[0]))
    with torch.no_grad():
        adapter.up.weight.normal_()
    handle = getattr(layer, sub_module).register_forward_hook(
        lambda module, args, output: seen.__setitem__("sub_module_output", output)
    )
    changed = logits(model, INPUT)
    handle.remove()
    sub_output = seen["sub_module_output"]
    # the hook registered first (the adapter's) has already replaced the sub-module's output
    assert torch.equal(adapter(seen["adapter_input"]), sub_output[0] if isinstance(sub_output, tuple) else sub_output)
    assert not torch.allclose(changed, logits(load_model(str(tiny_llama_dir)).model, INPUT))


def test_bottleneck_adapters_save_alone_and_load_back(tiny_llama_dir: Path, tmp_path: Path) -> None:
    model = adapted(tiny_llama_dir, name="adapter", bottleneck_size=8, activation="silu")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Bottleneck):
                module.up.weight.normal_()
    save_bottleneck(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    reloaded = load_bottleneck(load_model(str(tiny_llama_dir)).model, tmp_path)
    assert torch.equal(logits(reloaded, INPUT), logits(model, INPUT))
    assert not trainable_names(reloaded)


# ---------------------------------------------------------------------------------------------------- prompt learning

PROMPT_LEARNING = [
    {"name": "prefix", "num_virtual_tokens": 4},
    {"name": "prefix", "num_virtual_tokens": 4, "prefix_projection": True, "encoder_hidden_size": 16},
    {"name": "prompt", "num_virtual_tokens": 4},
    {"name": "prompt", "num_virtual_tokens": 4, "init": "text", "init_text": "Answer briefly."},
    {"name": "ptuning", "num_virtual_tokens": 4, "encoder_hidden_size": 16},
    {"name": "ptuning", "num_virtual_tokens": 4, "encoder_hidden_size": 16, "encoder_reparameterization_type": "LSTM"},
]


def _perturbed(model_dir: Path, settings: dict[str, Any]) -> Any:
    """A prompt-learning model whose virtual tokens matter (its fresh start barely moves a random tiny model)."""
    model = adapted(model_dir, **settings)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _sample(ids: list[int]) -> RenderedSample:
    return RenderedSample(input_ids=ids, labels=[IGNORE_INDEX] * 2 + ids[2:])


@pytest.mark.parametrize("settings", PROMPT_LEARNING, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_prompt_learning_losses_line_up_with_the_targets(tiny_llama_dir: Path, settings: dict[str, Any]) -> None:
    model = _perturbed(tiny_llama_dir, settings)
    long, short = _sample([1, 40, 41, 42, 43, 44, 2]), _sample([1, 50, 51, 2])
    with torch.no_grad():
        padded = causal_lm_loss_sum(model, collate_padded([long, short], 0))
        alone = causal_lm_loss_sum(model, collate_packed([long])) + causal_lm_loss_sum(model, collate_packed([short]))
    torch.testing.assert_close(padded, alone)
    assert prepended_tokens(model) == (0 if settings["name"] == "prefix" else 4)


class _Scores(LogitsProcessor):
    """Keeps the scores of every generation step."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(scores.clone())
        return scores


@pytest.mark.parametrize("settings", PROMPT_LEARNING, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_prompt_learning_models_generate_what_their_forward_pass_predicts(
    tiny_llama_dir: Path, settings: dict[str, Any]
) -> None:
    model = _perturbed(tiny_llama_dir, settings)
    prompts = [[1, 40, 41, 42, 43, 44, 2, 1], [1, 50, 2, 1]]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # left-padded, as generate_replies does
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    scores = _Scores()
    with torch.no_grad():
        new = generate_new_tokens(
            model,
            input_ids,
            mask,
            max_new_tokens=5,
            do_sample=False,
            eos_token_id=[],
            pad_token_id=0,
            logits_processor=LogitsProcessorList([scores]),
        )
    for row, prompt in enumerate(prompts):
        sequence = torch.tensor([prompt + new[row].tolist()])
        expected = logits(model, sequence)[0, -sequence.shape[1] :]  # one full forward pass, no cache
        for step, step_scores in enumerate(scores.steps):
            torch.testing.assert_close(step_scores[row], expected[len(prompt) - 1 + step], rtol=1e-4, atol=1e-4)


def test_models_without_virtual_tokens_prepend_none(tiny_llama_dir: Path) -> None:
    assert prepended_tokens(load_model(str(tiny_llama_dir)).model) == 0
    assert prepended_tokens(adapted(tiny_llama_dir, name="lora")) == 0
