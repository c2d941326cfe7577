"""`tuneforge webui` refuses to expose the page without a log-in; the runs list reads what training wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.cli.main import build_parser, main
from tuneforge.cli.webui import parse_auth
from tuneforge.errors import UserError
from tuneforge.models.rundir import write_status
from tuneforge.webui.runs import file_url, loss_points, read_report, run_info, runs_table_html


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--host", "0.0.0.0"], "binding 0.0.0.0 exposes it, and it can read your data and run training: set --auth"),
        (["--share"], "--share publishes the page on the internet"),
        (["--host", "192.168.1.5", "--auth", "admin"], "--auth must look like USER:PASS"),
        (["--auth", "admin:"], "--auth must look like USER:PASS"),
        (["--port", "70000"], "--port must be between 1 and 65535"),
        (["--workspace", "/no/such/folder"], "--workspace /no/such/folder: no such folder"),
    ],
)
def test_unsafe_or_wrong_options_are_refused_before_anything_starts(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUNEFORGE_WEBUI_AUTH", raising=False)
    assert main(["webui", *args]) == 2
    assert fragment in capsys.readouterr().err


def test_defaults_bind_loopback_and_offer_model_access_flags() -> None:
    args = build_parser(["webui"]).parse_args(["webui"])
    assert (args.host, args.port, args.share, args.auth, args.workspace) == ("127.0.0.1", 7860, False, None, ".")
    assert args.trust_remote_code is False and args.online is False  # it loads models: the shared access flags


def test_auth_parsing() -> None:
    assert parse_auth("alice:s3:cret") == ("alice", "s3:cret")
    assert parse_auth(None) is None
    with pytest.raises(UserError):
        parse_auth(":pw")


def write_run(run_dir: Path, status: dict, metrics: list[str]) -> Path:
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        "model: {name_or_path: models/tiny}\nmethod: {name: dpo}\nadapter: {name: lora, r: 8}\n", encoding="utf-8"
    )
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in metrics), encoding="utf-8")
    write_status(run_dir, **status)
    return run_dir


def test_loss_points_take_train_validation_and_per_dataset_curves(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", {"status": "running"}, [
        '{"step": 1, "loss": 2.5, "lr": 0.001}',
        '{"step": 2, "loss": 2.0, "val_loss": 2.2, "val_loss/alpaca": 2.1}',
        '{"step": 3, "loss": NaN-and-half-written',
    ])  # fmt: skip
    assert loss_points(run) == [
        {"step": 1, "loss": 2.5, "series": "train loss"},
        {"step": 2, "loss": 2.0, "series": "train loss"},
        {"step": 2, "loss": 2.2, "series": "validation loss"},
        {"step": 2, "loss": 2.1, "series": "validation: alpaca"},
    ]
    info = run_info(run)
    assert (info.status, info.method, info.adapter, info.base_model) == ("running", "dpo", "lora", "models/tiny")
    assert info.best_val_loss == 2.2  # a run in progress: the lowest logged so far


def test_a_finished_run_shows_its_record_and_reports(tmp_path: Path) -> None:
    run = write_run(tmp_path / "<i>x", {"status": "finished", "steps": 5, "best_val_loss": 1.25,
                                           "final_loss": 1.5}, [])  # fmt: skip
    (run / "eval").mkdir()
    (run / "eval" / "compare.md").write_text("| q | before | after |\n", encoding="utf-8")
    (run / "eval" / "compare.json").write_text(json.dumps({"outcomes": {"improved": 2}}), encoding="utf-8")
    (run / "eval" / "compare.html").write_text("<html></html>", encoding="utf-8")
    info = run_info(run)
    assert (info.steps, info.best_val_loss, info.final_loss) == (5, 1.25, 1.5)
    assert sorted(info.reports) == ["compare.html", "compare.md"]
    assert read_report(run) == ("| q | before | after |\n", {"outcomes": {"improved": 2}})
    table = runs_table_html([info], ["Run", "Status", "M", "A", "B", "S", "V", "F", "R"], live=set())
    assert "<b>&lt;i&gt;x</b>" in table and "<i>" not in table  # names are escaped
    assert f'href="{file_url(run / "eval" / "compare.html")}"' in table
    assert "<td>1.2500</td><td>1.5000</td>" in table
