"""`tuneforge data validate|stats|inspect` through the real CLI, on a tiny model's tokenizer."""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import MEMORISE, run_cli, write_config, write_memorisation_set

from fixtures.data_faults import write_faulty_dataset


def _faulty_file(path: Path) -> Path:
    """Alpaca JSONL with one fault of each kind at known lines."""
    rows = [
        json.dumps({"instruction": "Say hi", "output": "Hi there."}),  # 1 ok
        '{"instruction": "broken", "output": "x"',  # 2 malformed JSON
        json.dumps({"instruction": "No output"}),  # 3 missing field
        json.dumps({"instruction": "Empty", "output": "  "}),  # 4 empty answer
        json.dumps({"instruction": "Say hi", "output": "Hi there."}),  # 5 exact duplicate of 1
        json.dumps({"instruction": "Long", "output": "word " * 200}),  # 6 over the cutoff: truncated
        json.dumps({"instruction": "say HI!", "output": "hi there"}),  # 7 near-duplicate of 1: flagged
        json.dumps({"instruction": "Name a colour", "output": "Blue."}),  # 8 ok
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_validate_names_every_bad_row_and_the_counts_add_up(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = _faulty_file(tmp_path / "faulty.jsonl")
    result = run_cli("data", "validate", str(data), "data.cutoff_len=64", "--model", str(tiny_llama_dir), cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # problem rows → non-zero, for scripts
    out = result.stdout
    for line, reason in [
        (2, "malformed JSON"),
        (3, "missing field"),
        (4, "empty answer"),
        (5, "exact duplicate"),
        (6, "over the cutoff length"),
        (7, "near-duplicate"),
    ]:
        assert f"{data}:{line}: {reason}" in out, (line, reason, out)
    assert f"{data}:5: exact duplicate: same as {data}:1" in out
    assert f"{data}:1:" not in out and f"{data}:8:" not in out
    assert "kept 3 + truncated 1 + dropped 4 = 8 rows" in out
    assert "training would stop" in result.stderr  # 3 of 8 rows unusable > 5%


@pytest.mark.scenario("data_faults")
def test_validate_names_every_injected_fault_of_a_folder_in_every_format(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_faulty_dataset(tmp_path / "data", seed=3)
    # row text that looks like console markup is printed as written, never read as markup (nor a crash)
    markup = data.folder / "markup.jsonl"
    markup.write_text(json.dumps({"messages": [{"role": "[/red]", "content": "x"}]}) + "\n", encoding="utf-8")
    result = run_cli(
        "data", "validate", str(data.folder), "data.cutoff_len=1024", "--model", str(tiny_llama_dir), cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    out = result.stdout
    problem_lines = [line for line in out.splitlines() if line.startswith(str(data.folder))]
    assert sorted(line.split(": ")[0:2] for line in problem_lines) == sorted(
        [[f.where, f.reason] for f in data.faults] + [[f"{markup}:1", "unsupported role"]]
    )
    assert f"{markup}:1: unsupported role: messages[0] has role '[/red]'" in out
    history = next(f.where for f in data.faults if f.kind == "history pair too short")
    assert f"{history}: malformed field: history[0] must be a [user, assistant] pair of strings" in out
    assert not any(f"{where}:" in out for where in data.good)  # no good row is named
    reasons = Counter(f.reason for f in data.faults) + Counter({"unsupported role": 1})
    for reason, count in reasons.items():
        assert any(line.split() == [*reason.split(), str(count), "dropped"] for line in _table_rows(out)), reason
    assert "kept 760 + truncated 0 + dropped 41 = 801 rows" in out
    assert "training would stop" not in result.stderr  # 40 of 801 unusable: within data.max_drop_ratio=0.05


def _table_rows(out: str) -> list[str]:
    """The cells of rich's table rows, separators removed."""
    return [line.replace("│", " ").replace("┃", " ") for line in out.splitlines() if "│" in line]


def test_validate_of_clean_data_exits_zero(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    result = run_cli("data", "validate", str(data), "--model", str(tiny_llama_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kept 8 + truncated 0 + dropped 0 = 8 rows" in result.stdout


def test_stats_prints_a_histogram_and_writes_a_png(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run", data={"val_size": 2})
    result = run_cli("data", "stats", str(config), "--plot", str(tmp_path / "h.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "8 samples (6 train / 2 validation)" in out
    assert "= cutoff 128" in out and "0-12" in out
    assert "roles in the rows read: user 8, assistant 8" in out
    assert "supervised tokens:" in out and "sample kinds: chat 8" in out
    png = (tmp_path / "h.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (700, 400)  # 7x4 in at 100 dpi


def test_inspect_marks_only_the_answers_as_supervised(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    result = run_cli(
        "data",
        "inspect",
        str(data),
        "data.val_size=0",
        "--n",
        "2",
        "--plain",
        "--model",
        str(tiny_llama_dir),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("--- sample") == 2
    body = out[out.index("--- sample") :]
    marked = [part.split("]]")[0] for part in body.split("[[")[1:]]
    assert len(marked) == 2
    answers = {a for _, a in MEMORISE}
    assert all(any(text.startswith(a) for a in answers) for text in marked), marked
    assert all("<|im_end|>" in text for text in marked)  # the end-of-turn marker is learned too
    assert not any("?" in text for text in marked)  # no question text carries the loss


def test_train_refuses_preference_data_for_sft(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}) + "\n")
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run")
    result = run_cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "preference" in result.stderr and "Traceback" not in result.stderr
