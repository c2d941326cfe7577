"""Scenario data_faults: 5% injected faults of every kind, at seeded random lines, through the real data pipeline."""

from __future__ import annotations

from collections import Counter

import pytest
from transformers import AutoTokenizer

from fixtures.data_faults import FAULTS, write_faulty_dataset
from tuneforge.config.schema import DataSection
from tuneforge.data.build import build_dataset
from tuneforge.errors import UserError


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.mark.scenario("data_faults")
@pytest.mark.parametrize("seed", [0, 1])
def test_every_injected_bad_row_is_named_and_the_counts_add_up(tokenizer, tmp_path, seed):
    data = write_faulty_dataset(tmp_path / "data", seed)
    assert (len(data.good), len(data.faults), data.total) == (760, 40, 800)  # 5% of the rows are faults
    assert Counter(f.kind for f in data.faults) == Counter(kind for rows in FAULTS.values() for kind, _, _ in rows)

    section = DataSection(train=[str(data.folder)], val_size=0, cutoff_len=1024)  # default max_drop_ratio 0.05
    prepared, cached = build_dataset(section, tokenizer, seed=0)
    report = prepared.report
    assert cached is False

    # every bad row is named at its file:line with the reason of its fault, and nothing else is reported
    assert sorted((p.where, p.reason, p.dropped) for p in report.issues) == sorted(
        (f.where, f.reason, True) for f in data.faults
    )
    # no good row is lost: every one of them became a sample, untruncated
    assert sorted(s.source for s in prepared.train) == sorted(data.good)
    assert prepared.val == [] and not any(s.truncated for s in prepared.train)
    # the counts add up, per reason and in total
    assert report.dropped == Counter(f.reason for f in data.faults)
    assert (report.kept, report.truncated, report.dropped_total, report.total) == (760, 0, 40, 800)
    assert report.kept + report.truncated + report.dropped_total == report.total
    expected = Counter(f.reason for f in data.faults)
    assert expected["malformed field"] == 17 and expected["not UTF-8"] == 2 and expected["exact duplicate"] == 1
    summary = report.summary()
    assert summary.startswith("kept 760 + truncated 0 + dropped 40 = 800 rows (dropped: malformed field 17, ")
    assert all(f"{reason} {count}" in summary for reason, count in expected.items())
    assert report.read_per_dataset == {str(data.folder): 800} and report.per_dataset == {str(data.folder): 760}
    kinds = Counter(s.kind for s in prepared.train)
    assert kinds == {"chat": 540, "preference": 80, "kto": 80, "text": 60}


@pytest.mark.scenario("data_faults")
def test_the_same_faults_over_max_drop_ratio_stop_the_build_with_counts(tokenizer, tmp_path):
    data = write_faulty_dataset(tmp_path / "data", seed=2)
    section = DataSection(train=[str(data.folder)], val_size=0, cutoff_len=1024, max_drop_ratio=0.04)
    with pytest.raises(UserError) as info:
        build_dataset(section, tokenizer, seed=0)
    message = str(info.value)
    # the duplicate is dropped but is no error: 39 of 800 rows are unusable
    assert message.startswith("39 of 800 rows (4.9%) are unusable (malformed field 17, ")
    assert "exact duplicate" not in message.split("more than")[0]
    assert "more than data.max_drop_ratio=0.04" in message
    assert "Rows use placeholders that have no value ({{item}} in 2, {{author}} in 1 rows)" in message
    assert "set data.variables.item=YourValue and data.variables.author=YourValue" in message
