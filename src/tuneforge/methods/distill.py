"""Knowledge distillation: the student learns the teacher's whole next-token distribution, not only the label.

`method: {name: distill, teacher: PATH_OR_NAME, alpha: 0.5, temperature: 2.0}`.

Classic (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network") token-level knowledge
distillation, generalised to causal language models: at every supervised token of the training data both models
read the same prefix, and the student (the model being trained) minimises

    alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 - alpha) · CE(student, target)

The soft term carries the teacher's "dark knowledge", how likely it finds every other token; the temperature T
softens both distributions so that this shows, and T² keeps the size of its gradients independent of T. The hard
term is the usual SFT cross-entropy on the data's own answer. The teacher is any model tuneforge loads (a model
folder, a .gguf file, a zoo name or a run directory), kept frozen; it runs under `torch.no_grad()` on the same
micro-batch (packed or padded) and must share the student's tokenizer: logits over different vocabularies cannot
be compared, so a teacher of another vocabulary size is refused.

Per step it reports `kl`, the KL divergence per supervised token at the training temperature T (without the T²
factor: the quantity the soft term minimises), and `ce`, the hard-label cross-entropy per supervised token.

With `on_policy: true` (generalised knowledge distillation, Agarwal et al. 2024) the soft term is taken on
answers the student samples itself to each prompt of the data, scored token by token by the teacher, so that the
student learns where its own mistakes lead; the hard term stays on the data's answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from tuneforge.config.schema import MethodParams, RunConfig
from tuneforge.data.render import IGNORE_INDEX
from tuneforge.errors import UserError
from tuneforge.methods.base import Batch, LossSums, Method, MethodModels, register_method
from tuneforge.methods.loss import supervised_logits, supervised_token_count
from tuneforge.methods.rollout import answer_batch, can_pack, sample_answers
from tuneforge.methods.sft import collate_sft
from tuneforge.models.adapters import ADAPTERS
from tuneforge.models.rundir import RunLayout, is_run_dir, read_run_record
from tuneforge.models.zoo import ZOO
from tuneforge.paths import model_cache_dir

__all__ = ["DistillParams", "batch_prompts", "declared_vocab_size", "distill_loss", "distill_terms"]


class DistillParams(MethodParams):
    """`method:` keys of distill."""

    name: Literal["distill"] = Field("distill", description="Training method.")
    teacher: str = Field(
        description="The frozen teacher: a model folder, .gguf file, zoo name or run directory, with the same "
        "tokenizer (vocabulary) as the student."
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Weight of the soft distillation (KL) term; 1 - alpha weights the hard-label cross-entropy.",
    )
    temperature: float = Field(
        2.0, gt=0, description="Softmax temperature T of the soft term (its KL is scaled by T²); 1 = no softening."
    )
    on_policy: bool = Field(
        False,
        description="Generalised KD: the soft term is taken on answers the student samples itself to each prompt of "
        "the data (the teacher scores them) instead of on the data's answers; the hard term stays on the data.",
    )
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Length limit of the student's samples (on_policy).")


def distill_terms(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (KL(teacher ‖ student) at `temperature`, hard-label cross-entropy of the student).

    `student` and `teacher` are logits of shape (tokens, vocabulary); `targets` the token ids (tokens,).
    """
    if student.shape[-1] != teacher.shape[-1]:
        raise UserError(
            f"the teacher's vocabulary has {teacher.shape[-1]} tokens but the student's has {student.shape[-1]}: "
            "teacher and student need the same tokenizer; pick a teacher of the student's model family"
        )
    student_log_probs = torch.log_softmax(student / temperature, dim=-1)
    teacher_log_probs = torch.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
    ce = F.cross_entropy(student, targets, reduction="none")
    return kl, ce


def _teacher_logits(teacher: Any, batch: Batch) -> torch.Tensor:
    """The frozen teacher's logits at the supervised positions, computed where the teacher is (it may sit on
    another device than the student, e.g. next to a QLoRA student on the GPU)."""
    device = next(teacher.parameters()).device
    with torch.no_grad():
        return supervised_logits(teacher, {key: value.to(device) for key, value in batch.items()})[0]


def batch_prompts(batch: Batch) -> list[list[int]]:
    """The prompt of every sample of an SFT batch (packed or padded): its tokens before the first supervised one."""
    ids, targets = batch["input_ids"], batch["targets"]
    if "attention_mask" in batch:
        spans = [(row, 0, int(batch["attention_mask"][row].sum())) for row in range(ids.shape[0])]
    else:
        starts = (batch["position_ids"][0] == 0).nonzero().squeeze(-1).tolist()
        spans = [(0, s, e) for s, e in zip(starts, [*starts[1:], ids.shape[1]], strict=True)]
    prompts = []
    for row, start, end in spans:
        supervised = (targets[row, start:end] != IGNORE_INDEX).nonzero()
        first = int(supervised[0]) if len(supervised) else end - start - 1
        prompts.append(ids[row, start : start + first + 1].tolist())
    return prompts


def _on_policy_kl(model: Any, batch: Batch, params: DistillParams, models: MethodModels) -> torch.Tensor:
    """Per-token KL(teacher ‖ student) on answers the student samples to the batch's prompts."""
    tokenizer = models.tokenizer
    prompts = batch_prompts(batch)
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=batch["input_ids"].device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=ids.device)
    answers = sample_answers(model, tokenizer, ids, mask, 1, max_new_tokens=params.max_new_tokens)
    sampled = answer_batch(prompts, answers, can_pack(model), pad, ids.device)
    student_logits, targets, _ = supervised_logits(model, sampled)
    teacher_logits = _teacher_logits(models.teacher, sampled).to(student_logits.device)
    return distill_terms(student_logits, teacher_logits, targets, params.temperature)[0]


def distill_loss(model: Any, batch: Batch, params: MethodParams, models: MethodModels) -> LossSums:
    """alpha · T² · KL + (1 - alpha) · CE, summed over the supervised tokens; metrics: kl (at T) and ce, summed.

    On-policy, the KL is the mean over the student's sampled tokens, scaled to the batch's supervised tokens (the
    normaliser), so that the logged `kl` is the mean per sampled token.
    """
    assert isinstance(params, DistillParams)
    assert models.teacher is not None, "the run loads the teacher (see needs)"
    student_logits, targets, _ = supervised_logits(model, batch)
    if params.on_policy:
        ce = F.cross_entropy(student_logits, targets, reduction="none")
        sampled_kl = _on_policy_kl(model, batch, params, models)
        kl = sampled_kl.mean().expand(len(targets)) if len(sampled_kl) else torch.zeros_like(ce)
    else:
        teacher_logits = _teacher_logits(models.teacher, batch)
        kl, ce = distill_terms(student_logits, teacher_logits.to(student_logits.device), targets, params.temperature)
    kl_sum, ce_sum = kl.sum(), ce.sum()
    loss = params.alpha * params.temperature**2 * kl_sum + (1 - params.alpha) * ce_sum
    return LossSums(loss, {"kl": float(kl_sum.detach()), "ce": float(ce_sum.detach())})


def _config_folder(source: str) -> Path | None:
    """The folder holding the config.json of `source` (the base model's, for an adapter run), if known offline."""
    path = Path(source).expanduser()
    if source in ZOO:
        return model_cache_dir(ZOO[source].cache_name)  # there once the zoo model was first used
    if is_run_dir(path):
        model_folder = RunLayout(path).model
        if (model_folder / "config.json").is_file():
            return model_folder
        return _config_folder(read_run_record(path).base_model)
    return path if path.is_dir() else None


def declared_vocab_size(source: str) -> int | None:
    """The vocabulary size (logit width) `source`'s config.json declares, without loading weights; None where
    it cannot be read (a .gguf file, a hub id, a zoo model not yet converted)."""
    folder = _config_folder(source)
    config_file = folder / "config.json" if folder is not None else None
    if config_file is None or not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    size = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    return int(size) if isinstance(size, int) else None


def _check_vocabularies(student: str, teacher: str) -> None:
    student_size, teacher_size = declared_vocab_size(student), declared_vocab_size(teacher)
    if student_size is not None and teacher_size is not None and student_size != teacher_size:
        raise UserError(
            f"method.teacher {teacher!r} has a vocabulary of {teacher_size} tokens but the student "
            f"{student!r} has {student_size}: teacher and student need the same tokenizer; pick a teacher of the "
            "student's model family"
        )


def _check_teacher_packing(config: RunConfig, teacher: str) -> None:
    """A teacher run whose adapter puts virtual tokens in front cannot read packed rows."""
    if not config.data.packing or not is_run_dir(Path(teacher).expanduser()):
        return
    adapter = read_run_record(Path(teacher).expanduser()).adapter.name
    if not ADAPTERS.get(adapter).supports_packing:
        raise UserError(
            f"method.teacher {teacher!r} was trained with adapter {adapter!r}, which cannot read packed rows: "
            "set data.packing: false"
        )


def _check(config: RunConfig) -> None:
    """Refuse, before loading, a teacher whose config declares another vocabulary size, or one that cannot read
    packed rows; a vocabulary that cannot be read here is checked on the first batch."""
    params = config.method
    assert isinstance(params, DistillParams)
    _check_vocabularies(config.model.name_or_path, params.teacher)
    _check_teacher_packing(config, params.teacher)


def _needs(config: RunConfig) -> dict[str, str | None]:
    params = config.method
    assert isinstance(params, DistillParams)
    return {"teacher": params.teacher}


register_method(
    "distill",
    Method(
        params=DistillParams,
        data_kinds=frozenset({"chat", "text"}),
        collate=collate_sft,
        loss=distill_loss,
        count=supervised_token_count,
        metrics=("kl", "ce"),
        needs=_needs,
        check=_check,
    ),
)
