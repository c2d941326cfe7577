"""End-to-end: every adapter method trained through the CLI on a tiny model.

For each method one short run on the memorisation set (shared by the tests below) must show: the loss falls;
exactly the adapter's parameters changed; the run directory reloads (load_run) to the same logits as the trained
model in memory, on top of the untouched base weights; and `tuneforge chat` answers from the run directory.

The CLI runs in this process (`tuneforge.cli.main.main`), so that the test can keep the model the run trained:
it records every parameter right after the adapter is applied (`describe_trainable`) and the trained model when
the run saves it (`save_model`).

How far the loss falls depends on the method, because the tiny model is random and frozen: LoRA, freeze, the
bottleneck adapter and (to a lesser degree) prefix tuning and (IA)³ change the computation at every position and
memorise the answers; prompt and P-tuning only add virtual input tokens, whose effect on a random two-layer model
is a nearly position-independent shift, so they drop from the first loss and then level off near the loss of a
unigram-like guess. Their thresholds are set from those plateaus, with margin.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import read_metrics, write_config, write_memorisation_set
from safetensors.torch import load_file

import tuneforge.train.run as run_module
from tuneforge.cli.main import main
from tuneforge.models.adapters import describe_trainable
from tuneforge.models.generate import generate_replies
from tuneforge.models.load import load_model
from tuneforge.models.rundir import load_run, save_model


@dataclass(frozen=True)
class Recipe:
    adapter: dict[str, Any]
    steps: int
    learning_rate: float
    max_loss_ratio: float  # mean of the last 3 losses / mean of the first 3 must stay below this


RECIPES = {
    "lora": Recipe(
        {
            "name": "lora",
            "r": 8,
            "alpha": 16,
            "use_dora": True,
            "use_rslora": True,
            "loraplus_lr_ratio": 4,
            "modules_to_save": ["embed_tokens"],
        },
        30,
        1.0e-2,
        0.4,
    ),
    "freeze": Recipe({"name": "freeze", "trainable_modules": ["mlp"], "train_head": True}, 20, 3.0e-3, 0.3),
    "ia3": Recipe({"name": "ia3"}, 40, 1.0, 0.8),
    "prefix": Recipe({"name": "prefix", "num_virtual_tokens": 8}, 40, 0.3, 0.75),
    "prompt": Recipe({"name": "prompt", "num_virtual_tokens": 16}, 40, 0.1, 0.95),
    "ptuning": Recipe({"name": "ptuning", "num_virtual_tokens": 16, "encoder_hidden_size": 128}, 40, 1.0e-2, 0.95),
    "adapter": Recipe(
        {"name": "adapter", "bottleneck_size": 64, "placement": "mlp", "activation": "gelu"}, 50, 3.0e-2, 0.6
    ),
}


@dataclass
class Trained:
    """A finished run and what the test recorded of it."""

    method: str
    run_dir: Path
    initial: dict[str, torch.Tensor]  # every parameter right after the adapter was applied
    trainable: set[str]
    model: Any  # the trained model, as the run saved it
    tokenizer: Any
    console: str


def _train_through_cli(method: str, recipe: Recipe, model_dir: Path, work: Path) -> Trained:
    data = write_memorisation_set(work / "memorise.jsonl")
    config = write_config(
        work / "cfg.yaml",
        model_dir,
        data,
        work / "run",
        adapter=recipe.adapter,
        data={"packing": True},  # said explicitly: prompt-learning methods must note that they ignore it
        train={
            "max_steps": recipe.steps,
            "learning_rate": recipe.learning_rate,
            "batch_size": 8,
            "scheduler": "constant",
            "save_steps": 0,
        },
    )
    seen: dict[str, Any] = {}

    def record_applied(model: Any) -> str:
        seen["initial"] = {name: p.detach().clone() for name, p in model.named_parameters()}
        seen["trainable"] = {name for name, p in model.named_parameters() if p.requires_grad}
        return describe_trainable(model)

    def record_saved(model: Any, tokenizer: Any, folder: Path) -> None:
        seen["model"], seen["tokenizer"] = model, tokenizer
        save_model(model, tokenizer, folder)

    console = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(console):
        patch.setattr(run_module, "describe_trainable", record_applied)
        patch.setattr(run_module, "save_model", record_saved)
        code = main(["train", str(config)])
    assert code == 0, console.getvalue()[-2000:]
    return Trained(method, work / "run", console=console.getvalue(), **seen)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, which also keeps them from fighting other processes for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(RECIPES))
def trained(request: pytest.FixtureRequest, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    work = tmp_path_factory.mktemp(f"adapter-{request.param}")
    return _train_through_cli(request.param, RECIPES[request.param], tiny_llama_dir, work)


def _fixed_batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "right"
    texts = ["<|im_start|>user\nWhat colour is the sky?<|im_end|>\n<|im_start|>assistant\n", "Say hello."]
    encoded = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _real_token_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits at the input positions (virtual tokens in front, if any, dropped)."""
    model.eval()
    with torch.no_grad():
        logits = model(**batch, use_cache=False).logits
    return logits[:, -batch["input_ids"].shape[1] :]


def _base_weights(model: Any) -> dict[str, torch.Tensor]:
    """The base model's own weights inside an adapted model, under the base model's names."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    weights = {}
    for name, tensor in base.state_dict().items():
        if any(part in name for part in ("lora_", "ia3_", "modules_to_save", "_adapter.")):
            continue
        weights[name.replace(".base_layer", "").replace(".original_module", "")] = tensor
    return weights


def test_the_loss_falls_on_the_memorisation_set(trained: Trained) -> None:
    recipe = RECIPES[trained.method]
    losses = [record["loss"] for record in read_metrics(trained.run_dir)]
    assert len(losses) == recipe.steps and all(math.isfinite(x) for x in losses)
    ratio = (sum(losses[-3:]) / 3) / (sum(losses[:3]) / 3)
    assert ratio < recipe.max_loss_ratio, f"{trained.method}: loss {losses[0]:.2f} → {losses[-1]:.2f}"


def test_the_run_reports_its_trainable_share(trained: Trained) -> None:
    assert f"adapter {trained.method}: trainable " in trained.console
    status = json.loads((trained.run_dir / "run.json").read_text())
    assert status["status"] == "finished"
    packing_note = "trains on padded batches (data.packing is ignored)" in trained.console
    assert packing_note == (trained.method in {"prefix", "prompt", "ptuning"})


def test_exactly_the_adapter_parameters_changed(trained: Trained) -> None:
    final = dict(trained.model.named_parameters())
    assert trained.trainable and set(final) == set(trained.initial)
    for name, before in trained.initial.items():
        changed = not torch.equal(final[name].detach().cpu(), before)
        assert changed == (name in trained.trainable), name


def test_reloading_the_run_gives_the_same_logits_on_the_untouched_base(trained: Trained, tiny_llama_dir: Path) -> None:
    reloaded = load_run(trained.run_dir)
    batch = _fixed_batch(reloaded.tokenizer)
    expected = _real_token_logits(trained.model, batch)
    torch.testing.assert_close(_real_token_logits(reloaded.model, batch), expected)
    base = load_model(str(tiny_llama_dir))
    assert not torch.allclose(_real_token_logits(base.model, batch), expected, atol=1e-3)
    weights = _base_weights(reloaded.model)
    for name, tensor in load_file(str(tiny_llama_dir / "model.safetensors")).items():
        assert torch.equal(weights[name], tensor) != (name in trained.trainable), name


def test_chat_answers_from_the_run_directory(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["chat", str(trained.run_dir), "--prompt", "Say hello.", "--max-new-tokens", "10"])
    assert code == 0
    question = [[{"role": "user", "content": "Say hello."}]]
    expected = generate_replies(trained.model, trained.tokenizer, question, 10)[0].text
    assert capsys.readouterr().out.strip() == expected


def test_pissa_is_saved_as_plain_lora_on_the_original_weights(tiny_llama_dir: Path, tmp_path: Path) -> None:
    recipe = Recipe({"name": "lora", "r": 4, "alpha": 8, "init": "pissa"}, 8, 3.0e-3, 1.0)
    run = _train_through_cli("lora", recipe, tiny_llama_dir, tmp_path)
    saved = json.loads((run.run_dir / "model" / "adapter_config.json").read_text())
    assert saved["r"] == 8 and saved["lora_alpha"] == 16 and saved["init_lora_weights"] is True
    reloaded = load_run(run.run_dir)
    batch = _fixed_batch(reloaded.tokenizer)
    torch.testing.assert_close(
        _real_token_logits(reloaded.model, batch), _real_token_logits(run.model, batch), rtol=1e-4, atol=1e-4
    )
    weights = _base_weights(reloaded.model)
    for name, tensor in load_file(str(tiny_llama_dir / "model.safetensors")).items():
        assert torch.equal(weights[name], tensor), name


def test_qlora_without_cuda_stops_before_loading_the_model(tiny_llama_dir: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = write_memorisation_set(tmp_path / "m.jsonl")
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run", adapter={"name": "qlora"})
    console = io.StringIO()
    with contextlib.redirect_stderr(console):
        code = main(["train", str(config)])
    assert code == 2
    message = console.getvalue()
    assert "qlora needs a CUDA GPU with bitsandbytes" in message and "adapter.name: lora" in message
    assert "loading model" not in message and not (tmp_path / "run").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs CUDA")
def test_qlora_trains_saves_and_reloads_on_a_gpu(tiny_llama_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    recipe = Recipe({"name": "qlora", "r": 8, "alpha": 16}, 20, 1.0e-2, 0.5)
    run = _train_through_cli("qlora", recipe, tiny_llama_dir, tmp_path)
    assert getattr(run.model.get_base_model(), "is_loaded_in_4bit", False)
    losses = [record["loss"] for record in read_metrics(run.run_dir)]
    assert sum(losses[-3:]) / 3 < recipe.max_loss_ratio * sum(losses[:3]) / 3
    assert sorted(p.name for p in (run.run_dir / "model").glob("adapter_*")) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    reloaded = load_run(run.run_dir)  # the adapter goes onto the unquantised base
    assert not getattr(reloaded.model.get_base_model(), "is_loaded_in_4bit", False)
    reply = generate_replies(reloaded.model, reloaded.tokenizer, [[{"role": "user", "content": "Say hello."}]], 8)
    assert isinstance(reply[0].text, str)
