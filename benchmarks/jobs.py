"""The benchmark jobs: what each one trains (or prepares), on which data, and the same job as each tool's config.

Both tools get the same data file (the job's rows written into the work folder), the same model folder, the same
hyper-parameters; each keeps its own defaults otherwise (tuneforge packs, LLaMA-Factory pads and recomputes
activations), which is what a user of either gets.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from measure import Sample, count_tokens

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data" / "llamafactory"
DEFAULT_MODEL = "smollm2-135m-instruct"
RANDOM_QWEN = "qwen2.5-0.5b-shaped-random"
LF_TEMPLATE = "smollm2"  # LLaMA-Factory's name for SmolLM2's ChatML template with its default system prompt
LF_DATASET = "bench"


@dataclass(frozen=True)
class Job:
    """One benchmark: a training run (`kind="train"`) or data preparation only (`kind="prep"`)."""

    name: str
    description: str
    kind: str = "train"
    method: str = "sft"  # sft | dpo
    adapter: str = "lora"  # lora | full
    data: str = "alpaca_en_demo.json"
    rows: int = 256
    cutoff_len: int = 512
    device: str = "cpu"  # cpu | cuda
    dtype: str = "fp32"  # fp32 | bf16
    model: str = DEFAULT_MODEL  # DEFAULT_MODEL | RANDOM_QWEN
    learning_rate: float = 1.0e-4
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 2
    lora_r: int = 8
    lora_alpha: int = 16
    warmup_ratio: float = 0.1
    seed: int = 42
    dedup: bool = False
    whole_only: bool = False  # take the first `rows` rows none of whose sequences is cut at cutoff_len

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_GPU = {"device": "cuda", "dtype": "bf16", "cutoff_len": 2048, "rows": 999}
JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job("sft-lora-cpu", "SFT, LoRA r8/α16 all linear, alpaca_en_demo first 256 rows, cutoff 512, fp32"),
        Job("sft-full-cpu", "SFT, full fine-tuning, alpaca_en_demo first 256 rows, cutoff 512, fp32", adapter="full"),
        Job(
            "dpo-lora-cpu",
            "DPO (sigmoid, β 0.1), LoRA r8/α16, dpo_en_demo first 64 pairs that fit in cutoff 512, fp32",
            method="dpo",
            data="dpo_en_demo.json",
            rows=64,
            whole_only=True,
        ),
        Job(
            "data-prep-50k",
            "data preparation of 50,000 Alpaca rows (render, mask, dedup, pack, cache), cutoff 512",
            kind="prep",
            rows=50_000,
            dedup=True,
        ),
        Job("sft-lora-gpu", "SFT, LoRA, default model, alpaca_en_demo, cutoff 2048, bf16", **_GPU),
        Job("sft-lora-gpu-0.5b", "SFT, LoRA, Qwen-shaped 0.5B (random), cutoff 2048, bf16", model=RANDOM_QWEN, **_GPU),
        Job(
            "sft-full-gpu-0.5b",
            "SFT, full fine-tuning, Qwen-shaped 0.5B (random), cutoff 2048, bf16",
            adapter="full",
            model=RANDOM_QWEN,
            **_GPU,
        ),
    )
}
GROUPS = {
    "cpu": [name for name, job in JOBS.items() if job.device == "cpu"],
    "gpu": [name for name, job in JOBS.items() if job.device == "cuda"],
    "all": list(JOBS),
}


def select_jobs(spec: str) -> list[Job]:
    """Jobs named by `spec`: a job name, a group (cpu, gpu, all) or a comma-separated list of either."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part in GROUPS:
            names.extend(GROUPS[part])
        elif part in JOBS:
            names.append(part)
        else:
            raise SystemExit(f"unknown job {part!r}: choose from {', '.join([*GROUPS, *JOBS])}")
    return [JOBS[name] for name in dict.fromkeys(names)]


def read_source(job: Job) -> list[dict[str, Any]]:
    """The rows of the job's source file in ../shared/data/llamafactory."""
    path = DATA_DIR / job.data
    if not path.is_file():
        raise SystemExit(f"{path} is missing: the benchmarks read LLaMA-Factory's demo data from ../shared/data")
    return json.loads(path.read_text(encoding="utf-8"))


def vary_rows(rows: list[dict[str, Any]], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` distinct Alpaca rows made from `rows`: each a demo row with a tenth of its words swapped for others
    from the demo text and a numbered instruction, so none is a duplicate (even after normalisation)."""
    rng = random.Random(seed)
    pool = sorted({word for row in rows for word in str(row.get("output", "")).split() if word.isalpha()})
    out = []
    for index in range(count):
        base = rows[index % len(rows)]
        words = str(base["output"]).split()
        for _ in range(max(1, len(words) // 10)):
            words[rng.randrange(len(words))] = rng.choice(pool)
        instruction = f"{base['instruction']} (case {index}: {rng.choice(pool)} {rng.choice(pool)})"
        out.append({"instruction": instruction, "input": base.get("input", ""), "output": " ".join(words)})
    return out


def job_rows(job: Job, tokenizer: Any, rows: int | None = None) -> list[dict[str, Any]]:
    """The job's rows: the first `rows` of its file (only whole ones for `whole_only`), or generated ones for
    data preparation.

    Whole pairs keep the DPO job fair: a prompt longer than cutoff_len leaves tuneforge nothing to train (it drops
    the pair) while LLaMA-Factory cuts prompt and answers to fit, so the tools would train on different tokens."""
    count = rows or job.rows
    source = read_source(job)
    if job.kind == "prep":
        return vary_rows(source, count, job.seed)
    if not job.whole_only:
        return source[:count]
    kept = []
    for row in source:
        if count_tokens(tokenizer, count_samples(job, [row]), job.cutoff_len).truncated == 0:
            kept.append(row)
        if len(kept) == count:
            break
    return kept


def write_job_data(job: Job, rows: list[dict[str, Any]], folder: Path) -> Path:
    """Write the job's rows as one JSON file (both tools read the same file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job.name}.json"
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def count_samples(job: Job, rows: list[dict[str, Any]]) -> list[Sample]:
    """The sequences a tool trains on for `rows`: one per Alpaca row, chosen and rejected for each DPO pair."""
    if job.method != "dpo":
        return [
            Sample(
                [{"role": "user", "content": "\n".join(p for p in (r["instruction"], r.get("input")) if p)}],
                r["output"],
            )
            for r in rows
        ]
    samples = []
    for row in rows:
        messages = [{"role": _ROLES[turn["from"]], "content": turn["value"]} for turn in row["conversations"]]
        samples += [Sample(messages, row["chosen"]["value"]), Sample(messages, row["rejected"]["value"])]
    return samples


def tuneforge_config(job: Job, data: Path, model: str, run_dir: Path) -> dict[str, Any]:
    """tuneforge's config for `job`: its own defaults (packing, no gradient checkpointing) for everything else.

    The data cache is off so that each run tokenises as LLaMA-Factory does (the prep job measures the cache)."""
    adapter: dict[str, Any] = {"name": "full"}
    if job.adapter == "lora":
        adapter = {"name": "lora", "r": job.lora_r, "alpha": job.lora_alpha, "dropout": 0.0}
        adapter["target_modules"] = "all-linear"
    return {
        "model": {"name_or_path": model, "dtype": "float32" if job.dtype == "fp32" else "auto"},
        "data": {
            "train": [str(data)],
            "cutoff_len": job.cutoff_len,
            "val_size": 0,
            "dedup": "exact" if job.dedup else "none",
            "shuffle": False,
            "cache": job.kind == "prep",
        },
        "method": {"name": job.method},
        "adapter": adapter,
        "train": {
            "learning_rate": job.learning_rate,
            "epochs": job.epochs,
            "batch_size": job.batch_size,
            "grad_accum": job.grad_accum,
            "scheduler": "cosine",
            "warmup_ratio": job.warmup_ratio,
            "seed": job.seed,
            "dtype": job.dtype,
            "logging_steps": 1,
        },
        "output": {"dir": str(run_dir), "overwrite": True},
    }


def llamafactory_dataset_info(job: Job, data: Path) -> dict[str, Any]:
    """The dataset_info.json entry naming `data` for LLaMA-Factory."""
    if job.method == "dpo":
        columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
        entry: dict[str, Any] = {"file_name": data.name, "ranking": True, "formatting": "sharegpt", "columns": columns}
    else:
        entry = {"file_name": data.name, "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    return {LF_DATASET: entry}


def llamafactory_config(job: Job, dataset_dir: Path, model_dir: Path, output_dir: Path) -> dict[str, Any]:
    """LLaMA-Factory's training YAML for `job` (its defaults otherwise, gradient checkpointing included)."""
    config: dict[str, Any] = {
        "model_name_or_path": str(model_dir),
        "trust_remote_code": False,
        "stage": job.method,
        "do_train": True,
        "finetuning_type": job.adapter,
        "dataset": LF_DATASET,
        "dataset_dir": str(dataset_dir),
        "template": LF_TEMPLATE,
        "cutoff_len": job.cutoff_len,
        "overwrite_cache": True,
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "plot_loss": False,
        "per_device_train_batch_size": job.batch_size,
        "gradient_accumulation_steps": job.grad_accum,
        "learning_rate": job.learning_rate,
        "num_train_epochs": job.epochs,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": job.warmup_ratio,
        "seed": job.seed,
        "bf16": job.dtype == "bf16",
        "fp16": False,
    }
    if job.adapter == "lora":
        config.update(lora_rank=job.lora_r, lora_alpha=job.lora_alpha, lora_dropout=0.0, lora_target="all")
    if job.method == "dpo":
        config.update(pref_beta=0.1, pref_loss="sigmoid")
    return config
