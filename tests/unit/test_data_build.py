"""tuneforge.data.build: mixing datasets to ratios, validation data and split, the tokenised cache."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from fixtures.tiny_models import CHATML_TEMPLATE, write_jsonl
from tuneforge.config.schema import DataSection
from tuneforge.data import IGNORE_INDEX
from tuneforge.data.build import build_dataset
from tuneforge.data.pipeline import PreparedData
from tuneforge.errors import UserError


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def rows(prefix: str, count: int) -> list[dict[str, str]]:
    return [{"instruction": f"{prefix} question {i}?", "output": f"{prefix} answer {i}."} for i in range(count)]


def build(
    tokenizer: Any, tmp_path: Path, seed: int = 0, cache_dir: Path | None = None, **options: Any
) -> tuple[PreparedData, bool]:
    prepared, cached = build_dataset(DataSection(**options), tokenizer, seed, base_dir=tmp_path, cache_dir=cache_dir)
    assert prepared.report.balanced, prepared.report.summary()
    return prepared, cached


def sample_dicts(prepared: PreparedData) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return [asdict(s) for s in prepared.train], [asdict(s) for s in prepared.val]


# ---------------------------------------------------------------------------------------------------- mixing


@pytest.mark.parametrize(
    ("sizes", "ratios", "counts", "note"),
    [
        ((10, 30), [7, 3], (10, 4), "mix 7:3 realised as small.jsonl 10 (71.4%), large.jsonl 4 (28.6%)"),
        ((30, 10), [7, 3], (23, 10), "mix 7:3 realised as small.jsonl 23 (69.7%), large.jsonl 10 (30.3%)"),
        ((10, 30), [0.7, 0.3], (10, 4), "mix 0.7:0.3 realised as small.jsonl 10 (71.4%), large.jsonl 4 (28.6%)"),
        ((20, 20), [1, 1], (20, 20), "mix 1:1 realised as small.jsonl 20 (50.0%), large.jsonl 20 (50.0%)"),
        ((10, 30), [1, 0], (10, 0), "mix 1:0 realised as small.jsonl 10 (100.0%), large.jsonl 0 (0.0%)"),
    ],
)
def test_mix_ratios_take_the_largest_mix_without_repeating_rows(tokenizer, tmp_path, sizes, ratios, counts, note):
    write_jsonl(tmp_path / "small.jsonl", rows("small", sizes[0]))
    write_jsonl(tmp_path / "large.jsonl", rows("large", sizes[1]))
    prepared, _ = build(tokenizer, tmp_path, train=["small.jsonl", "large.jsonl"], mix_ratios=ratios, val_size=0)
    report = prepared.report
    expected = {"small.jsonl": counts[0], "large.jsonl": counts[1]}
    assert report.mixed == expected
    assert note in report.notes
    used = prepared.train + prepared.val
    assert Counter(s.dataset for s in used) == {name: n for name, n in expected.items() if n}
    assert len({s.source for s in used}) == len(used) == sum(counts)  # no row twice
    # rows the mix leaves out are counted as dropped for that reason, so the counts still add up
    assert report.total == sum(sizes) and report.kept == sum(counts) and report.balanced
    left_out = sum(sizes) - sum(counts)
    assert report.dropped == ({"left out by the mix": left_out} if left_out else {})
    assert report.per_dataset == {"small.jsonl": counts[0], "large.jsonl": counts[1]}


def test_mix_is_seeded(tokenizer, tmp_path):
    write_jsonl(tmp_path / "small.jsonl", rows("small", 10))
    write_jsonl(tmp_path / "large.jsonl", rows("large", 30))
    options = {"train": ["small.jsonl", "large.jsonl"], "mix_ratios": [7, 3], "val_size": 0}

    def picked(seed: int) -> list[str]:
        prepared, _ = build(tokenizer, tmp_path, seed=seed, **options)
        return sorted(s.source for s in prepared.train if s.dataset == "large.jsonl")

    assert picked(1) == picked(1)
    assert len(picked(1)) == 4
    assert len({tuple(picked(seed)) for seed in range(5)}) > 1


def test_mix_ratios_must_match_the_datasets(tokenizer, tmp_path):
    write_jsonl(tmp_path / "small.jsonl", rows("small", 3))
    write_jsonl(tmp_path / "large.jsonl", rows("large", 3))
    with pytest.raises(UserError) as info:
        build(tokenizer, tmp_path, train=["small.jsonl", "large.jsonl"], mix_ratios=[1, 2, 3])
    assert str(info.value) == ("data.mix_ratios has 3 numbers but there are 2 datasets (small.jsonl, large.jsonl)")


def test_mixing_in_a_dataset_without_usable_rows_is_an_error(tokenizer, tmp_path):
    write_jsonl(tmp_path / "empty.jsonl", [{"instruction": f"q{i}", "output": " "} for i in range(2)])
    write_jsonl(tmp_path / "large.jsonl", rows("large", 60))
    options = {"train": ["empty.jsonl", "large.jsonl"], "val_size": 0}
    with pytest.raises(UserError) as info:
        build(tokenizer, tmp_path, mix_ratios=[7, 3], **options)
    assert str(info.value).startswith("data.mix_ratios gives empty.jsonl a share, but no usable rows of it are left")
    assert "dropped: empty answer 2" in str(info.value)
    # with ratio 0 the empty dataset is simply not used
    prepared, _ = build(tokenizer, tmp_path, mix_ratios=[0, 1], **options)
    assert prepared.report.mixed == {"empty.jsonl": 0, "large.jsonl": 60}
    assert len(prepared.train) == 60


# ---------------------------------------------------------------------------------------------------- validation


def test_separate_eval_data_replaces_the_split(tokenizer, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", rows("train", 12))
    write_jsonl(tmp_path / "eval.jsonl", [*rows("eval", 3), {"instruction": "bad", "output": ""}])
    prepared, _ = build(tokenizer, tmp_path, train=["train.jsonl"], eval=["eval.jsonl"], val_size=0.5)
    assert sorted(s.source for s in prepared.train) == sorted(f"{tmp_path / 'train.jsonl'}:{n}" for n in range(1, 13))
    assert [s.source for s in prepared.val] == [f"{tmp_path / 'eval.jsonl'}:{n}" for n in (1, 2, 3)]
    assert {s.dataset for s in prepared.val} == {"eval.jsonl"}
    report = prepared.report
    assert report.total == report.kept == 12  # the training report counts training rows only
    assert "validation data: kept 3 + truncated 0 + dropped 1 = 4 rows (dropped: empty answer 1)" in report.notes


@pytest.mark.parametrize(("val_size", "expected"), [(0.25, 5), (3, 3), (0, 0), (0.01, 1), (0.5, 10)])
def test_split_sizes(tokenizer, tmp_path, val_size, expected):
    write_jsonl(tmp_path / "rows.jsonl", rows("row", 20))
    prepared, _ = build(tokenizer, tmp_path, train=["rows.jsonl"], val_size=val_size)
    assert (len(prepared.train), len(prepared.val)) == (20 - expected, expected)
    every = sorted(s.source for s in prepared.train + prepared.val)
    assert every == sorted(f"{tmp_path / 'rows.jsonl'}:{n}" for n in range(1, 21))


def test_split_is_deterministic_for_a_seed(tokenizer, tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", rows("row", 20))

    def split(seed: int) -> tuple[list[str], list[str]]:
        prepared, _ = build(tokenizer, tmp_path, seed=seed, train=["rows.jsonl"], val_size=0.25)
        return [s.source for s in prepared.train], [s.source for s in prepared.val]

    assert split(7) == split(7)
    assert split(7)[1] != split(8)[1]
    train, val = split(7)
    assert not set(train) & set(val)


def test_masking_options_reach_the_rendering(tokenizer, tmp_path):
    write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Bye"},
                    {"role": "assistant", "content": "Goodbye!"},
                ]
            }
        ],
    )

    def supervised(**options: Any) -> str:
        prepared, _ = build(tokenizer, tmp_path, train=["chat.jsonl"], val_size=0, **options)
        (sample,) = prepared.train
        return tokenizer.decode([label for label in sample.labels if label != IGNORE_INDEX])

    assert supervised() == "Hello!<|im_end|>\nGoodbye!<|im_end|>\n"
    assert supervised(mask_history=True) == "Goodbye!<|im_end|>\n"
    assert supervised(train_on_prompt=True).startswith("<|im_start|>system\nYou are a helpful assistant.")


def test_max_samples_is_noted(tokenizer, tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", rows("row", 10))
    prepared, _ = build(tokenizer, tmp_path, train=["rows.jsonl"], max_samples=4, val_size=0)
    assert len(prepared.train) == prepared.report.total == 4
    assert "rows.jsonl: data.max_samples=4 used 4 of its rows" in prepared.report.notes


# ---------------------------------------------------------------------------------------------------- cache

MIXED_KINDS = [
    {"instruction": "Capital of France?", "output": "Paris."},
    {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."},
    {"prompt": "2 + 2?", "completion": "4", "label": False},
    {"text": "Water boils at one hundred degrees Celsius."},
    {"instruction": "Capital of France?", "output": "Paris."},  # a duplicate, so the report has a problem row
    *rows("row", 8),
]


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.samples")) if folder.is_dir() else []


def test_second_build_comes_from_the_cache_unchanged(tokenizer, tmp_path):
    write_jsonl(tmp_path / "data.jsonl", MIXED_KINDS)
    cache = tmp_path / "cache"
    options = {"train": ["data.jsonl"], "val_size": 0.2}
    first, cached = build(tokenizer, tmp_path, cache_dir=cache, **options)
    assert cached is False
    assert len(cache_files(cache)) == 1
    second, cached = build(tokenizer, tmp_path, cache_dir=cache, **options)
    assert cached is True
    assert len(cache_files(cache)) == 1
    assert sample_dicts(second) == sample_dicts(first)
    assert second.report.summary() == first.report.summary()
    assert second.report.full_text() == first.report.full_text()
    assert second.report.issues == first.report.issues
    assert second.report.dropped == first.report.dropped == {"exact duplicate": 1}
    kinds = {s.kind: s for s in second.train + second.val}
    assert set(kinds) == {"chat", "preference", "kto", "text"}
    rejected = kinds["preference"].rejected
    assert tokenizer.decode([t for t in rejected.labels if t != IGNORE_INDEX]) == "Green.<|im_end|>\n"
    assert kinds["preference"].rejected.input_ids == next(
        s.rejected.input_ids for s in first.train + first.val if s.kind == "preference"
    )
    assert kinds["kto"].label is False


def test_changed_inputs_miss_the_cache(tokenizer, tiny_llama_dir, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", rows("row", 12))
    cache = tmp_path / "cache"
    options: dict[str, Any] = {"train": ["data.jsonl"], "val_size": 0.2}
    original, cached = build(tokenizer, tmp_path, cache_dir=cache, **options)
    assert cached is False

    # one byte of a data file
    content = path.read_bytes()
    path.write_bytes(content.replace(b"answer 3.", b"answer 4."))
    changed, cached = build(tokenizer, tmp_path, cache_dir=cache, **options)
    assert cached is False
    assert sample_dicts(changed) != sample_dicts(original)
    path.write_bytes(content)  # the same bytes again: the first entry is reused
    again, cached = build(tokenizer, tmp_path, cache_dir=cache, **options)
    assert cached is True and sample_dicts(again) == sample_dicts(original)

    # an option
    _, cached = build(tokenizer, tmp_path, cache_dir=cache, **{**options, "cutoff_len": 256})
    assert cached is False
    _, cached = build(tokenizer, tmp_path, cache_dir=cache, **{**options, "val_size": 0.3})
    assert cached is False
    # the seed
    _, cached = build(tokenizer, tmp_path, seed=1, cache_dir=cache, **options)
    assert cached is False

    # the tokenizer's chat template
    other = AutoTokenizer.from_pretrained(tiny_llama_dir)
    other.chat_template = CHATML_TEMPLATE.replace("You are a helpful assistant.", "You are terse.")
    templated, cached = build(other, tmp_path, cache_dir=cache, **options)
    assert cached is False
    assert "You are terse." in other.decode(templated.train[0].input_ids)
    _, cached = build(other, tmp_path, cache_dir=cache, **options)
    assert cached is True
    assert len(cache_files(cache)) == 6


def test_cache_false_never_writes(tokenizer, tmp_path):
    write_jsonl(tmp_path / "data.jsonl", rows("row", 5))
    cache = tmp_path / "cache"
    for _ in range(2):
        _, cached = build(tokenizer, tmp_path, cache_dir=cache, train=["data.jsonl"], cache=False)
        assert cached is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]  # no cache folder, nothing beside


def test_an_eval_file_change_misses_the_cache(tokenizer, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", rows("train", 5))
    evaluation = write_jsonl(tmp_path / "eval.jsonl", rows("eval", 2))
    cache = tmp_path / "cache"
    options = {"train": ["train.jsonl"], "eval": ["eval.jsonl"]}
    assert build(tokenizer, tmp_path, cache_dir=cache, **options)[1] is False
    assert build(tokenizer, tmp_path, cache_dir=cache, **options)[1] is True
    write_jsonl(evaluation, rows("eval", 3))
    prepared, cached = build(tokenizer, tmp_path, cache_dir=cache, **options)
    assert cached is False and len(prepared.val) == 3


def test_columns_and_tags_rename_fields_of_own_files(tokenizer, tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", [{"question": "Q1?", "answer": "A1."}, {"question": "Q2?", "answer": "A2."}])
    prepared, _ = build(
        tokenizer, tmp_path, train=["qa.jsonl"], columns={"prompt": "question", "response": "answer"}, val_size=0
    )
    texts = [tokenizer.decode(s.input_ids) for s in prepared.train]
    assert any("Q1?" in t and "A1." in t for t in texts) and prepared.report.kept == 2

    turns = [{"speaker": "customer", "text": "Hi"}, {"speaker": "agent", "text": "Hello, how can I help?"}]
    write_jsonl(tmp_path / "chat.jsonl", [{"dialog": turns}])
    tags = {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"}
    prepared, _ = build(
        tokenizer, tmp_path, train=["chat.jsonl"], columns={"messages": "dialog"}, tags=tags, val_size=0
    )
    supervised = tokenizer.decode([t for t in prepared.train[0].labels if t != -100])
    assert supervised.startswith("Hello, how can I help?")


def test_cache_writes_through_an_unguessable_temporary_name(tokenizer, tmp_path):
    write_jsonl(tmp_path / "data.jsonl", rows("row", 5))
    cache = tmp_path / "cache"
    options = {"train": ["data.jsonl"], "val_size": 0}
    first, _ = build(tokenizer, tmp_path, cache_dir=cache, **options)
    (entry,) = cache_files(cache)
    entry.unlink()
    # a name another process could guess and take over beforehand: the old `<key>.tmp` beside the entry
    squatted = entry.with_suffix(".tmp")
    squatted.mkdir()
    (squatted / "keep.txt").write_text("not ours")
    again, cached = build(tokenizer, tmp_path, cache_dir=cache, **options)
    assert cached is False and sample_dicts(again) == sample_dicts(first)
    assert sorted(p.name for p in cache.iterdir()) == sorted([entry.name, squatted.name])  # no temporary left
    assert (squatted / "keep.txt").read_text() == "not ours"
    assert build(tokenizer, tmp_path, cache_dir=cache, **options)[1] is True
