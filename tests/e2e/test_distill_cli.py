"""End-to-end: `tuneforge train` with method distill, teacher and student tiny models.

The teacher is a run directory: the tiny model fine-tuned (LoRA, SFT) on the memorisation set until it knows the
answers. The student is the untouched tiny model, trained with alpha = 1, so from the teacher's distributions
alone, never the data's labels: the KL to the teacher must fall, and with it the cross-entropy on the answers the
student never saw as labels. The run must finish, change exactly its trainable parameters, and load back.

The CLI runs in this process (`tuneforge.cli.main.main`), so that the test can record the parameters right after
the adapter is applied and keep the trained model the run saves.
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
import yaml
from cli_helpers import read_metrics, run_cli, write_config, write_memorisation_set

import tuneforge.train.run as run_module
from tuneforge.cli.main import main
from tuneforge.methods.distill import declared_vocab_size
from tuneforge.models.adapters import describe_trainable
from tuneforge.models.load import load_model
from tuneforge.models.rundir import save_model

STEPS = 20
TEMPERATURE = 2.0
TRAIN = {"learning_rate": 1.0e-2, "batch_size": 8, "scheduler": "constant", "save_steps": 0}


@dataclass
class Distilled:
    """A finished distill run and what the test recorded of it."""

    run_dir: Path
    teacher: Path
    initial: dict[str, torch.Tensor]  # every parameter right after the adapter was applied
    trainable: set[str]
    model: Any  # the trained model, as the run saved it
    console: str


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, which also keeps them from fighting other processes for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(config: Path) -> str:
    console = io.StringIO()
    with contextlib.redirect_stderr(console):
        code = main(["train", str(config)])
    assert code == 0, console.getvalue()[-2000:]
    return console.getvalue()


def _train_teacher(model_dir: Path, data: Path, work: Path) -> Path:
    """The tiny model fine-tuned on the memorisation set: a teacher that knows the answers."""
    config = write_config(work / "teacher.yaml", model_dir, data, work / "teacher", train={**TRAIN, "max_steps": 30})
    _train(config)
    return work / "teacher"


@pytest.fixture(scope="module")
def distilled(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Distilled:
    work = tmp_path_factory.mktemp("distill")
    data = write_memorisation_set(work / "memorise.jsonl")
    teacher = _train_teacher(tiny_llama_dir, data, work)
    method = {"name": "distill", "teacher": str(teacher), "alpha": 1.0, "temperature": TEMPERATURE}
    config = write_config(
        work / "distill.yaml", tiny_llama_dir, data, work / "run", method=method, train={**TRAIN, "max_steps": STEPS}
    )
    seen: dict[str, Any] = {}

    def record_applied(model: Any) -> str:
        seen["initial"] = {name: p.detach().clone() for name, p in model.named_parameters()}
        seen["trainable"] = {name for name, p in model.named_parameters() if p.requires_grad}
        return describe_trainable(model)

    def record_saved(model: Any, tokenizer: Any, folder: Path) -> None:
        seen["model"] = model
        save_model(model, tokenizer, folder)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "describe_trainable", record_applied)
        patch.setattr(run_module, "save_model", record_saved)
        console = _train(config)
    return Distilled(work / "run", teacher, console=console, **seen)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_the_kl_to_the_teacher_falls(distilled: Distilled) -> None:
    records = read_metrics(distilled.run_dir)
    kl, ce = [r["kl"] for r in records], [r["ce"] for r in records]
    assert len(records) == STEPS and all(math.isfinite(x) for x in kl + ce)
    assert _mean(kl[-3:]) < 0.7 * _mean(kl[:3]), f"kl {kl[0]:.3f} → {kl[-1]:.3f}"
    # alpha = 1: the labels never enter the loss, yet the student learns the answers from the teacher
    assert _mean(ce[-3:]) < 0.7 * _mean(ce[:3]), f"ce {ce[0]:.3f} → {ce[-1]:.3f}"
    for record in records:  # the loss is T² · KL per supervised token
        assert record["loss"] == pytest.approx(TEMPERATURE**2 * record["kl"], rel=1e-4)


def test_the_run_finishes_and_records_its_teacher(distilled: Distilled) -> None:
    assert "adapter lora: trainable " in distilled.console
    status = json.loads((distilled.run_dir / "run.json").read_text())
    assert status["status"] == "finished" and status["steps"] == STEPS
    saved = yaml.safe_load((distilled.run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert saved["method"]["name"] == "distill" and saved["method"]["teacher"] == str(distilled.teacher)


def test_exactly_the_trainable_parameters_changed(distilled: Distilled) -> None:
    final = dict(distilled.model.named_parameters())
    assert distilled.trainable and set(final) == set(distilled.initial)
    for name, before in distilled.initial.items():
        changed = not torch.equal(final[name].detach().cpu(), before)
        assert changed == (name in distilled.trainable), name


def test_the_run_directory_loads_back(distilled: Distilled) -> None:
    reloaded = load_model(str(distilled.run_dir))
    batch = {"input_ids": torch.tensor([[1, 20, 30, 40, 50, 2]])}
    distilled.model.eval()
    with torch.no_grad():
        expected = distilled.model(**batch, use_cache=False).logits
        got = reloaded.model(**batch, use_cache=False).logits
    torch.testing.assert_close(got, expected)
    assert declared_vocab_size(str(distilled.run_dir)) == expected.shape[-1]


def test_a_teacher_of_another_vocabulary_is_refused_before_training(tiny_llama_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-family"
    other.mkdir()
    (other / "config.json").write_text('{"vocab_size": 32000}', encoding="utf-8")
    data = write_memorisation_set(tmp_path / "memorise.jsonl")
    method = {"name": "distill", "teacher": str(other)}
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run", method=method)
    result = run_cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "32000" in result.stderr and "768" in result.stderr and "same tokenizer" in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_on_policy_distillation_lowers_the_kl_on_the_students_own_answers(
    distilled: Distilled, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    data = write_memorisation_set(tmp_path / "memorise.jsonl")
    method = {"name": "distill", "teacher": str(distilled.teacher), "alpha": 1.0, "on_policy": True,
              "max_new_tokens": 8, "temperature": 1.0}  # fmt: skip
    config = write_config(
        tmp_path / "gkd.yaml", tiny_llama_dir, data, tmp_path / "gkd", method=method,
        train={**TRAIN, "max_steps": 12},
    )  # fmt: skip
    _train(config)
    kl = [record["kl"] for record in read_metrics(tmp_path / "gkd")]
    assert len(kl) == 12 and all(value >= 0 for value in kl)
    assert _mean(kl[-3:]) < 0.7 * _mean(kl[:3]), kl
