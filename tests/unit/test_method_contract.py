"""The method contract as the loop uses it: per-method metrics, their normalisation, extra models, kinds."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from tuneforge.config.load import config_from_dict
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.methods import METHODS
from tuneforge.methods.base import Batch, LossSums, MethodModels
from tuneforge.models.hf import LoadedModel
from tuneforge.train.callbacks import MetricsLog
from tuneforge.train.loop import train_loop
from tuneforge.train.run import extra_models
from tuneforge.train.settings import LoopSettings


def settings(**changes) -> LoopSettings:
    values = dict(
        learning_rate=1e-3,
        epochs=1,
        max_steps=3,
        batch_size=2,
        grad_accum=2,
        max_grad_norm=1.0,
        scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        seed=0,
        eval_steps=1,
        logging_steps=1,
        packing=False,
        pad_id=0,
    )
    return LoopSettings(**{**values, **changes})


def samples(count: int, seed: int) -> list[RenderedSample]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        ids = [rng.randrange(4, 700) for _ in range(rng.randrange(6, 14))]
        out.append(RenderedSample(ids, [IGNORE_INDEX] * 2 + ids[2:]))
    return out


def test_a_methods_metrics_are_logged_as_means_per_unit(tiny_llama_dir, tmp_path):
    """Metric sums over micro-batches are divided by the step's units: a per-unit constant stays that constant."""
    sft = METHODS.get("sft")
    seen: list[int] = []

    def loss_with_metrics(model, batch: Batch, params, models) -> LossSums:
        sums = sft.loss(model, batch, params, models)
        units = sft.count(batch)
        seen.append(units)
        return LossSums(sums.loss, {"unit_share": float(units), "double_loss": 2 * float(sums.loss.detach())})

    method = dataclasses.replace(sft, loss=loss_with_metrics, metrics=("unit_share", "double_loss"))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    log = MetricsLog(tmp_path / "m.jsonl")
    train_loop(model, method.bind(), samples(8, 1), samples(3, 2), settings(), log)

    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert len(set(seen)) > 1  # micro-batches of different sizes: a plain mean of means would not give 1
    for record in records:
        assert record["unit_share"] == pytest.approx(1.0)
        assert record["double_loss"] == pytest.approx(2 * record["loss"], rel=1e-6)
        assert record["val_unit_share"] == pytest.approx(1.0)
        assert record["val_double_loss"] == pytest.approx(2 * record["val_loss"], rel=1e-6)


def test_extra_models_are_frozen_copies_of_the_base(tiny_llama_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    loaded = LoadedModel(base, None, str(tiny_llama_dir))
    config = config_from_dict({"model": {"name_or_path": str(tiny_llama_dir)}})
    sft = METHODS.get("sft")
    assert extra_models(sft, config, loaded) == MethodModels()

    needs_reference = dataclasses.replace(sft, needs=lambda config: {"reference": None})
    models = extra_models(needs_reference, config, loaded)
    reference = models.reference
    assert reference is not base and models.reward is None and models.teacher is None
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    with torch.no_grad():
        next(base.parameters()).add_(1.0)  # training the base must not move the reference
    assert not torch.equal(next(base.parameters()), next(reference.parameters()))

    loaded_from_path = dataclasses.replace(sft, needs=lambda config: {"teacher": str(tiny_llama_dir)})
    teacher = extra_models(loaded_from_path, config, loaded).teacher
    assert teacher is not None and not any(p.requires_grad for p in teacher.parameters())
    fresh = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    assert torch.equal(next(teacher.parameters()), next(fresh.parameters()))


def test_each_dataset_gets_its_own_validation_loss_and_curve(tiny_llama_dir, tmp_path):
    """Multi-task: validation samples of several datasets are scored apart; val_loss is their token-weighted mean."""
    from tuneforge.train.callbacks import loss_curves
    from tuneforge.train.step import evaluate

    val = [dataclasses.replace(s, dataset="maths") for s in samples(3, 2)]
    val += [dataclasses.replace(s, dataset="poems") for s in samples(4, 3)]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    sft = METHODS.get("sft").bind()
    log = MetricsLog(tmp_path / "m.jsonl")
    train_loop(model, sft, samples(8, 1), val, settings(max_steps=2, eval_steps=1, packing=True), log)

    record = log.records[-1]
    tokens = {name: sum(s.supervised_tokens for s in val if s.dataset == name) for name in ("maths", "poems")}
    weighted = sum(record[f"val_loss/{name}"] * n for name, n in tokens.items()) / sum(tokens.values())
    assert record["val_loss"] == pytest.approx(weighted, rel=1e-6)
    alone = evaluate(model, sft, [s for s in val if s.dataset == "poems"], settings(packing=True))
    assert record["val_loss/poems"] == pytest.approx(alone.loss, rel=1e-5) and alone.per_task == {}
    curves = loss_curves(log)
    assert list(curves) == ["train loss", "validation loss", "validation: maths", "validation: poems"]
    assert curves["validation: poems"] == ([1, 2], [r["val_loss/poems"] for r in log.records])


def test_ewc_keeps_the_weights_general_data_needs_nearer_their_old_values(tiny_llama_dir, tmp_path):
    from tuneforge.models.adapters import ADAPTERS
    from tuneforge.models.adapters.lora import LoraParams
    from tuneforge.train.ewc import ElasticWeights
    from tuneforge.train.loop import LoopContext

    general, new_task = samples(6, 7), samples(8, 1)

    def run(with_ewc: bool) -> tuple[ElasticWeights, dict[str, torch.Tensor], list[dict], torch.nn.Module]:
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
        model = ADAPTERS.get("lora").attach(base, LoraParams(r=4, alpha=8))
        ewc = ElasticWeights.from_model(model, general, weight=5000.0)
        context = LoopContext(regularizer=ewc.penalty if with_ewc else None)
        log = MetricsLog(tmp_path / f"ewc-{with_ewc}.jsonl")
        config = settings(max_steps=12, eval_steps=None, learning_rate=5e-3)
        train_loop(model, METHODS.get("sft").bind(), new_task, [], config, log, context)
        weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return ewc, weights, log.records, model

    ewc, plain, plain_log, _ = run(False)
    kept_ewc, kept, ewc_log, kept_model = run(True)
    assert sum(float(f.sum()) for f in ewc.fisher.values()) > 0

    def moved(weights: dict[str, torch.Tensor]) -> float:
        return sum(float((ewc.fisher[n] * (w - ewc.anchor[n]) ** 2).sum()) for n, w in weights.items())

    assert moved(kept) < 0.5 * moved(plain), (moved(kept), moved(plain))
    assert "penalty" not in plain_log[-1] and ewc_log[0]["penalty"] == pytest.approx(0.0, abs=1e-9)
    assert ewc_log[-1]["penalty"] > 0
    # the penalty is λ/2 Σ F (θ - θ*)² (the logged one is taken before each step's update)
    assert float(kept_ewc.penalty(kept_model).detach()) == pytest.approx(5000.0 / 2 * moved(kept), rel=1e-4)
