"""vLLM (GPU) behind the engine interface: an optional engine, used when the `vllm` package is installed.

vLLM batches by itself; each scheduler batch becomes one `LLM.generate` call. Its offline API returns whole
answers, so a streamed answer arrives in one burst at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.serve.engines.base import ENGINES, Engine, EngineSpec, HFTokenizerEngine, Job, Tokens
from tuneforge.serve.plan import Plan, model_folder

__all__ = ["VllmEngine", "lora_rank_limit", "open_vllm"]


class VllmEngine(HFTokenizerEngine):
    """A model folder (or hub id) loaded by vLLM, with LoRA adapters served by name."""

    def __init__(self, model: str, adapters: dict[str, Path], trust_remote_code: bool = False) -> None:
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        ranks = [_lora_rank(folder) for folder in adapters.values()]
        self.llm = LLM(
            model=model,
            trust_remote_code=trust_remote_code,
            enable_lora=bool(adapters),
            max_loras=max(1, len(adapters)),
            max_lora_rank=lora_rank_limit(ranks),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        self.adapter_names = tuple(adapters)
        self._loras = {name: LoRARequest(name, i + 1, str(f)) for i, (name, f) in enumerate(adapters.items())}
        self._eos = {self.tokenizer.eos_token_id}

    def generate_tokens(self, jobs: list[Job]) -> list[list[Tokens]]:
        outputs = self.llm.generate(
            [{"prompt_token_ids": job.prompt} for job in jobs],
            [self._sampling(job) for job in jobs],
            lora_request=self._loras.get(jobs[0].adapter or ""),
            use_tqdm=False,
        )
        return [[self._tokens(choice) for choice in output.outputs] for output in outputs]

    def stream_tokens(self, job: Job, take: Callable[[int], bool]) -> bool:
        [[(tokens, hit_eos)]] = self.generate_tokens([job])
        for token in tokens:
            if job.cancelled.is_set() or not take(token):
                return False
        return hit_eos

    def _sampling(self, job: Job) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=job.n,
            temperature=job.temperature,
            top_p=job.top_p,
            max_tokens=job.max_tokens,
            seed=job.seed,
            stop=list(job.stops) or None,
            ignore_eos=job.ignore_eos,
        )

    def _tokens(self, choice: Any) -> Tokens:
        """Token ids of one vLLM answer without its end-of-sequence token; a stop string is no end-of-sequence."""
        tokens = list(choice.token_ids)
        hit_eos = choice.finish_reason == "stop" and not isinstance(choice.stop_reason, str)
        if hit_eos and tokens and tokens[-1] in self._eos:
            tokens = tokens[:-1]
        return tokens, hit_eos


def _lora_rank(folder: Path) -> int:
    return int(json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("r", 16))


def lora_rank_limit(ranks: list[int]) -> int:
    """vLLM's max_lora_rank for adapters of these ranks: vLLM accepts only some values (8, 16, 32, ... 512), so the
    largest rank is rounded up to a power of two of at least 8 (16 without adapters)."""
    largest = max(ranks, default=16)
    return max(8, 1 << (largest - 1).bit_length())


def open_vllm(plan: Plan) -> Engine:
    """The plan's base model folder in vLLM, its LoRA adapters served by name."""
    adapters = {a.name: a.folder for a in plan.adapters}
    return VllmEngine(model_folder(plan.base), adapters, plan.trust_remote_code)


ENGINES.register("vllm")(
    EngineSpec(
        help="vLLM (Linux with an NVIDIA GPU), LoRA adapters by name",
        open=open_vllm,
        package="vllm",
        install="pip install vllm (Linux with an NVIDIA GPU)",
    )
)
