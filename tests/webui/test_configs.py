"""From form to `tuneforge train`: data that does not fit the method is refused before Start, the YAML the page
writes loads back identically through the CLI's loader, the command is an argument list, and the data preview
shows the pipeline's own rendering with supervised tokens highlighted."""

from __future__ import annotations

import html
import sys
from pathlib import Path

import pytest

import tuneforge.methods  # noqa: F401
from e2e.cli_helpers import MEMORISE
from tuneforge.config.load import load_config
from tuneforge.data.render import IGNORE_INDEX
from tuneforge.errors import UserError
from tuneforge.models.rundir import write_status
from tuneforge.webui.configs import (
    check_data_fits,
    check_output,
    form_config,
    save_config,
    train_argv,
    train_command_text,
)
from tuneforge.webui.forms import default_values, form_fields
from tuneforge.webui.preview import preview_data
from tuneforge.webui.workspace import Workspace


@pytest.fixture(scope="module")
def specs():
    return form_fields()


def form(specs, ws: Workspace, method: str, data: list[str], **more):
    values = default_values(specs)
    values.update({"model.name_or_path": "models/tiny", "data.train": data, "output.dir": "runs/a", **more})
    return form_config(specs, values, method, "lora", ws, absolute=True)


@pytest.mark.parametrize(
    ("method", "data", "refusal"),
    [
        (
            "dpo",
            "data/memorise.jsonl",
            "method 'dpo' trains on preference pairs (chosen/rejected), but the data holds conversations",
        ),
        (
            "kto",
            "data/pairs.jsonl",
            "method 'kto' trains on KTO-labelled conversations, but the data holds preference pairs",
        ),
        ("pretrain", "data/memorise.jsonl", "method 'pretrain' trains on raw text, but the data holds conversations"),
        (
            "sft",
            "data/pairs.jsonl",
            "method 'sft' trains on conversations and raw text, but the data holds preference pairs",
        ),
    ],
)
def test_data_that_does_not_fit_the_method_is_refused(specs, workspace_dir: Path, method, data, refusal) -> None:
    ws = Workspace(workspace_dir)
    with pytest.raises(UserError) as err:
        check_data_fits(form(specs, ws, method, [data]).config, ws)
    assert str(err.value).startswith(refusal)


@pytest.mark.parametrize(("method", "data", "kinds"), [
    ("dpo", "data/pairs.jsonl", {"preference": 8}),
    ("reward", "preference_demo", {"preference": None}),
    ("sft", "data/memorise.jsonl", {"chat": 8}),
    ("kto", "kto_demo", {"kto": None}),
])  # fmt: skip
def test_data_that_fits_is_counted_by_kind(specs, workspace_dir: Path, method, data, kinds) -> None:
    ws = Workspace(workspace_dir)
    found = check_data_fits(form(specs, ws, method, [data]).config, ws)
    assert set(found) == set(kinds)
    for kind, count in kinds.items():
        assert found[kind] == count if count is not None else found[kind] > 0


def test_the_saved_yaml_is_what_the_cli_loads(specs, workspace_dir: Path) -> None:
    ws = Workspace(workspace_dir)
    values = default_values(specs)
    values.update({
        "model.name_or_path": "models/tiny", "data.train": ["data/pairs.jsonl"], "output.dir": "runs/dpo-1",
        "method.dpo.beta": 0.25, "train.max_steps": 5, "adapter.lora.r": 4.0,
    })  # fmt: skip
    formed = form_config(specs, values, "dpo", "lora", ws)
    path = save_config(ws, formed)
    assert path == workspace_dir / "configs" / "dpo-1.yaml"
    assert path.read_text(encoding="utf-8") == (
        "method:\n  name: dpo\n  beta: 0.25\nadapter:\n  name: lora\n  r: 4\nmodel:\n  name_or_path: models/tiny\n"
        "data:\n  train:\n  - data/pairs.jsonl\ntrain:\n  max_steps: 5\noutput:\n  dir: runs/dpo-1\n"
    )
    assert load_config(path).model_dump(mode="json") == formed.config.model_dump(mode="json")
    argv = train_argv(path, ws)
    assert argv == [sys.executable, "-m", "tuneforge.cli.main", "train", "configs/dpo-1.yaml"]
    assert train_command_text(path, ws) == f"cd {workspace_dir} && tuneforge train configs/dpo-1.yaml"


def test_a_finished_run_is_not_overwritten_unless_asked(specs, workspace_dir: Path) -> None:
    ws = Workspace(workspace_dir)
    (workspace_dir / "runs" / "a").mkdir(parents=True)
    write_status(workspace_dir / "runs" / "a", "finished")
    with pytest.raises(UserError, match="already holds a finished run"):
        check_output(form(specs, ws, "sft", ["data/memorise.jsonl"]).config, ws)
    check_output(form(specs, ws, "sft", ["data/memorise.jsonl"], **{"output.overwrite": True}).config, ws)


def test_preview_highlights_exactly_the_supervised_tokens(specs, workspace_dir: Path) -> None:
    ws = Workspace(workspace_dir)
    config = form(specs, ws, "sft", ["data/memorise.jsonl"], **{"data.val_size": 0.0, "data.shuffle": False}).config
    shown = preview_data(config, ws, "en", count=1)
    assert shown.fits and shown.method_check == "sft can train on this data (chat)."
    assert "kept 8 + truncated 0 + dropped 0 = 8 rows" in shown.report
    first_sample = shown.samples_html.split('class="tf-sample"', 1)[1]
    supervised = first_sample.split('<span style="background:#bbf7d0;color:#14532d;border-radius:2px">')[1:]
    texts = [html.unescape(part.split("</span>", 1)[0]) for part in supervised]
    # the first row's answer (and its end-of-turn token) carries the loss; the question does not
    from tuneforge.data.build import build_dataset
    from tuneforge.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(workspace_dir / "models" / "tiny"))
    prepared, _ = build_dataset(config.data, tokenizer, config.train.seed, ws.root)
    sample = prepared.train[0]
    expected = tokenizer.decode(
        [t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label != IGNORE_INDEX]
    )
    assert "".join(texts) == expected
    answers = {answer: question for question, answer in MEMORISE}
    assert expected.removesuffix("<|im_end|>\n") in answers
    assert answers[expected.removesuffix("<|im_end|>\n")] in html.unescape(first_sample)  # shown, not supervised
    line = sample.source.rsplit(":", 1)[1]
    title = f"sample 1: data/memorise.jsonl:{line} (chat; {len(sample.input_ids)} tokens, {sample.supervised_tokens} supervised)"
    assert f"<b>{title}</b>" in shown.samples_html


def test_preview_in_chinese_and_with_data_the_method_refuses(specs, workspace_dir: Path) -> None:
    ws = Workspace(workspace_dir)
    shown = preview_data(form(specs, ws, "dpo", ["data/memorise.jsonl"]).config, ws, "中文", count=1)
    assert not shown.fits
    assert shown.method_check.startswith("开始时会拒绝这些数据： method 'dpo' trains on preference pairs")
    assert "个训练样本" in shown.samples_html
