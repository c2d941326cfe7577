"""Engines: transformers on a tiny model with two random LoRA adapters (batching changes no answer), and the
token loop of the llama.cpp engine on a stand-in for llama-cpp-python, which is not installed here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tuneforge.data.messages import Conversation, Message
from tuneforge.serve.engines.base import Job
from tuneforge.serve.engines.transformers_engine import TransformersEngine
from tuneforge.serve.loading import open_engine
from tuneforge.serve.plan import plan_serving

QUESTIONS = ["What colour is the sky?", "Name a fruit.", "Count to three, then stop counting please.", "Hi"]


def _random_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A peft LoRA folder with random (non-zero) weights: it changes the answers without any training."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """The tiny model gains nothing from more threads, and threads competing for two busy cores stall."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TransformersEngine:
    work = tmp_path_factory.mktemp("adapters")
    specs = [f"{name}={_random_adapter(tiny_llama_dir, work / name, seed)}" for name, seed in (("a", 1), ("b", 2))]
    made = open_engine("transformers", plan_serving(str(tiny_llama_dir), "tiny", specs))
    assert type(made) is TransformersEngine and made.adapter_names == ("a", "b")
    return made


def _jobs(engine: TransformersEngine, adapter: str | None, **options: object) -> list[Job]:
    return [
        Job(engine.encode_chat(Conversation([Message("user", q)])), 4 + 3 * i, adapter, **options)  # type: ignore[arg-type]
        for i, q in enumerate(QUESTIONS)
    ]


def test_left_padded_batches_give_each_prompt_its_answer_alone(engine: TransformersEngine) -> None:
    jobs = _jobs(engine, "a")
    alone = [engine.generate([job])[0] for job in jobs]
    together = engine.generate(jobs)
    assert together == alone
    assert len({c.text for [c] in together}) > 1
    for job, [answer] in zip(jobs, together, strict=True):
        assert answer.tokens == job.max_tokens if answer.finish == "length" else answer.tokens <= job.max_tokens


def test_a_stream_equals_the_batched_answer_and_stops_cut_each_row(engine: TransformersEngine) -> None:
    full = engine.generate(_jobs(engine, "a"))
    stop = next(char for [c] in full for char in c.text[1:] if char.isalpha())
    cut = engine.generate(_jobs(engine, "a", stops=(stop,)))
    assert any(short.text != whole.text for [whole], [short] in zip(full, cut, strict=True))
    for [whole], [short] in zip(full, cut, strict=True):
        assert short.text == whole.text.split(stop)[0]
    for job, [short] in zip(_jobs(engine, "a", stops=(stop,)), cut, strict=True):
        pieces: list[str] = []
        job.emit = pieces.append
        assert engine.stream(job) == short and "".join(pieces) == short.text


def test_adapters_are_picked_by_name_and_the_base_runs_without_them(
    engine: TransformersEngine, tiny_llama_dir: Path
) -> None:
    answers = {name: engine.generate(_jobs(engine, name)) for name in (None, "a", "b")}
    assert answers[None] != answers["a"] != answers["b"] != answers[None]
    plain = open_engine("transformers", plan_serving(str(tiny_llama_dir)))
    assert plain.generate(_jobs(plain, None)) == answers[None]


def test_an_empty_stop_string_is_ignored_streamed_or_not(engine: TransformersEngine) -> None:
    plain = engine.generate(_jobs(engine, "a"))
    batched = engine.generate(_jobs(engine, "a", stops=("",)))
    assert batched == plain and max(c.tokens for [c] in plain) > 1
    for job, [whole] in zip(_jobs(engine, "a", stops=("",)), plain, strict=True):
        pieces: list[str] = []
        job.emit = pieces.append
        assert engine.stream(job) == whole and "".join(pieces) == whole.text


def test_cancelled_rows_stop_and_the_rest_of_the_batch_is_unchanged(engine: TransformersEngine) -> None:
    prompt = engine.encode_text("The")
    kept, dropped = Job(prompt, 30, "a", ignore_eos=True), Job(prompt, 30, "a", ignore_eos=True)
    dropped.cancel()
    [[alone]] = engine.generate([kept])
    [[together], [cut]] = engine.generate([kept, dropped])
    assert together == alone and alone.tokens == 30
    assert cut.tokens <= 1 and cut.finish == "length"
    [[only]] = engine.generate([dropped])  # a batch of cancelled jobs ends at once
    assert only.tokens <= 1


def test_seeds_at_the_ends_of_the_64_bit_range_sample(engine: TransformersEngine) -> None:
    for seed in (-(2**63), 2**63 - 1):
        job = Job(engine.encode_text("The"), 6, "a", n=2, temperature=1.0, seed=seed)
        [first], [again] = engine.generate([job]), engine.generate([job])
        assert first == again and len(first) == 2
        assert all(c.tokens == 6 if c.finish == "length" else c.tokens < 6 for c in first)


def test_ignore_eos_generates_exactly_max_tokens(engine: TransformersEngine) -> None:
    [[answer]] = engine.generate([Job(engine.encode_text("The"), 40, "a", ignore_eos=True)])
    assert answer.tokens == 40 and answer.finish == "length"


def test_a_seed_makes_sampling_repeatable_without_fixing_later_draws(engine: TransformersEngine) -> None:
    job = Job(engine.encode_text("The"), 12, "a", n=2, temperature=1.0, seed=5)
    first, again = engine.generate([job])[0], engine.generate([job])[0]
    assert first == again
    state = torch.random.get_rng_state()
    engine.generate([job])
    assert torch.equal(state, torch.random.get_rng_state())


class _FakeLlama:
    """The few llama-cpp-python calls the engine makes: counts up from the last prompt token, eos is 0."""

    def __init__(self) -> None:
        self.seeds: list[int] = []
        self.sampling: dict[str, float] = {}

    def generate(self, tokens: list[int], reset: bool, **sampling: float) -> Iterator[int]:
        self.sampling = sampling
        yield from range(tokens[-1] + 1, tokens[-1] + 100)

    def set_seed(self, seed: int) -> None:
        self.seeds.append(seed)


def test_the_llama_cpp_engine_loop_honours_eos_limits_stops_and_seeds() -> None:
    from tuneforge.serve.engines.llamacpp_engine import LlamaCppEngine

    engine = object.__new__(LlamaCppEngine)  # the loop only: llama-cpp-python is not installed here
    engine.llm, engine._eos = _FakeLlama(), {5}
    engine.decode = lambda tokens: "".join(chr(ord("a") + t) for t in tokens)  # type: ignore[method-assign]
    assert engine.generate_tokens([Job([1], 10, n=2, seed=3)]) == [[([2, 3, 4], True), ([2, 3, 4], True)]]
    assert engine.llm.seeds == [3]
    assert engine.generate_tokens([Job([5], 3), Job([1], 10, ignore_eos=True)]) == [
        [([6, 7, 8], False)],
        [([2, 3, 4, 5, 6, 7, 8, 9, 10, 11], False)],
    ]
    pieces: list[str] = []
    assert engine.stream(Job([1], 10, stops=("d",), emit=pieces.append)).text == "c" == "".join(pieces)
    pieces.clear()  # an answer cut by max_tokens streams its last token too
    assert engine.stream(Job([1], 3, emit=pieces.append)).text == "cde" == "".join(pieces)
    # temperature and top-p only, as the other engines sample (llama-cpp-python adds top-k 40 and min-p 0.05)
    assert engine.llm.sampling == {"temp": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
