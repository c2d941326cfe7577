"""Training controls: optimizer groups (weight decay, layer-wise rates, adapter groups), warm-up, precision,
gradient checkpointing, exact gradient accumulation through the whole loop, trackers and the progress bar."""

from __future__ import annotations

import io
import random
import re
import sys
import time

import pytest
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM

from tuneforge.config.load import load_config
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.models.adapters import ADAPTERS
from tuneforge.models.adapters.freeze import FreezeParams
from tuneforge.models.adapters.lora import LoraParams
from tuneforge.progress import progress_bar
from tuneforge.train.callbacks import MetricsLog
from tuneforge.train.loop import train_loop
from tuneforge.train.optim import (
    OPTIMIZERS,
    build_optimizer,
    layer_count,
    layer_lr_scale,
    parameter_groups,
    warmup_steps,
)
from tuneforge.train.precision import (
    Precision,
    compute_precision,
    enable_gradient_checkpointing,
    resolve_gradient_checkpointing,
    resolve_precision,
    upcast_trainable,
)
from tuneforge.train.reporters import check_reporters, open_reporters
from tuneforge.train.settings import LoopSettings
from tuneforge.train.step import optimizer_step

LR = 1e-3


def tiny(model_dir, dtype: torch.dtype = torch.float32):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")


def settings(**changes) -> LoopSettings:
    values = dict(
        learning_rate=LR,
        epochs=1,
        max_steps=1,
        batch_size=2,
        grad_accum=1,
        max_grad_norm=1.0,
        scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        seed=0,
        eval_steps=None,
        logging_steps=1,
        packing=False,
        pad_id=0,
        dtype="auto",
    )
    return LoopSettings(**{**values, **changes})


def random_samples(count: int, lengths: list[int], seed: int = 0) -> list[RenderedSample]:
    """Samples of random token ids; the first quarter of each is a prompt (not supervised)."""
    rng = random.Random(seed)
    samples = []
    for i in range(count):
        n = lengths[i % len(lengths)]
        ids = [rng.randrange(4, 700) for _ in range(n)]
        labels = [IGNORE_INDEX] * (n // 4) + ids[n // 4 :]
        samples.append(RenderedSample(ids, labels))
    return samples


def group_of(optimizer_groups: list[dict], param: torch.nn.Parameter) -> dict:
    return next(g for g in optimizer_groups if any(p is param for p in g["params"]))


# ---------------------------------------------------------------------------------------------------- groups


def test_weight_decay_only_on_weight_matrices(tiny_llama_dir):
    model = tiny(tiny_llama_dir)
    groups = parameter_groups(model, LR, 0.1)
    named = dict(model.named_parameters())
    assert any(p.ndim == 1 for p in named.values())  # norms exist, so the exclusion is exercised
    for name, param in named.items():
        expected = 0.1 if param.ndim >= 2 else 0.0
        assert group_of(groups, param)["weight_decay"] == expected, name
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_layer_lr_decay_rates_are_exact_for_a_full_model(tiny_llama_dir):
    model = tiny(tiny_llama_dir)
    decay = 0.5
    assert layer_count(model) == 2
    optimizer = build_optimizer("adamw", parameter_groups(model, LR, 0.0, decay), LR)
    for name, param in model.named_parameters():
        lr = group_of(optimizer.param_groups, param)["lr"]
        if ".layers.1." in name or name == "model.norm.weight":
            assert lr == LR, name  # top layer and the final norm: full rate
        elif ".layers.0." in name:
            assert lr == LR * decay, name
        else:
            assert name == "model.embed_tokens.weight"  # tied with the head, so it counts as the embeddings
            assert lr == LR * decay**2


def test_layer_lr_decay_for_lora_and_freeze(tiny_llama_dir):
    lora = ADAPTERS.get("lora").apply(tiny(tiny_llama_dir), LoraParams(r=2))
    groups = parameter_groups(lora, LR, 0.0, 0.8)
    trainable = [(n, p) for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, _ in trainable)
    for name, param in trainable:
        expected = LR if ".layers.1." in name else LR * 0.8
        assert group_of(groups, param)["lr"] == expected, name

    frozen = ADAPTERS.get("freeze").apply(tiny(tiny_llama_dir), FreezeParams(trainable_layers=1))
    groups = parameter_groups(frozen, LR, 0.0, 0.8)
    assert {g["lr"] for g in groups} == {LR}  # only the top layer trains: full rate


def test_layer_lr_scale_of_names():
    assert layer_lr_scale("model.layers.3.mlp.up_proj.weight", 4, 0.5) == 1.0
    assert layer_lr_scale("model.layers.0.mlp.up_proj.weight", 4, 0.5) == 0.125
    assert layer_lr_scale("transformer.h.1.attn.c_attn.weight", 4, 0.5) == 0.25
    assert layer_lr_scale("model.embed_tokens.weight", 4, 0.5) == 0.0625
    assert layer_lr_scale("lm_head.weight", 4, 0.5) == 1.0
    assert layer_lr_scale("model.layers.0.mlp.up_proj.weight", 4, 1.0) == 1.0


def test_adapter_groups_win_and_combine_with_layer_decay(tiny_llama_dir):
    model = ADAPTERS.get("lora").apply(tiny(tiny_llama_dir), LoraParams(r=2))
    seen = {}

    def lora_plus(model, params, learning_rate, weight_decay):
        seen.update(count=len(params), lr=learning_rate, wd=weight_decay)
        a = [p for n, p in model.named_parameters() if p.requires_grad and "lora_A" in n]
        b = [p for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n]
        return [{"params": a}, {"params": b, "lr": learning_rate * 16, "weight_decay": 0.0}]

    groups = parameter_groups(model, LR, 0.1, 0.5, hook=lora_plus)
    assert seen == {"count": sum(p.requires_grad for p in model.parameters()), "lr": LR, "wd": 0.1}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = group_of(groups, param)
        scale = 1.0 if ".layers.1." in name else 0.5
        if "lora_B" in name:
            assert group["lr"] == LR * 16 * scale and group["weight_decay"] == 0.0, name
        else:
            assert group["lr"] == LR * scale and group["weight_decay"] == 0.1, name

    assert parameter_groups(model, LR, 0.1, 0.5, hook=lambda *a: None) == parameter_groups(model, LR, 0.1, 0.5)
    with pytest.raises(ValueError, match="exactly once"):
        parameter_groups(model, LR, 0.0, hook=lambda m, params, lr, wd: [{"params": params[:1]}])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_and_steps(name, tiny_llama_dir):
    model = tiny(tiny_llama_dir)
    optimizer = build_optimizer(name, parameter_groups(model, LR, 0.01), LR)
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    before = model.model.norm.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.model.norm.weight)


def test_unknown_optimizer_lists_the_choices():
    with pytest.raises(UserError, match="train.optimizer") as err:
        load_config(None, ["train.optimizer=lion"])
    assert all(name in str(err.value) for name in ("adamw", "sgd", "rmsprop"))
    with pytest.raises(UserError, match="adamw, adam, sgd"):
        build_optimizer("lion", [{"params": [torch.nn.Parameter(torch.zeros(1))]}], LR)


# ---------------------------------------------------------------------------------------------------- warm-up


def test_warmup_steps_win_over_the_ratio():
    assert warmup_steps(100, 0.1, None) == 10
    assert warmup_steps(100, 0.1, 3) == 3
    assert warmup_steps(100, 0.0, 0) == 0
    assert warmup_steps(4, 0.5, 10) == 4


def _logged_lrs(model_dir, tmp_path, **changes) -> list[float]:
    log = MetricsLog(tmp_path / "m.jsonl")
    config = settings(max_steps=4, **changes)
    train_loop(tiny(model_dir), METHODS.get("sft").bind(), random_samples(8, [12]), [], config, log)
    return [r["lr"] for r in log.records]


def test_loop_warms_up_for_warmup_steps(tiny_llama_dir, tmp_path):
    by_steps = _logged_lrs(tiny_llama_dir, tmp_path, warmup_ratio=0.75, warmup_steps=1)
    assert by_steps == pytest.approx([LR / 2, LR, LR, LR])
    by_ratio = _logged_lrs(tiny_llama_dir, tmp_path, warmup_ratio=0.75)  # ceil(0.75 * 4) = 3 steps
    assert by_ratio == pytest.approx([LR / 4, LR / 2, LR * 3 / 4, LR])


# ---------------------------------------------------------------------------------------------------- precision


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == Precision("fp32", "cpu")
    assert resolve_precision("fp32", cpu).autocast_dtype is None
    bf16 = resolve_precision("bf16", cpu)
    with bf16.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)


@pytest.mark.parametrize(("supported", "auto", "bf16_ok"), [(True, "bf16", True), (False, "fp32", False)])
def test_precision_resolution_on_cuda(monkeypatch, supported, auto, bf16_ok):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda).name == auto
    assert resolve_precision("fp16", cuda).autocast_dtype == torch.float16
    if bf16_ok:
        assert resolve_precision("bf16", cuda).name == "bf16"
    else:
        with pytest.raises(UserError, match="no bfloat16 support"):
            resolve_precision("bf16", cuda)


def test_bf16_autocast_step_keeps_float32_weights(tiny_llama_dir, tmp_path):
    model = tiny(tiny_llama_dir, torch.bfloat16)
    log = MetricsLog(tmp_path / "m.jsonl")
    train_loop(model, METHODS.get("sft").bind(), random_samples(4, [10]), [], settings(dtype="bf16", max_steps=2), log)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert [r["step"] for r in log.records] == [1, 2] and all(r["loss"] > 0 for r in log.records)


def test_16_bit_frozen_weights_get_autocast_in_their_dtype(tiny_llama_dir):
    fp32 = Precision("fp32", "cpu")
    assert compute_precision(fp32, tiny(tiny_llama_dir)) == fp32
    assert compute_precision(fp32, tiny(tiny_llama_dir, torch.bfloat16)) == Precision("bf16", "cpu")
    assert compute_precision(fp32, tiny(tiny_llama_dir, torch.float16)) == Precision("fp16", "cpu")
    bf16 = Precision("bf16", "cpu")
    assert compute_precision(bf16, tiny(tiny_llama_dir, torch.float16)) == bf16  # an explicit choice stays


def test_upcast_trainable_makes_float32_master_weights(tiny_llama_dir):
    model = tiny(tiny_llama_dir, torch.bfloat16)
    model.model.layers[0].requires_grad_(False)
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert trainable > 0 and upcast_trainable(model) == trainable
    assert upcast_trainable(model) == 0  # already float32: nothing left to cast
    assert all((p.dtype == torch.float32) == p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------------------------------------------- checkpointing


def test_gradient_checkpointing_resolution(tiny_llama_dir):
    model = tiny(tiny_llama_dir)
    assert resolve_gradient_checkpointing("auto", model) is False  # CPU, tiny
    assert resolve_gradient_checkpointing(True, model) is True
    assert resolve_gradient_checkpointing(False, model) is False


def test_gradient_checkpointing_on_a_peft_model_gives_the_same_gradients(tiny_llama_dir):
    method = METHODS.get("sft").bind()
    batch = method.collate(random_samples(2, [14, 9]), False, 0)

    def lora_grads(checkpointing: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = ADAPTERS.get("lora").apply(tiny(tiny_llama_dir), LoraParams(r=2))
        torch.nn.init.normal_(model.base_model.model.model.layers[0].self_attn.q_proj.lora_B.default.weight)
        if checkpointing:
            enable_gradient_checkpointing(model)
            base = model.base_model.model
            assert any(getattr(m, "gradient_checkpointing", False) for m in base.modules())
        model.train()
        optimizer_step(model, method, [batch], settings(), step=1)
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain, checkpointed = lora_grads(False), lora_grads(True)
    assert any(float(g.abs().max()) > 0 for g in plain)
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------------- accumulation


def _after_one_step(model_dir, tmp_path, samples, **changes) -> dict[str, torch.Tensor]:
    model = tiny(model_dir)
    log = MetricsLog(tmp_path / "acc.jsonl")
    train_loop(model, METHODS.get("sft").bind(), samples, [], settings(max_steps=1, **changes), log)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# Adam's first update is about lr * sign(gradient), so float noise in gradients near its eps moves it by up to
# ~1e-3 * lr: a small lr keeps that under the 1e-6 bar. SGD's update is lr * gradient, the stricter check.
@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.05), ("adamw", 1e-4)])
@pytest.mark.parametrize("packing", [False, True])
def test_batch_8_equals_batch_2_times_accumulation_4(tiny_llama_dir, tmp_path, optimizer, lr, packing):
    if packing:
        # 16 samples of 16 tokens, packs of 32 tokens: 8 packs of 2 samples, every pack in step 1 either way
        samples, extra = random_samples(16, [16]), {"packing": True, "cutoff_len": 32}
    else:
        samples, extra = random_samples(8, [9, 14, 21, 11, 30, 7, 18, 25]), {}
    common = dict(optimizer=optimizer, learning_rate=lr, weight_decay=0.01, layer_lr_decay=0.9, **extra)
    one = _after_one_step(tiny_llama_dir, tmp_path, samples, batch_size=8, grad_accum=1, **common)
    four = _after_one_step(tiny_llama_dir, tmp_path, samples, batch_size=2, grad_accum=4, **common)
    start = {n: p.detach() for n, p in tiny(tiny_llama_dir).named_parameters()}
    assert _max_difference(one, start) > 50e-6  # the step moved the weights well beyond the tolerance
    assert _max_difference(one, four) <= 1e-6
    two = _after_one_step(tiny_llama_dir, tmp_path, samples, batch_size=2, grad_accum=1, **common)
    assert _max_difference(one, two) > 1e-5  # control: a step over fewer samples is told apart


# ---------------------------------------------------------------------------------------------------- monitoring


@pytest.mark.parametrize(("tracker", "package"), [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_missing_tracker_package_names_the_pip_package(monkeypatch, tracker, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if it were not installed
    with pytest.raises(UserError, match=f"pip install {package}"):
        check_reporters([tracker])


def test_missing_tensorboard_is_a_user_error_before_training(monkeypatch, tmp_path):
    from tuneforge.train.run import run_training

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    config = load_config(None, [f"output.dir={tmp_path / 'run'}", "train.report_to=[tensorboard]"])
    with pytest.raises(UserError, match="pip install tensorboard"):
        run_training(config)
    assert not (tmp_path / "run").exists()  # refused before the run directory or the model


def test_tensorboard_reporter_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    reporters = open_reporters(["tensorboard"], tmp_path, {})
    reporters[0].log({"step": 1, "loss": 1.5, "lr": 1e-4, "val_loss": None})
    reporters[0].close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_progress_bar_shows_eta_and_info():
    buffer = io.StringIO()
    out = Console(file=buffer, width=100, force_terminal=True, color_system=None)
    with progress_bar("training", total=20, completed=5, out=out) as advance:
        for _ in range(10):
            advance(1, info="loss 1.234 lr 1.0e-04 321 tok/s")
            time.sleep(0.02)
    text = buffer.getvalue()
    assert re.search(r"eta\s+\d+:\d\d:\d\d", text), text
    assert "15/20" in text and "loss 1.234 lr 1.0e-04 321 tok/s" in text


def test_a_nan_loss_stops_the_run_with_the_step_and_is_never_logged(tiny_llama_dir, tmp_path):
    import dataclasses

    from tuneforge.methods.base import LossSums

    sft = METHODS.get("sft")
    broken = dataclasses.replace(sft, loss=lambda *args: LossSums(sft.loss(*args).loss * float("nan"), {})).bind()
    log = MetricsLog(tmp_path / "m.jsonl")
    with pytest.raises(UserError, match=r"training loss became nan at optimizer step 1.*learning_rate"):
        train_loop(tiny(tiny_llama_dir), broken, random_samples(4, [10]), [], settings(max_steps=3), log)
    assert log.records == [] and (tmp_path / "m.jsonl").read_text() == ""


def test_prefix_tuning_and_gradient_checkpointing(tiny_llama_dir):
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.errors import UserError
    from tuneforge.train.precision import enable_gradient_checkpointing, resolve_gradient_checkpointing

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    )
    assert resolve_gradient_checkpointing("auto", model) is False
    with pytest.raises(UserError, match="gradient_checkpointing: false"):
        enable_gradient_checkpointing(model)


def test_a_single_process_trains_on_the_gpu_when_there_is_one(monkeypatch):
    from tuneforge.train.distributed import World
    from tuneforge.train.run import training_device

    assert training_device(World()) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device(World()).type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device(World()).type == "cpu"
