"""The distill method: its loss against a hand computation, its metrics, the vocabulary check, packed = padded."""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from tuneforge.config.load import config_from_dict
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.errors import UserError
from tuneforge.methods import METHODS, MethodModels
from tuneforge.methods.distill import DistillParams, declared_vocab_size, distill_loss
from tuneforge.methods.sft import collate_sft

# two supervised positions of a padded row of three (the last position predicts nothing), vocabulary of 3
STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [9.0, 9.0, 9.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.5, 0.5, -0.5], [0.0, 0.0, 0.0]]
TARGETS = [1, 2, IGNORE_INDEX]


class FixedLogits(torch.nn.Module):
    """A stand-in model: the same logits for every batch, shaped like one padded row."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([logits]))

    def forward(self, **inputs: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits)


def padded_batch() -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.tensor([[5, 6, 7]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
        "targets": torch.tensor([TARGETS]),
    }


def log_softmax(row: list[float], temperature: float) -> list[float]:
    scaled = [x / temperature for x in row]
    norm = math.log(sum(math.exp(x) for x in scaled))
    return [x - norm for x in scaled]


def by_hand(alpha: float, temperature: float) -> tuple[float, float, float]:
    """(loss, summed KL at T, summed CE) over the supervised positions, in plain Python."""
    kl = ce = 0.0
    for student, teacher, target in zip(STUDENT, TEACHER, TARGETS, strict=True):
        if target == IGNORE_INDEX:
            continue
        s, t = log_softmax(student, temperature), log_softmax(teacher, temperature)
        kl += sum(math.exp(t_i) * (t_i - s_i) for s_i, t_i in zip(s, t, strict=True))
        ce -= log_softmax(student, 1.0)[target]
    return alpha * temperature**2 * kl + (1 - alpha) * ce, kl, ce


def run_loss(student: Any, teacher: Any, batch: dict[str, torch.Tensor], **params: Any):
    return distill_loss(student, batch, DistillParams(teacher="t", **params), MethodModels(teacher=teacher))


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_the_loss_is_the_hand_computed_mix_of_kl_and_ce(alpha: float, temperature: float) -> None:
    sums = run_loss(FixedLogits(STUDENT), FixedLogits(TEACHER), padded_batch(), alpha=alpha, temperature=temperature)
    loss, kl, ce = by_hand(alpha, temperature)
    assert float(sums.loss.detach()) == pytest.approx(loss, rel=1e-5)
    assert sums.metrics["kl"] == pytest.approx(kl, rel=1e-5)
    assert sums.metrics["ce"] == pytest.approx(ce, rel=1e-5)


def test_the_soft_term_is_scaled_by_the_temperature_squared() -> None:
    for temperature in (0.5, 1.0, 4.0):
        sums = run_loss(FixedLogits(STUDENT), FixedLogits(TEACHER), padded_batch(), alpha=1.0, temperature=temperature)
        assert float(sums.loss.detach()) == pytest.approx(temperature**2 * sums.metrics["kl"], rel=1e-6)
    assert by_hand(1.0, 4.0)[1] < by_hand(1.0, 1.0)[1]  # softer distributions are closer: T² makes up for it


def test_only_the_student_gets_gradients() -> None:
    student, teacher = FixedLogits(STUDENT), FixedLogits(TEACHER)
    run_loss(student, teacher, padded_batch()).loss.backward()
    assert student.logits.grad is not None and teacher.logits.grad is None
    assert float(student.logits.grad[0, 2].abs().sum()) == 0.0  # the unsupervised position takes no loss


def test_kl_is_zero_when_the_student_is_the_teacher(tiny_llama_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    batch = collate_sft(samples(3, seed=0), True, 0)
    sums = run_loss(model, model, batch, alpha=1.0)
    assert sums.metrics["kl"] == pytest.approx(0.0, abs=1e-5)
    assert float(sums.loss.detach()) == pytest.approx(0.0, abs=1e-4)
    assert sums.metrics["ce"] > 1.0
    fixed = run_loss(FixedLogits(STUDENT), FixedLogits(STUDENT), padded_batch(), alpha=0.5)
    assert fixed.metrics["kl"] == pytest.approx(0.0, abs=1e-7)


def test_a_teacher_of_another_vocabulary_size_is_refused_on_the_first_batch() -> None:
    wider = [row + [0.0] for row in TEACHER]
    with pytest.raises(UserError, match=r"teacher's vocabulary has 4 tokens but the student's has 3.*same tokenizer"):
        run_loss(FixedLogits(STUDENT), FixedLogits(wider), padded_batch())


def fake_run_dir(root: Path, base_model: Path, adapter: str) -> Path:
    """What `check` reads of a run directory: its config.yaml and model folder (no weights needed)."""
    (root / "model").mkdir(parents=True)
    config = {"model": {"name_or_path": str(base_model)}, "adapter": {"name": adapter}}
    (root / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


def distill_config(student: Path, teacher: Path, **data: Any) -> Any:
    raw = {"model": {"name_or_path": str(student)}, "method": {"name": "distill", "teacher": str(teacher)}}
    return config_from_dict({**raw, "data": data})


def test_a_teacher_of_another_vocabulary_size_is_refused_before_loading(tiny_llama_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"vocab_size": 32000}', encoding="utf-8")
    method = METHODS.get("distill")
    with pytest.raises(UserError, match=r"vocabulary of 32000 tokens but the student .* has 768: .*same tokenizer"):
        method.check_config(distill_config(tiny_llama_dir, other))
    method.check_config(distill_config(tiny_llama_dir, tiny_llama_dir))  # the same vocabulary passes
    method.check_config(distill_config(tiny_llama_dir, tmp_path / "teacher.gguf"))  # unknown here: the loss checks


def test_the_vocabulary_of_an_adapter_run_is_its_base_models(tiny_llama_dir: Path, tmp_path: Path) -> None:
    run = fake_run_dir(tmp_path / "run", tiny_llama_dir, "lora")
    assert declared_vocab_size(str(run)) == declared_vocab_size(str(tiny_llama_dir)) == 768
    assert declared_vocab_size(str(tmp_path / "missing")) is None


def test_a_teacher_run_with_virtual_tokens_needs_padded_batches(tiny_llama_dir: Path, tmp_path: Path) -> None:
    run = fake_run_dir(tmp_path / "prompt-run", tiny_llama_dir, "prompt")
    method = METHODS.get("distill")
    with pytest.raises(UserError, match=r"adapter 'prompt', which cannot read packed rows: set data.packing: false"):
        method.check_config(distill_config(tiny_llama_dir, run))
    method.check_config(distill_config(tiny_llama_dir, run, packing=False))


def test_the_method_declares_its_teacher_data_and_metrics(tiny_llama_dir: Path) -> None:
    method = METHODS.get("distill")
    assert method.needs is not None and method.needs(distill_config(tiny_llama_dir, Path("t"))) == {"teacher": "t"}
    assert method.data_kinds == {"chat", "text"} and method.metrics == ("kl", "ce")
    with pytest.raises(UserError, match=r"method.teacher: Field required"):
        config_from_dict({"method": {"name": "distill"}})
    with pytest.raises(UserError, match=r"method.alpha"):
        config_from_dict({"method": {"name": "distill", "teacher": "t", "alpha": 1.5}})
    with pytest.raises(UserError, match=r"method.temperature"):
        config_from_dict({"method": {"name": "distill", "teacher": "t", "temperature": 0}})


def samples(count: int, seed: int) -> list[RenderedSample]:
    """Random token sequences whose first tokens (a prompt) are not supervised."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        ids = [rng.randrange(4, 700) for _ in range(rng.randrange(6, 14))]
        prompt = rng.randrange(1, 4)
        out.append(RenderedSample(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fixtures.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_teacher"), seed=1)  # same tokenizer, other weights


def test_packed_and_padded_batches_give_the_same_sums(tiny_llama_dir: Path, teacher_dir: Path) -> None:
    student = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    batch = samples(4, seed=3)
    packed = run_loss(student, teacher, collate_sft(batch, True, 0), alpha=0.4, temperature=1.5)
    padded = run_loss(student, teacher, collate_sft(batch, False, 0), alpha=0.4, temperature=1.5)
    assert float(packed.loss.detach()) == pytest.approx(float(padded.loss.detach()), rel=1e-4)
    for name in ("kl", "ce"):
        assert packed.metrics[name] == pytest.approx(padded.metrics[name], rel=1e-4)
    assert packed.metrics["kl"] > 1.0  # two different random models: a real comparison, not 0 = 0


def test_batch_prompts_are_the_tokens_before_each_samples_answer() -> None:
    from tuneforge.data.packing import collate_packed, collate_padded
    from tuneforge.data.render import IGNORE_INDEX, RenderedSample
    from tuneforge.methods.distill import batch_prompts

    first = RenderedSample([1, 2, 3, 4, 5], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 4, 5])
    second = RenderedSample([6, 7, 8], [IGNORE_INDEX, 7, 8])
    assert batch_prompts(collate_packed([first, second])) == [[1, 2, 3], [6]]
    assert batch_prompts(collate_padded([first, second], pad_id=0)) == [[1, 2, 3], [6]]
