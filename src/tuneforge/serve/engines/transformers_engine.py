"""The default engine: transformers `generate` on left-padded batches, with peft LoRA adapters switched per batch."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tuneforge.errors import UserError
from tuneforge.models.adapters import spec_for_peft_type
from tuneforge.models.generate import stop_token_ids
from tuneforge.models.load import load_model
from tuneforge.serve.engines.base import ENGINES, Engine, EngineSpec, HFTokenizerEngine, Job, Tokens
from tuneforge.serve.plan import Adapter, Plan

__all__ = ["TransformersEngine", "attach_adapter", "open_transformers"]


class TransformersEngine(HFTokenizerEngine):
    """A transformers model, optionally a peft model holding several LoRA adapters.

    `adapters` maps each served adapter name to its peft adapter name inside `model`; requests for the base model
    run with the adapters disabled.
    """

    def __init__(
        self, model: Any, tokenizer: Any, context_length: int, adapters: dict[str, str] | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.adapters = dict(adapters or {})
        self.adapter_names = tuple(self.adapters)
        self.eos_ids = stop_token_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    def generate_tokens(self, jobs: list[Job]) -> list[list[Tokens]]:
        """One left-padded `generate` for every answer of every job; each row stops at its own limit or stop."""
        rows = [job for job in jobs for _ in range(job.n)]
        width = max(len(job.prompt) for job in rows)
        input_ids = torch.tensor([[self.pad_id] * (width - len(job.prompt)) + job.prompt for job in rows])
        attention_mask = torch.tensor([[0] * (width - len(job.prompt)) + [1] * len(job.prompt) for job in rows])
        limits = _RowLimits(width, rows, self.decode)
        output = self._generate(jobs[0], input_ids, attention_mask, max(limits.limits), limits)
        answers = iter([self._cut(row, limits.made(index)) for index, row in enumerate(output[:, width:].tolist())])
        return [[next(answers) for _ in range(job.n)] for job in jobs]

    def stream_tokens(self, job: Job, take: Callable[[int], bool]) -> bool:
        sink = _TokenSink(take, set(self.eos_ids))
        prompt = torch.tensor([job.prompt])
        until = _Until(lambda: sink.done or job.cancelled.is_set())
        self._generate(job, prompt, torch.ones_like(prompt), job.max_tokens, until, streamer=sink)
        return sink.hit_eos

    def _generate(
        self,
        job: Job,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        criteria: StoppingCriteria,
        streamer: Any = None,
    ) -> torch.Tensor:
        device = self.model.device
        sampling: dict[str, Any] = {"do_sample": False}
        if not job.greedy:
            sampling = {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p}
        if job.ignore_eos:
            sampling["min_new_tokens"] = max_new_tokens
        with self._adapter(job.adapter), _seeded(job.seed, device), torch.inference_mode():
            return self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                stopping_criteria=StoppingCriteriaList([criteria]),
                streamer=streamer,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
                **sampling,
            ).cpu()

    @contextmanager
    def _adapter(self, name: str | None) -> Iterator[None]:
        """Activate the adapter served as `name`, or disable every adapter for the base model (None)."""
        if name is not None:
            self.model.set_adapter(self.adapters[name])
            yield
        elif self.adapters:
            with self.model.disable_adapter():
                yield
        else:
            yield

    def _cut(self, row: list[int], limit: int) -> Tokens:
        """A generated row up to its own limit, ending before the first end-of-sequence token."""
        row = row[:limit]
        for index, token in enumerate(row):
            if token in self.eos_ids:
                return row[:index], True
        return row, False


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draw from a generator seeded with `seed` (None: the usual one) without disturbing the usual one."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class _RowLimits(StoppingCriteria):
    """Finish each row of a batch (one per answer of `rows`' jobs) at its own token limit, once its text holds one
    of its (non-empty) stop strings, or once its job is cancelled."""

    def __init__(self, width: int, rows: list[Job], decode: Callable[[list[int]], str]) -> None:
        self.width, self.rows, self.decode = width, rows, decode
        self.limits = [job.max_tokens for job in rows]
        self.stops = [tuple(stop for stop in job.stops if stop) for job in rows]
        self.ended: list[int | None] = [None] * len(rows)

    def made(self, index: int) -> int:
        """How many tokens row `index` made before it finished here (generate pads a finished row after it)."""
        ended = self.ended[index]
        return self.limits[index] if ended is None else ended

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        made = input_ids.shape[1] - self.width
        done = [made >= limit or job.cancelled.is_set() for limit, job in zip(self.limits, self.rows, strict=True)]
        for index, stops in enumerate(self.stops):
            if stops and not done[index]:
                text = self.decode(input_ids[index, self.width :].tolist())
                done[index] = any(stop in text for stop in stops)
        for index, finished in enumerate(done):
            if finished and self.ended[index] is None:
                self.ended[index] = min(made, self.limits[index])
        return torch.tensor(done, device=input_ids.device)


class _Until(StoppingCriteria):
    """Stop a one-row generation as soon as `stop()` says so."""

    def __init__(self, stop: Callable[[], bool]) -> None:
        self.stop = stop

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.stop(), device=input_ids.device)


class _TokenSink:
    """A transformers streamer for one row: skips the prompt, then hands each new token to `take`."""

    def __init__(self, take: Callable[[int], bool], eos_ids: set[int]) -> None:
        self.take, self.eos_ids = take, eos_ids
        self.prompt_seen = False
        self.hit_eos = False
        self.done = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            if self.done:
                return
            if token in self.eos_ids:
                self.hit_eos = self.done = True
            else:
                self.done = not self.take(token)

    def end(self) -> None:
        """Nothing is held back."""


def open_transformers(plan: Plan) -> Engine:
    """The base model loaded with transformers, every adapter of the plan attached under its own peft name."""
    loaded = load_model(plan.base, trust_remote_code=plan.trust_remote_code)
    context = _context_length(loaded.model.config)
    model, names = loaded.model, {a.name: f"adapter_{i}" for i, a in enumerate(plan.adapters)}
    for adapter in plan.adapters:
        model = attach_adapter(model, adapter, names[adapter.name], plan.base)
    model.eval()
    return TransformersEngine(model, loaded.tokenizer, context, names)


def attach_adapter(model: Any, adapter: Adapter, peft_name: str, base: str) -> Any:
    """Load one more peft adapter into `model` (wrapping it in a PeftModel the first time)."""
    from peft import PeftModel

    peft_type = json.loads((adapter.folder / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type")
    spec = spec_for_peft_type(peft_type)
    if spec is not None and not spec.batched_serving:
        raise UserError(
            f"adapter {adapter.name!r} ({str(peft_type).lower()}) adds virtual tokens that this server's batched "
            f"generation does not handle; talk to it with `tuneforge chat {adapter.folder.parent}`, or train a LoRA"
        )
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(adapter.folder), adapter_name=peft_name)
            return model
        return PeftModel.from_pretrained(model, str(adapter.folder), adapter_name=peft_name)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise UserError(f"cannot load adapter {adapter.name!r} from {adapter.folder} onto {base}: {err}") from None


def _context_length(config: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


ENGINES.register("transformers")(
    EngineSpec(
        help="transformers generate on batches, LoRA adapters switched per batch (default)", open=open_transformers
    )
)
