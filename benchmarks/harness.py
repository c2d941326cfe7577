"""Run the same job with tuneforge and with LLaMA-Factory on this machine, one after the other, and print and save
(benchmarks/results/<date>-<job>.json) wall time, tokens/s, model FLOP/s against the measured matmul peak, peak
memory, mean training loss and the ratio between the tools.

    python benchmarks/harness.py                       # every job (GPU jobs skip without CUDA)
    python benchmarks/harness.py --job sft-lora-cpu    # one job (or a group: cpu, gpu, all; or a,b)
    python benchmarks/harness.py --job sft-lora-cpu --rows 16 --out /tmp/bench   # a quick check

LLaMA-Factory is installed once into its own environment ($TUNEFORGE_HOME/bench/lf-venv); see lf_runner.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import jobs as job_defs
import lf_runner
import measure
import tf_runner
from jobs import Job
from measure import ToolRun
from readme_table import render

OUT = Path(__file__).resolve().parent / "results"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def model_folder(name: str) -> Path:
    """The Hugging Face folder both tools load: the default model's safetensors cache, or the random Qwen."""
    from tuneforge.models.zoo import ZOO, ensure_cached

    default = ensure_cached(ZOO[job_defs.DEFAULT_MODEL])
    if name == job_defs.DEFAULT_MODEL:
        return default
    folder = Path(lf_runner.venv_dir()).parent / "models" / name
    if not (folder / "config.json").is_file():
        _build_random_qwen(folder, default)
    return folder


def _build_random_qwen(folder: Path, tokenizer_from: Path) -> None:
    """A Qwen2.5-0.5B-shaped model with random weights (seed 0) and the default model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    Qwen2ForCausalLM(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)


def _row(run: ToolRun, label: str, tokens: Any, flops_per_token: float | None, peak: float, cuda: bool) -> dict:
    ok = run.returncode == 0
    wall = run.wall_s
    real, supervised = tokens
    row: dict[str, Any] = {"tool": run.tool, "label": label, "ok": ok, "returncode": run.returncode, "wall_s": wall}
    row["real_tokens_per_s"] = real / wall if ok else None
    row["supervised_tokens_per_s"] = supervised / wall if ok else None
    flops = flops_per_token * real / wall if ok and flops_per_token else None
    row["flops_per_s"] = flops
    row["flops_share"] = flops / (peak * 1e9) if flops else None
    row["peak_memory_bytes"] = run.peak_cuda if cuda else run.peak_rss
    row["memory"] = "CUDA" if cuda else "RSS"
    row["peak_rss_bytes"] = run.peak_rss
    row["mean_loss"] = run.mean_loss if ok else None
    return row


def _check(run: ToolRun) -> None:
    if run.returncode != 0:
        print(f"!! {run.tool} exited {run.returncode}; the end of {run.log}:\n{measure.log_tail(Path(run.log))}")


def _train(job: Job, work: Path, data: Path, model_dir: Path, env: dict[str, str], result: dict) -> list[ToolRun]:
    model = job.model if job.model == job_defs.DEFAULT_MODEL else str(model_dir)
    cuda = job.device == "cuda"
    tf_cfg = tf_runner.write_config(job_defs.tuneforge_config(job, data, model, work / "tf-run"), work / "tf.yaml")
    estimate = tf_runner.estimate(tf_cfg, env)
    result["estimate"] = estimate
    print(f"== {job.name}: tuneforge train ({work / 'tf.log'})", flush=True)
    tf = tf_runner.train(tf_cfg, work / "tf-run", env, work / "tf.log", cuda)
    _check(tf)
    python, result["llamafactory_env"] = lf_runner.ensure_venv()
    lf_cfg = job_defs.llamafactory_config(job, data.parent, model_dir, work / "lf-out")
    lf_yaml = lf_runner.write_inputs(lf_cfg, job_defs.llamafactory_dataset_info(job, data), work)
    print(f"== {job.name}: llamafactory-cli train ({work / 'lf.log'})", flush=True)
    lf = lf_runner.train(python, lf_yaml, work / "lf-out", lf_runner.tool_env(env, work), work / "lf.log", cuda)
    _check(lf)
    if "memory_bytes" in estimate and tf.returncode == 0:
        measured = {
            "measured_peak_bytes": tf.peak_cuda if cuda else tf.peak_rss,
            "measured_train_s": tf.train_s if tf.train_s is not None else tf.wall_s,
            "measured_steps": tf.steps,
        }
        result["estimate_vs_measured"] = {**_estimated(estimate, job.epochs), **measured}
    return [tf, lf]


def _estimated(estimate: dict, epochs: float) -> dict:
    return {
        "estimate_peak_bytes": estimate["memory_bytes"]["total"],
        "estimate_train_s": (estimate["seconds_per_epoch"] or 0) * epochs,
        "estimate_steps": estimate["total_steps"],
    }


def re_estimate(path: Path) -> None:
    """Run `tuneforge estimate` again on a saved result's job (its work folder must still be there) and record it
    beside the measured run: how a change to the estimate compares with what was measured."""
    result = json.loads(path.read_text(encoding="utf-8"))
    config = Path(result["work_dir"]) / "tf.yaml"
    run = result["runs"].get("tuneforge") or {}
    if not config.is_file() or run.get("returncode") != 0 or "train_s" not in run:
        raise SystemExit(f"{path}: no measured training run with its work folder ({config}) to estimate again")
    estimate = tf_runner.estimate(config, {**os.environ, **OFFLINE})
    if "memory_bytes" not in estimate:
        raise SystemExit(f"{path}: tuneforge estimate failed:\n{estimate.get('error', '')[-2000:]}")
    epochs = job_defs.select_jobs(result["job"])[0].epochs
    result["estimate"] = {**estimate, "recomputed": time.strftime("%Y-%m-%dT%H:%M:%S")}
    measured = {"measured_peak_bytes": run["peak_cuda"] or run["peak_rss"], "measured_train_s": run["train_s"]}
    result["estimate_vs_measured"] = {**_estimated(estimate, epochs), **measured, "measured_steps": run["steps"]}
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{path}: estimate recomputed")


def _prepare(job: Job, work: Path, data: Path, model_dir: Path, env: dict[str, str], result: dict) -> list[ToolRun]:
    tf_cfg = tf_runner.write_config(job_defs.tuneforge_config(job, data, job.model, work / "tf-run"), work / "tf.yaml")
    cache = work / "tf-cache"
    print(f"== {job.name}: tuneforge data preparation, cold then cached ({work})", flush=True)
    cold = tf_runner.prepare(tf_cfg, cache, env, work / "tf-prep.log")
    _check(cold)
    hit = tf_runner.prepare(tf_cfg, cache, env, work / "tf-prep-hit.log")
    _check(hit)
    python, result["llamafactory_env"] = lf_runner.ensure_venv()
    lf_cfg = job_defs.llamafactory_config(job, data.parent, model_dir, work / "lf-out")
    lf_yaml = lf_runner.write_inputs(lf_cfg, job_defs.llamafactory_dataset_info(job, data), work)
    print(f"== {job.name}: LLaMA-Factory preprocessing", flush=True)
    lf = lf_runner.prepare(python, lf_yaml, lf_runner.tool_env(env, work), work / "lf-prep.log")
    _check(lf)
    return [cold, hit, lf]


def run_job(job: Job, rows: int | None, work: Path) -> dict[str, Any]:
    """Run `job` with both tools and return its result (also what the README table is made from)."""
    from transformers import AutoTokenizer

    cuda = job.device == "cuda"
    env = {**os.environ, **OFFLINE}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    model_dir = model_folder(job.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data_rows = job_defs.job_rows(job, tokenizer, rows)
    data = job_defs.write_job_data(job, data_rows, work / "data")
    counted = measure.count_tokens(tokenizer, job_defs.count_samples(job, data_rows), job.cutoff_len)
    total_params, config = measure.count_parameters(model_dir)
    n_matmul = measure.matmul_params(config, total_params)
    per_token = measure.flops_per_token(n_matmul, job.adapter, job.method) if job.kind == "train" else None
    matmul_args = {"device": "cuda", "dtype": "bfloat16", "size": 8192} if cuda else {}
    machine = measure.machine_facts()
    machine["load_before"] = os.getloadavg()
    before = measure.matmul_gflops(**matmul_args)
    now = datetime.now()
    result: dict[str, Any] = {
        "job": job.name,
        "description": job.description,
        "order": list(job_defs.JOBS).index(job.name),
        "date": now.strftime("%Y-%m-%d"),
        "timestamp": now.isoformat(timespec="seconds"),
        "quick": rows is not None,
        "config": job.as_dict(),
        "work_dir": str(work),
        "data": {
            "file": str(data),
            "rows": len(data_rows),
            "samples": counted.samples,
            "real_tokens": counted.real,
            "supervised_tokens": counted.supervised,
            "truncated_samples": counted.truncated,
        },
        "model": {"folder": str(model_dir), "parameters": total_params, "matmul_parameters": n_matmul},
        "flops_per_token": per_token,
        "flops_note": measure.FLOPS_NOTE,
        "tokens_note": measure.TOKENS_NOTE,
    }
    if job.kind == "train":
        runs = _train(job, work, data, model_dir, env, result)
        labels = ["tuneforge", "LLaMA-Factory"]
    else:
        runs = _prepare(job, work, data, model_dir, env, result)
        labels = ["tuneforge (cold)", "tuneforge (cache hit)", "LLaMA-Factory"]
    after = measure.matmul_gflops(**matmul_args)
    machine.update(
        load_after=os.getloadavg(),
        matmul_gflops=max(before, after),
        matmul_gflops_before=before,
        matmul_gflops_after=after,
        matmul_dtype="bf16" if cuda else "fp32",
    )
    result["machine"] = machine
    lf_python = lf_runner.venv_dir() / "bin" / "python"
    result["versions"] = {
        "tuneforge": tf_runner.versions(),
        "llamafactory": lf_runner.versions(lf_python) if lf_python.is_file() else {},
    }
    tokens = (counted.real * job.epochs, counted.supervised * job.epochs)
    peak = machine["matmul_gflops"]
    result["rows"] = [_row(run, label, tokens, per_token, peak, cuda) for run, label in zip(runs, labels, strict=True)]
    result["runs"] = {label: asdict(run) for run, label in zip(runs, labels, strict=True)}
    return result


def save(result: dict[str, Any], out: Path, rows: int | None) -> Path:
    """Write the result as <date>-<job>[-rowsN].json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"-rows{rows}" if rows else ""
    path = out / f"{result['date']}-{result['job']}{suffix}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default="all", help="a job name, cpu, gpu, all, or a comma-separated list")
    parser.add_argument("--rows", type=int, default=None, help="use only this many rows (a quick check)")
    parser.add_argument("--out", default=str(OUT), help="folder for the results JSON (default benchmarks/results)")
    parser.add_argument("--work", default=None, help="work folder (default: a new one under the temp folder)")
    parser.add_argument(
        "--re-estimate", nargs="+", default=None, metavar="RESULT", help="estimate saved results again"
    )
    args = parser.parse_args(argv)
    for path in args.re_estimate or ():
        re_estimate(Path(path))
    if args.re_estimate:
        return 0
    import torch

    failed = False
    for job in job_defs.select_jobs(args.job):
        if job.device == "cuda" and not torch.cuda.is_available():
            print(f"== {job.name}: skipped, it needs a CUDA GPU and torch sees none here")
            continue
        work = Path(args.work) / job.name if args.work else Path(tempfile.mkdtemp(prefix=f"tf-bench-{job.name}-"))
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = run_job(job, args.rows, work)
        path = save(result, Path(args.out), args.rows)
        print(f"\n{render([result])}\n\n{job.name}: {time.perf_counter() - start:.0f} s; results in {path}\n")
        failed |= not all(row["ok"] for row in result["rows"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
