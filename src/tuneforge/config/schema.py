"""The config schema. Field descriptions here are the single source of help text (CLI, docs, web UI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AdapterParams",
    "DataSection",
    "EvalSection",
    "EwcSection",
    "MethodParams",
    "ModelSection",
    "OutputSection",
    "ReplayShareSection",
    "ReplaySection",
    "RunConfig",
    "Section",
    "TrainSection",
]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    name_or_path: str = Field(
        "smollm2-135m-instruct", description="Zoo name (see `tuneforge models`), Hugging Face folder or .gguf file."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype: auto = bfloat16 on CUDA with bf16 support, float32 otherwise."
    )
    attn_implementation: Literal["eager", "sdpa"] = Field("sdpa", description="Attention kernel.")
    trust_remote_code: bool = Field(False, description="Run Python code shipped with the model (off: it is unsafe).")
    hub: bool | Literal["huggingface", "modelscope"] = Field(
        False,
        description="Allow downloading name_or_path (an owner/name id) from a model hub into the cache: huggingface "
        "(or true) or modelscope. Off: only local folders, .gguf files, zoo models and models fetched with "
        "`tuneforge models pull`; a missing local path is an error. HF_HUB_OFFLINE=0 or --online also allows the "
        "Hugging Face hub.",
    )

    @field_validator("hub")
    @classmethod
    def _hub_name(cls, value: bool | str) -> bool | str:
        return "huggingface" if value is True else value  # `hub: true` has always meant the Hugging Face hub


class ReplaySection(Section):
    prompts: str = Field(
        "general_prompts", description="Bundled name or JSON file (list of strings) of general prompts to replay."
    )
    max_new_tokens: int = Field(96, ge=8, le=1024, description="Length limit of each replayed base-model answer.")
    limit: int | None = Field(None, ge=1, description="Use at most this many prompts.")
    temperature: float = Field(
        1.0,
        ge=0.0,
        le=2.0,
        description="Sampling temperature of the replayed answers. 1 samples the base model's own distribution and "
        "keeps it; 0 (greedy) replays its single most likely answer, which sharpens the model and makes "
        "human-written text less likely (measured by eval.general_reference).",
    )
    answers: int = Field(
        1,
        ge=1,
        le=8,
        description="Sampled answers per prompt (needs temperature above 0): more of the base model's own "
        "distribution to hold training to.",
    )
    target: Literal["answer", "distribution"] = Field(
        "answer",
        description="What the replayed answers train toward. answer: their tokens, like any training text. "
        "distribution: at every answer token, the base model's whole next-token distribution (its 64 likeliest "
        "tokens and the rest as one share), recorded before training; holds the model closer to the base than "
        "single sampled tokens do. Needs a method that trains on it (sft).",
    )

    @model_validator(mode="after")
    def _answers_need_sampling(self) -> ReplaySection:
        if self.answers > 1 and self.temperature == 0:
            raise ValueError(
                f"data.replay.answers={self.answers} with temperature 0 would repeat one greedy answer; "
                "set data.replay.temperature above 0 (1 samples the model's own distribution) or answers to 1"
            )
        return self


class DataSection(Section):
    train: list[str] = Field(
        default_factory=list,
        description="Training data: files (JSON, JSONL, CSV, Parquet, TXT), folders or bundled names.",
    )
    dataset: list[str] = Field(
        default_factory=list,
        description="Datasets by name from a LLaMA-Factory dataset_info.json in data.dataset_dir (e.g. 'a,b').",
    )
    dataset_dir: str | None = Field(None, description="Folder holding dataset_info.json and its data files.")
    eval: list[str] = Field(
        default_factory=list, description="Separate validation data (files or names); replaces the val_size split."
    )
    format: Literal[
        "auto", "alpaca", "sharegpt", "openai", "llamafactory_v1", "prompt_completion", "text", "classification"
    ] = Field(
        "auto",
        description="Row format; auto detects it per row from its keys (with method classify: classification, "
        "rows of a text and its label).",
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Rename fields of data.train files, LLaMA-Factory style: prompt, query, response, history, "
        "messages, system, tools, chosen, rejected, kto_tag (e.g. {prompt: question, response: answer}); for "
        "classification rows: text, label (e.g. {text: review, label: sentiment}).",
    )
    tags: dict[str, str] | None = Field(
        None,
        description="ShareGPT role/content tags of data.train files: role_tag, content_tag, user_tag, "
        "assistant_tag, observation_tag, function_tag, system_tag.",
    )
    template: str | None = Field(
        None, description="Bundled chat template (chatml, llama3, mistral, gemma) for a tokenizer without one."
    )
    cutoff_len: int = Field(512, ge=16, description="Maximum tokens per sample.")
    overlength: Literal["truncate", "drop"] = Field(
        "truncate", description="What to do with samples over cutoff_len: cut them (counted) or drop them."
    )
    min_tokens: int = Field(0, ge=0, description="Drop samples shorter than this many tokens.")
    val_size: float = Field(
        0.1, ge=0, description="Validation split: a fraction (< 1) or a number of samples (>= 1); 0 disables it."
    )
    variables: dict[str, str] = Field(
        default_factory=dict, description="Values for {{name}}-style placeholders in the data (e.g. name, author)."
    )
    placeholders: Literal["error", "keep"] = Field(
        "error",
        description="A {{name}} in the data with no value in data.variables: error = drop the row (counted, "
        "located) so a literal placeholder is never trained; keep = train the text as it is (code, templates).",
    )
    max_samples: int | None = Field(None, ge=1, description="Use at most this many rows from each file.")
    shuffle: bool = Field(True, description="Pick max_samples rows and mixed rows at random (seeded), not the first.")
    dedup: Literal["none", "exact", "normalized"] = Field(
        "exact",
        description="Drop repeated rows: exact copies, or also rows equal after normalising case, spaces and "
        "punctuation; none only reports them.",
    )
    keep_thinking: bool = Field(True, description="Keep <think>…</think> reasoning in assistant answers.")
    train_on_prompt: bool = Field(False, description="Supervise every token, prompts included.")
    mask_history: bool = Field(False, description="Supervise only the last assistant turn of each conversation.")
    max_drop_ratio: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Stop with an error when more than this share of rows is unusable (duplicates not counted).",
    )
    mix_ratios: list[float] | None = Field(
        None, description="Sample the datasets to these ratios (e.g. [7, 3]) instead of concatenating them."
    )
    cache: bool = Field(True, description="Reuse tokenised data cached by content hash under $TUNEFORGE_HOME.")
    replay: ReplaySection | None = Field(
        None,
        description="Self-replay against forgetting: mix in the base model's own answers to general prompts "
        "(generated once, cached under $TUNEFORGE_HOME).",
    )
    packing: bool = Field(
        True, description="Pack samples into sequences of cutoff_len (no padding, no attention across samples)."
    )

    @field_validator("train", "dataset", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("mix_ratios")
    @classmethod
    def _positive(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or any(r < 0 for r in value) or sum(value) <= 0):
            raise ValueError("mix_ratios must be non-negative numbers with a positive sum, e.g. [7, 3]")
        return value


class MethodParams(Section):
    """Base of every training method's parameters; `name` picks the method (see tuneforge.methods).

    Each method registers its own subclass (see tuneforge.config.variants); the `method:` section is validated
    against the class of the method it names.
    """

    name: str = Field("sft", description="Training method (see `tuneforge train --help` for the list).")


class AdapterParams(Section):
    """Base of every adapter's parameters; `name` picks the adapter (see tuneforge.models.adapters).

    Each adapter registers its own subclass (see tuneforge.config.variants).
    """

    name: str = Field("lora", description="Adapter method (see `tuneforge train --help` for the list).")


class EwcSection(Section):
    prompts: str = Field(
        "general_prompts",
        description="General prompts (bundled name or JSON list of strings); the Fisher information of the base "
        "model's own answers to them (generated once, cached like self-replay) marks the weights to keep.",
    )
    samples: int = Field(64, ge=1, description="How many of the prompts to use.")
    max_new_tokens: int = Field(64, ge=8, le=1024, description="Length limit of the base model's answers.")
    weight: float = Field(1000.0, gt=0, description="λ: strength of the pull back towards the old weights.")


class ReplayShareSection(Section):
    data: list[str] = Field(
        description="General data (files, folders or bundled names) of which a share goes into every step."
    )
    share: float = Field(0.2, gt=0, lt=1, description="Share of every optimizer step's rows taken from that data.")

    @field_validator("data", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class TrainSection(Section):
    learning_rate: float = Field(1.0e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Optimizer steps to run; -1 means use epochs.")
    batch_size: int = Field(
        4, ge=1, description="Rows per micro-batch: packs of up to cutoff_len tokens with data.packing, else samples."
    )
    grad_accum: int = Field(2, ge=1, description="Micro-batches per optimizer step.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 disables clipping.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps with linear warm-up.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Steps of linear warm-up; when set it wins over warmup_ratio."
    )
    optimizer: Literal["adamw", "adam", "sgd", "rmsprop", "adagrad", "adafactor"] = Field(
        "adamw", description="Optimizer (torch.optim); sgd uses momentum 0.9."
    )
    weight_decay: float = Field(
        0.0, ge=0, description="Weight decay, applied to weight matrices only (never to biases or norms)."
    )
    layer_lr_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Layer-wise learning rate: the top decoder layer gets learning_rate, each layer below it "
        "decay times less per layer, the embeddings the least; the output head gets the full rate. 1 turns it off.",
    )
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Compute precision (autocast; trained weights stay float32): auto = bf16 on a CUDA GPU with "
        "bf16 support, else fp32; fp16 needs CUDA and uses loss scaling.",
    )
    gradient_checkpointing: Literal["auto"] | bool = Field(
        "auto",
        description="Recompute activations in the backward pass to save memory; auto = on for models over 1B "
        "parameters on CUDA.",
    )
    deterministic: bool = Field(
        False, description="Bit-reproducible runs: deterministic kernels, fixed seeds and cuBLAS workspace."
    )
    seed: int = Field(42, description="Seed for data shuffling, splitting and initialisation.")
    eval_steps: int | None = Field(
        None, ge=1, description="Validation loss every N optimizer steps (default: about 5 times per run)."
    )
    logging_steps: int = Field(1, ge=1, description="Write a metrics line every N optimizer steps.")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for PyTorch (default: all cores).")
    return_freed_memory: bool = Field(
        False,
        description="Give freed tensor memory (blocks of 1 MiB and more) back to the system at once instead of "
        "keeping it in the C heap: a CPU run's peak RSS about 30% lower, its steps about 20% slower (pages are "
        "zeroed again), same values (Linux/glibc). For a run that does not fit in memory otherwise.",
    )
    fsdp: bool = Field(
        False,
        description="Under a launcher with several processes: shard the trained model's weights, gradients and "
        "optimizer states across them (FSDP full shard) instead of a whole copy per process. An accelerate config "
        "with distributed_type: FSDP turns it on.",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations without a lower validation loss, and keep the best weights.",
    )
    save_steps: int | None = Field(
        None,
        ge=0,
        description="Checkpoint every N optimizer steps into checkpoints/step-N (default: at every evaluation); "
        "0 turns periodic checkpoints off.",
    )
    save_total_limit: int | None = Field(
        2, ge=1, description="Keep the newest N checkpoints (plus the best one); null keeps them all."
    )
    resume: Literal["auto"] | bool | str = Field(
        False,
        description="Continue from a checkpoint: auto (or true) = the newest one in output.dir, a path = that "
        "checkpoint folder; false starts afresh.",
    )
    replay: ReplayShareSection | None = Field(
        None,
        description="Continual learning: a share of every step comes from general data ({data: [file], share: "
        "0.2}), so no step trains on the new data alone.",
    )
    ewc: EwcSection | None = Field(
        None,
        description="Continual learning: elastic weight consolidation keeps the weights general data needs near "
        "their old values ({data: general_check, weight: 1000, samples: 64}).",
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Also report metrics to these trackers (their packages must be installed)."
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class EvalSection(Section):
    questions: str | None = Field(
        None,
        description="Before/after questions (bundled name or a JSON, JSONL, CSV or Parquet file); compared at the "
        "end of training.",
    )
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Answer length limit for the comparison.")
    judge: str | None = Field(
        None,
        description="Judge model deciding win/tie/loss per question: any model tuneforge loads, or an "
        "OpenAI-compatible endpoint URL (http://host:port/v1).",
    )
    judge_model: str | None = Field(None, description="Model id to request from a judge endpoint.")
    judge_remote: bool = Field(
        False,
        description="Allow a judge endpoint that is not on this machine (loopback). Its API key is never read "
        "from the config: it comes from TUNEFORGE_JUDGE_API_KEY, and only for an endpoint named on the command "
        "line (--judge) or in TUNEFORGE_JUDGE_URL.",
    )
    general: str | None = Field(
        None,
        description="General-ability set checked for forgetting, base vs tuned (e.g. the bundled general_check).",
    )
    general_limit: int | None = Field(None, ge=1, description="Use only the first N items of the general set.")
    general_max_new_tokens: int = Field(
        24, ge=1, le=4096, description="Answer length limit for the general set (its answers are short)."
    )
    forgetting_threshold: float = Field(
        5.0, ge=0, description="Flag forgetting when general accuracy drops by more than this many points."
    )
    general_reference: str | None = Field(
        None,
        description="Human-written general answers (bundled general_reference, or a dataset file): the loss per "
        "answer token, base vs tuned, measures forgetting whatever the length or format of the models' answers.",
    )
    loss_threshold: float = Field(
        0.05, ge=0, description="Flag forgetting when the loss per token on eval.general_reference rises by more."
    )


class OutputSection(Section):
    dir: str = Field("runs/run", description="Run directory (config, metrics, loss plot, model, model card).")
    overwrite: bool = Field(False, description="Replace a run directory that already holds a finished run.")


class RunConfig(Section):
    """A whole training run."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    method: MethodParams = Field(default_factory=MethodParams)
    adapter: AdapterParams = Field(default_factory=AdapterParams)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    output: OutputSection = Field(default_factory=OutputSection)
    plugins: list[str] = Field(
        default_factory=list,
        description="Your own Python code the run may use, e.g. GRPO reward functions: files (path/to/rewards.py) "
        "or importable module names. They are imported when the config is checked, which runs their code.",
    )
