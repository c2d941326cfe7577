"""Data preparation scales linearly: line numbering, packing and the tokenised cache do work proportional to the
data, never to its square, and the cache holds one copy of the token data (timings:
`benchmarks/harness.py --job data-prep-50k`)."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tuneforge.config.schema import DataSection
from tuneforge.data import files
from tuneforge.data.build import build_dataset
from tuneforge.data.files import LineCounter, read_rows
from tuneforge.data.packing import best_fit_packs
from tuneforge.data.pipeline import PreparedData
from tuneforge.data.quality import DataReport
from tuneforge.data.render import IGNORE_INDEX, RenderedSample
from tuneforge.data.sample_cache import CACHE_SUFFIX, load_prepared, save_prepared, supervised_runs


def write_array(path: Path, count: int) -> list[int]:
    """An indented JSON array of `count` rows (as LLaMA-Factory ships its data); returns each row's first line."""
    rows = [{"instruction": f"question {i}", "input": "", "output": f"answer {i}\nsecond line"} for i in range(count)]
    text = json.dumps(rows, indent=2)
    path.write_text(text, encoding="utf-8")
    return [1 + text.count("\n", 0, text.index(f'"question {i}"')) - 1 for i in range(count)]


@pytest.mark.parametrize("count", [50, 400])
def test_json_array_rows_are_numbered_scanning_each_character_once(tmp_path, monkeypatch, count):
    counters: list[LineCounter] = []

    class Recorded(LineCounter):
        def __init__(self, text: str) -> None:
            super().__init__(text)
            counters.append(self)

    monkeypatch.setattr(files, "LineCounter", Recorded)
    path = tmp_path / "rows.json"
    expected = write_array(path, count)
    rows = list(read_rows(path))
    assert [row.line for row in rows] == expected
    assert rows[3].value["instruction"] == "question 3"
    (counter,) = counters
    size = len(path.read_text(encoding="utf-8"))
    # recounting from the top for every row would scan about count * size / 2 characters
    assert counter.scanned <= size


def test_line_counter_counts_on_from_the_last_position_and_restarts_when_asked_backwards():
    counter = LineCounter("a\nb\nc\nd")
    assert [counter.line_at(p) for p in (0, 2, 3, 6)] == [1, 2, 2, 4]
    assert counter.scanned == 6
    assert counter.line_at(1) == 1  # backwards: counted again from the top
    assert counter.scanned == 7


def reference_best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing written plainly: scan every open pack for the tightest fit (lowest number on ties); a
    pack closes when it is full (an oversized sample fills one alone)."""
    packs: list[list[int]] = []
    rooms: list[int | None] = []  # None: closed
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fitting = [n for n, room in enumerate(rooms) if room is not None and room >= lengths[index]]
        if fitting:
            number = min(fitting, key=lambda n: (rooms[n], n))
        else:
            number = len(packs)
            packs.append([])
            rooms.append(capacity)
        packs[number].append(index)
        left = rooms[number] - lengths[index]  # type: ignore[operator]
        rooms[number] = left if left > 0 else None
    return packs


def test_best_fit_packs_equal_the_plain_best_fit_on_random_lengths():
    rng = random.Random(0)
    for _ in range(300):
        capacity = rng.randint(1, 64)
        lengths = [rng.randint(0, 80) for _ in range(rng.randint(0, 60))]
        assert best_fit_packs(lengths, capacity) == reference_best_fit(lengths, capacity), (lengths, capacity)


def sample(ids: list[int], labels: list[int], **fields) -> RenderedSample:
    return RenderedSample(list(ids), list(labels), source="f.jsonl:1", dataset="d", **fields)


def test_cache_file_round_trips_every_kind_of_sample(tmp_path):
    rejected = sample([5, 6, 900], [IGNORE_INDEX, 6, 900], kind="preference", reference_logp=-2.5)
    samples = [
        sample([1, 2, 3, 70000, 5], [IGNORE_INDEX, IGNORE_INDEX, 3, 70000, IGNORE_INDEX], truncated=True),
        sample([7, 8], [7, 8], kind="text"),
        sample([5, 6, 4], [IGNORE_INDEX, 6, 4], kind="preference", rejected=rejected, reference_logp=-1.25),
        sample([9, 10, 11], [IGNORE_INDEX, 42, 11], kind="kto", label=False),  # a label that is not its own id
    ]
    report = DataReport(total=5, kept=4)
    report.drop("f.jsonl:9", "exact duplicate", "same as f.jsonl:1")
    path = tmp_path / f"entry{CACHE_SUFFIX}"
    save_prepared(PreparedData(samples[:3], samples[3:], report), path)
    loaded = load_prepared(path)
    assert loaded is not None
    assert loaded.train == samples[:3] and loaded.val == samples[3:]
    assert loaded.report.issues == report.issues and loaded.report.dropped == {"exact duplicate": 1}
    header, _, payload = path.read_bytes().partition(b"\n")
    assert b"70000" not in header  # token ids are stored as int32, not as JSON
    ids = 5 + 2 + 3 + 3 + 3 + 3  # every input id, plus the kto sample's labels stored in full
    assert len(payload) == 4 * ids
    # labels that copy their ids are stored as runs of positions
    assert supervised_runs([1, 2, 3, 4], [IGNORE_INDEX, 2, 3, IGNORE_INDEX]) == [[1, 3]]
    assert supervised_runs([1, 2], [1, 9]) is None


def _runs_by_definition(ids: list[int], labels: list[int]) -> list[list[int]] | None:
    if any(label not in (IGNORE_INDEX, token) for token, label in zip(ids, labels, strict=True)):
        return None
    marks = [label != IGNORE_INDEX for label in labels]
    starts = [i for i, on in enumerate(marks) if on and (i == 0 or not marks[i - 1])]
    ends = [i + 1 for i, on in enumerate(marks) if on and (i + 1 == len(marks) or not marks[i + 1])]
    return [[a, b] for a, b in zip(starts, ends, strict=True)]


def test_supervised_runs_match_their_definition_on_random_labels():
    rng = random.Random(3)
    for _ in range(2000):
        ids = [rng.randint(0, 9) for _ in range(rng.randint(0, 30))]
        labels = [IGNORE_INDEX if rng.random() < 0.5 else token + (rng.random() < 0.03) for token in ids]
        assert supervised_runs(ids, labels) == _runs_by_definition(ids, labels), (ids, labels)


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    path = tmp_path / f"entry{CACHE_SUFFIX}"
    save_prepared(PreparedData([sample([1, 2, 3], [1, 2, 3])], []), path)
    path.write_bytes(path.read_bytes()[:-2])
    assert load_prepared(path) is None
    path.write_bytes(b"not a cache file\n")
    assert load_prepared(path) is None


def test_the_cache_is_written_one_sample_at_a_time(tmp_path):
    rng = random.Random(1)
    samples = []
    for _ in range(100):
        ids = [rng.randint(300, 60000) for _ in range(4000)]
        samples.append(sample(ids, [IGNORE_INDEX] * 1000 + ids[1000:]))
    token_lists = sum(8 * (len(s.input_ids) + len(s.labels)) for s in samples)  # the lists' slots alone
    tracemalloc.start()
    try:
        save_prepared(PreparedData(samples, []), tmp_path / f"big{CACHE_SUFFIX}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a whole-file JSON body (a copy of every list plus its text) would need more than the lists themselves
    assert peak < 0.2 * token_lists


def test_a_cache_hit_gives_the_samples_the_build_made(tiny_llama_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    write_array(tmp_path / "rows.json", 30)
    section = DataSection(train=[str(tmp_path / "rows.json")], val_size=0.2)
    built, hit = build_dataset(section, tokenizer, 0, cache_dir=tmp_path / "cache")
    again, hit_again = build_dataset(section, tokenizer, 0, cache_dir=tmp_path / "cache")
    assert (hit, hit_again) == (False, True)
    assert again.train == built.train and again.val == built.val
    assert again.report.summary() == built.report.summary()
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [CACHE_SUFFIX]
