"""What the Export, Serve, Evaluate and Chat tabs do with a finished run: the same commands a user types, run as
jobs, and answers the model really gives (side by side: the run and its base)."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from webui_helpers import make_workspace

import tuneforge.methods  # noqa: F401
from e2e.cli_helpers import MEMORISE, run_cli
from tuneforge.models.generate import generate_replies
from tuneforge.models.load import load_model
from tuneforge.webui.chat import ChatModels
from tuneforge.webui.chat_tab import send_message
from tuneforge.webui.context import UIContext
from tuneforge.webui.deploy_tab import serve_url, start_export, start_server
from tuneforge.webui.forms import form_fields
from tuneforge.webui.jobs import JobManager
from tuneforge.webui.runs_tab import report_view, start_compare
from tuneforge.webui.workspace import Workspace


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> UIContext:
    """A workspace with a finished 3-step LoRA run, runs/r."""
    root = make_workspace(tmp_path_factory.mktemp("tabs") / "ws", tiny_llama_dir)
    config = root / "configs" / "r.yaml"
    config.parent.mkdir()
    config.write_text(
        "model: {name_or_path: models/tiny}\ndata: {train: [data/memorise.jsonl], cutoff_len: 64, val_size: 0}\n"
        "train: {max_steps: 3, batch_size: 4, grad_accum: 1, learning_rate: 0.01}\noutput: {dir: runs/r}\n",
        encoding="utf-8",
    )
    result = run_cli("train", "configs/r.yaml", cwd=root)
    assert result.returncode == 0, result.stderr
    ws = Workspace(root)
    return UIContext(ws, JobManager(ws.jobs_dir), ChatModels(), form_fields())


def test_export_runs_tuneforge_export_into_the_workspace(ctx: UIContext) -> None:
    assert start_export(ctx, "en", "runs/r", "hf", "f16", "auto", "", False) == "Started."
    job = ctx.jobs.latest("export")
    assert job.argv == [sys.executable, "-m", "tuneforge.cli.main", "export", "runs/r", "--to", "exported/r-hf",
                        "--format", "hf", "--gguf-type", "f16", "--dtype", "auto"]  # fmt: skip
    assert job.wait(240) == 0, job.view().log
    exported = ctx.ws.root / "exported" / "r-hf"
    assert json.loads((exported / "config.json").read_text())["model_type"] == "llama"
    assert list(exported.glob("*.safetensors"))
    refused = start_export(ctx, "en", "runs/r", "hf", "f16", "auto", "../elsewhere", False)
    assert refused.startswith("⚠ export folder: '../elsewhere' is outside the workspace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_starts_shows_its_address_and_stops(ctx: UIContext) -> None:
    port = _free_port()
    assert start_server(ctx, "en", "runs/r", "127.0.0.1", port, "transformers", "") == "Started."
    job = ctx.jobs.latest("serve")
    deadline = time.monotonic() + 180
    while serve_url(job.view().log) is None:
        assert job.process.poll() is None, job.view().log
        assert time.monotonic() < deadline, job.view().log
        time.sleep(0.2)
    url = serve_url(job.view().log)
    assert url == f"http://127.0.0.1:{port}/v1"
    with urllib.request.urlopen(f"{url}/models", timeout=30) as response:
        assert [m["id"] for m in json.load(response)["data"]] == ["tiny", "r"]  # the base and the run's adapter
    ctx.jobs.stop_latest("serve")
    job.wait(60)
    assert job.view().state == "stopped"


def test_serving_beyond_this_machine_needs_an_api_key(ctx: UIContext) -> None:
    assert start_server(ctx, "en", "runs/r", "0.0.0.0", _free_port(), "transformers", "") == "Started."
    job = ctx.jobs.latest("serve")
    assert job.wait(120) == 2
    assert "tuneforge: error: binding 0.0.0.0 exposes the model to the network" in job.view().log


def test_compare_writes_the_report_the_evaluate_tab_shows(ctx: UIContext) -> None:
    summary, _, report = report_view(ctx, "runs/r", "en")
    assert summary.startswith("r has no before/after report yet") and report == ""
    assert start_compare(ctx, "en", "runs/r", "data/questions.json", "", 8) == "Started."
    job = ctx.jobs.latest("compare")
    assert job.argv[3:] == ["compare", "--base", str(ctx.ws.root / "models" / "tiny"), "--tuned", "runs/r",
                            "--questions", "data/questions.json", "--max-new-tokens", "8"]  # fmt: skip
    assert job.wait(240) == 0, job.view().log
    summary, links, report = report_view(ctx, "runs/r", "en")
    assert MEMORISE[0][0] in report and MEMORISE[1][0] in report
    assert "compare.html" in links and "⚠" not in summary
    assert start_compare(ctx, "en", "runs/r", "", "", 8) == "⚠ Give questions and/or a general-ability set."


def test_side_by_side_chat_answers_as_the_run_and_as_its_base(ctx: UIContext) -> None:
    prompt = MEMORISE[2][0]
    frames = list(send_message(ctx, "en", "runs/r", "side", "", 24, 0, False, prompt, [], []))
    tuned, base, box, status = frames[-1]
    assert (box, status) == ("", "")
    conversation = [[{"role": "user", "content": prompt}]]
    run = load_model(str(ctx.ws.root / "runs" / "r"))
    original = load_model(str(ctx.ws.root / "models" / "tiny"))
    expected_tuned = generate_replies(run.model, run.tokenizer, conversation, 24)[0].text or "(empty answer)"
    expected_base = generate_replies(original.model, original.tokenizer, conversation, 24)[0].text or "(empty answer)"
    assert tuned == [{"role": "user", "content": prompt}, {"role": "assistant", "content": expected_tuned}]
    assert base == [{"role": "user", "content": prompt}, {"role": "assistant", "content": expected_base}]
    assert expected_tuned != expected_base  # training changed the answer: the base column is not the run again
    assert len(frames) > 2  # streamed, not one final update


def test_chat_refuses_models_outside_the_workspace(ctx: UIContext) -> None:
    frames = list(send_message(ctx, "en", "/etc", "single", "", 8, 0, False, "hi", [], []))
    assert frames[-1][3].startswith("⚠ model: '/etc' is outside the workspace " + str(ctx.ws.root))


def test_job_panels_resend_only_what_changed() -> None:
    import gradio as gr

    from tuneforge.webui.jobs import JobView
    from tuneforge.webui.widgets import panel_update

    view = JobView("1", "train", "runs/a", "finished", 0, None, "line 1\nline 2", 100.0, 130.0)
    first, signature = panel_update(view, "en", "")
    assert first == ["**finished** · runs/a · 30 s", "", "line 1\nline 2"]
    again, same = panel_update(view, "en", signature)
    assert (again, same) == ([gr.skip(), gr.skip(), gr.skip()], signature)
    longer = JobView("1", "train", "runs/a", "finished", 0, None, "line 1\nline 2\nline 3", 100.0, 130.0)
    third, _ = panel_update(longer, "en", signature)
    assert third == [gr.skip(), gr.skip(), "line 1\nline 2\nline 3"]
    chinese, _ = panel_update(view, "中文", signature)
    assert chinese[0] == "**已完成** · runs/a · 30 s"
