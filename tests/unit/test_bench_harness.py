"""The benchmark harness's pure parts: token counts, model FLOPs, the README table, the peak-RSS poller."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from fixtures.tiny_models import build_tokenizer

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import jobs  # noqa: E402
import measure  # noqa: E402
import readme_table  # noqa: E402

MIB = 2**20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("bench_tok")
    build_tokenizer(folder)
    return AutoTokenizer.from_pretrained(folder)


def _ids(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_token_count_follows_the_chat_template_and_the_cutoff(tokenizer) -> None:
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    prompt = system + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    full = prompt + "The capital of France is Paris.<|im_end|>\n"
    prompt_len, full_len = _ids(tokenizer, prompt), _ids(tokenizer, full)
    assert prompt_len < full_len
    sample = measure.Sample(
        [{"role": "user", "content": "What is the capital of France?"}], "The capital of France is Paris."
    )

    whole = measure.count_tokens(tokenizer, [sample, sample], cutoff_len=4096)
    assert (whole.samples, whole.real, whole.supervised, whole.truncated) == (
        2,
        2 * full_len,
        2 * (full_len - prompt_len),
        0,
    )

    cut = measure.count_tokens(tokenizer, [sample], cutoff_len=prompt_len + 2)
    assert (cut.real, cut.supervised, cut.truncated) == (prompt_len + 2, 2, 1)

    prompt_only = measure.count_tokens(tokenizer, [sample], cutoff_len=prompt_len - 1)
    assert (prompt_only.real, prompt_only.supervised, prompt_only.truncated) == (prompt_len - 1, 0, 1)


def test_job_samples_join_instruction_and_input_and_count_both_dpo_answers() -> None:
    sft = jobs.JOBS["sft-lora-cpu"]
    [sample] = jobs.count_samples(sft, [{"instruction": "Sum", "input": "2 and 3", "output": "5"}])
    assert (sample.messages, sample.answer) == ([{"role": "user", "content": "Sum\n2 and 3"}], "5")
    pair = {
        "conversations": [{"from": "human", "value": "Hi"}],
        "chosen": {"from": "gpt", "value": "Hello!"},
        "rejected": {"from": "gpt", "value": "Go away."},
    }
    chosen, rejected = jobs.count_samples(jobs.JOBS["dpo-lora-cpu"], [pair])
    assert chosen.messages == rejected.messages == [{"role": "user", "content": "Hi"}]
    assert (chosen.answer, rejected.answer) == ("Hello!", "Go away.")


def test_whole_only_jobs_skip_pairs_cut_at_the_cutoff(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    def pair(prompt: str) -> dict:
        return {
            "conversations": [{"from": "human", "value": prompt}],
            "chosen": {"from": "gpt", "value": "Yes."},
            "rejected": {"from": "gpt", "value": "No."},
        }

    source = [pair("Short?"), pair("Long " * 200), pair("Also short?"), pair("Third?")]
    monkeypatch.setattr(jobs, "read_source", lambda job: source)
    job = jobs.JOBS["dpo-lora-cpu"]
    assert job.whole_only and job.cutoff_len == 512
    assert jobs.job_rows(job, tokenizer, rows=2) == [source[0], source[2]]
    assert jobs.job_rows(jobs.JOBS["sft-lora-cpu"], tokenizer, rows=2) == source[:2]  # first rows, cut or not


def test_varied_rows_are_distinct_even_after_normalisation() -> None:
    demo = [{"instruction": "Name a colour.", "input": "", "output": "Red is a warm colour and blue is a cool one."}]
    rows = jobs.vary_rows(demo, 500, seed=3)
    assert len(rows) == 500
    normalised = {" ".join(r["instruction"].lower().split()) for r in rows}
    assert len(normalised) == 500
    assert rows == jobs.vary_rows(demo, 500, seed=3)  # reproducible


def test_model_flops_per_token() -> None:
    assert measure.flops_per_token(1000, "full", "sft") == 6000
    assert measure.flops_per_token(1000, "lora", "sft") == 4000
    assert measure.flops_per_token(1000, "lora", "dpo") == 6000
    assert measure.flops_per_token(1000, "full", "dpo") == 8000
    assert measure.matmul_params({"tie_word_embeddings": True, "vocab_size": 10, "hidden_size": 4}, 500) == 500
    assert measure.matmul_params({"tie_word_embeddings": False, "vocab_size": 10, "hidden_size": 4}, 500) == 460


def test_both_tools_get_the_same_hyper_parameters(tmp_path: Path) -> None:
    job = jobs.JOBS["sft-lora-cpu"]
    tf = jobs.tuneforge_config(job, tmp_path / "d.json", "m", tmp_path / "run")
    lf = jobs.llamafactory_config(job, tmp_path, tmp_path / "m", tmp_path / "out")
    assert (tf["train"]["batch_size"], tf["train"]["grad_accum"]) == (lf["per_device_train_batch_size"], 2)
    assert (tf["adapter"]["r"], tf["adapter"]["alpha"], lf["lora_rank"], lf["lora_alpha"]) == (8, 16, 8, 16)
    assert tf["data"]["val_size"] == 0 and tf["data"]["dedup"] == "none" and tf["data"]["cache"] is False
    assert (lf["cutoff_len"], lf["learning_rate"], lf["seed"], lf["template"]) == (512, 1e-4, 42, "smollm2")
    assert jobs.select_jobs("cpu") == [
        jobs.JOBS[n] for n in ("sft-lora-cpu", "sft-full-cpu", "dpo-lora-cpu", "data-prep-50k")
    ]


def _result(job: str, timestamp: str, wall_tf: float, quick: bool = False) -> dict:
    return {
        "job": job,
        "description": "SFT, LoRA",
        "order": 0,
        "date": timestamp[:10],
        "timestamp": timestamp,
        "quick": quick,
        "data": {"rows": 256, "real_tokens": 60000, "supervised_tokens": 30000},
        "machine": {
            "cpu": "Test CPU",
            "cores": 2,
            "matmul_gflops": 70.0,
            "matmul_dtype": "fp32",
            "load_before": [2.0, 2.0, 2.0],
            "load_after": [3.0, 2.0, 2.0],
        },
        "versions": {
            "tuneforge": {"tuneforge": "0.1.0", "torch": "2.13.0"},
            "llamafactory": {"llamafactory": "0.9.5"},
        },
        "estimate_vs_measured": {
            "estimate_peak_bytes": 2 * 2**30,
            "measured_peak_bytes": 3 * 2**30,
            "estimate_train_s": 90.0,
            "measured_train_s": 125.0,
        },
        "rows": [
            {
                "tool": "tuneforge",
                "label": "tuneforge",
                "ok": True,
                "wall_s": wall_tf,
                "real_tokens_per_s": 60000 / wall_tf,
                "supervised_tokens_per_s": 30000 / wall_tf,
                "flops_per_s": 7.0e9,
                "flops_share": 0.1,
                "peak_memory_bytes": 3 * 2**30,
                "memory": "RSS",
                "mean_loss": 1.23456,
            },
            {
                "tool": "LLaMA-Factory",
                "label": "LLaMA-Factory",
                "ok": True,
                "wall_s": 400.0,
                "real_tokens_per_s": 150.0,
                "supervised_tokens_per_s": 75.0,
                "flops_per_s": 3.5e9,
                "flops_share": 0.05,
                "peak_memory_bytes": 4 * 2**30,
                "memory": "RSS",
                "mean_loss": 1.3,
            },
        ],
    }


def test_readme_table_uses_the_newest_full_result_of_each_job(tmp_path: Path) -> None:
    for name, result in {
        "2026-01-01-sft-lora-cpu.json": _result("sft-lora-cpu", "2026-01-01T10:00:00", 300.0),
        "2026-02-01-sft-lora-cpu.json": _result("sft-lora-cpu", "2026-02-01T10:00:00", 200.0),
        "2026-03-01-sft-lora-cpu-rows16.json": _result("sft-lora-cpu", "2026-03-01T10:00:00", 5.0, quick=True),
    }.items():
        (tmp_path / name).write_text(json.dumps(result), encoding="utf-8")
    [chosen] = readme_table.latest_results(tmp_path)
    assert chosen["timestamp"] == "2026-02-01T10:00:00"  # a full run wins over a newer quick check
    quick_only = _result("dpo-lora-cpu", "2026-03-02T10:00:00", 9.0, quick=True)
    (tmp_path / "2026-03-02-dpo-lora-cpu-rows4.json").write_text(json.dumps(quick_only), encoding="utf-8")
    assert [r["job"] for r in readme_table.latest_results(tmp_path)] == ["sft-lora-cpu", "dpo-lora-cpu"]
    assert "256 rows (a quick check with fewer rows than the job has)" in readme_table.note(quick_only)

    lines = readme_table.render([chosen]).splitlines()
    assert lines[2] == (
        "| `sft-lora-cpu` | tuneforge | 3m20s | 300 | 150 | 7.0 GFLOP/s (10.0%) | 3.00 GiB RSS | 1.2346 "
        "| 2.00× faster, 0.75× memory |"
    )
    assert lines[3] == (
        "| `sft-lora-cpu` | LLaMA-Factory | 6m40s | 150 | 75.0 | 3.5 GFLOP/s (5.0%) | 4.00 GiB RSS | 1.3000 "
        "| 1 (reference) |"
    )
    assert "load average 2.0 → 3.0" in lines[5]
    slower = _result("sft-lora-cpu", "2026-02-01T10:00:00", 500.0)
    assert readme_table.table_rows(slower)[0].endswith("| 1.25× slower, 0.75× memory |")
    assert "`tuneforge estimate`: peak 2.00 GiB, 1m30s of training vs measured 3.00 GiB, 2m05s." in lines[5]


def test_readme_block_is_replaced_between_the_markers_only() -> None:
    text = "# T\n\nbefore\n<!-- bench:start -->\nold table\n<!-- bench:end -->\nafter\n"
    new = readme_table.replace_block(text, "| new |")
    assert new == "# T\n\nbefore\n<!-- bench:start -->\n| new |\n<!-- bench:end -->\nafter\n"
    assert readme_table.replace_block(new, "| new |") == new
    with pytest.raises(SystemExit, match="markers"):
        readme_table.replace_block("no markers here", "x")


def test_readme_table_writes_the_same_block_into_every_readme(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "2026-02-01-sft-lora-cpu.json").write_text(
        json.dumps(_result("sft-lora-cpu", "2026-02-01T10:00:00", 200.0)), encoding="utf-8"
    )
    english, chinese = tmp_path / "README.md", tmp_path / "README_zh.md"
    english.write_text("# A\n<!-- bench:start -->\n<!-- bench:end -->\nend\n", encoding="utf-8")
    chinese.write_text("# 甲\n<!-- bench:start -->\nold\n<!-- bench:end -->\n", encoding="utf-8")
    assert readme_table.main([str(english), str(chinese), "--results", str(results)]) == 0
    block_en = english.read_text(encoding="utf-8").split("<!-- bench:start -->")[1]
    block_zh = chinese.read_text(encoding="utf-8").split("<!-- bench:start -->")[1]
    assert block_en.split("<!-- bench:end -->")[0] == block_zh.split("<!-- bench:end -->")[0]
    assert "| `sft-lora-cpu` | tuneforge | 3m20s |" in block_en and "old" not in block_zh
    assert english.read_text(encoding="utf-8").endswith("<!-- bench:end -->\nend\n")


def test_peak_rss_of_a_process_tree_includes_its_children(tmp_path: Path) -> None:
    """A child holding 100 MiB starts a grandchild holding 200 MiB: the tree's peak is about 300 MiB."""
    grandchild = "import time; data = b'\\x01' * (200 * 2**20); time.sleep(1.5)"
    child = textwrap.dedent(
        f"""
        import subprocess, sys
        data = b'\\x01' * (100 * 2**20)
        subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)
        """
    )
    measured = measure.run_measured([sys.executable, "-c", child], tmp_path / "child.log")
    assert measured.returncode == 0, measure.log_tail(measured.log)
    assert 300 * MIB * 0.85 <= measured.peak_rss <= 300 * MIB * 1.15
    assert measured.wall_s >= 1.5
