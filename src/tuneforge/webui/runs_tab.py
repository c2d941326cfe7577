"""The Runs and Evaluate tabs: every run of the workspace, and a run's before/after report.

The report is the one `tuneforge train` writes at the end of a run with eval questions (eval/compare.*); for a
run without one, the tab runs `tuneforge compare --base BASE --tuned RUN` as a job and shows its report.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from tuneforge.errors import UserError
from tuneforge.models.rundir import is_run_dir, read_run_record
from tuneforge.webui.configs import cli_argv
from tuneforge.webui.context import UIContext
from tuneforge.webui.i18n import text
from tuneforge.webui.runs import file_url, read_report, run_info, runs_table_html
from tuneforge.webui.widgets import Texts, job_panel, panel_update

__all__ = ["build_evaluate_tab", "build_runs_tab", "report_view", "runs_html", "start_compare"]

_HEADERS = ("runs.name", "runs.status", "runs.method", "runs.adapter", "runs.base", "runs.steps", "runs.best_val",
            "runs.final_loss", "runs.reports")  # fmt: skip


def runs_html(ctx: UIContext, lang: str) -> str:
    """The runs table, live runs marked."""
    infos = [run_info(path) for path in ctx.ws.run_dirs()]
    for info in infos:
        if Path(info.base_model).is_absolute():
            info.base_model = ctx.ws.display(Path(info.base_model))
    if not infos:
        return f"<p>{html.escape(text('runs.none', lang, folder=str(ctx.ws.runs_dir)))}</p>"
    live = {ctx.ws.root / job.target for job in ctx.jobs.running("train")}
    return runs_table_html(infos, [text(key, lang) for key in _HEADERS], live)


def _totals(record: dict[str, Any] | None, lang: str) -> str:
    if not record:
        return ""
    outcomes = record.get("outcomes") or {}
    parts = [f"**{html.escape(str(k))}**: {html.escape(str(v))}" for k, v in outcomes.items()]
    metrics = record.get("metrics") or {}
    parts += [f"{html.escape(str(k))}: {v}" for k, v in metrics.items()]
    forgetting = record.get("forgetting")
    if forgetting:
        parts.append(text("eval.forgetting", lang, base=forgetting.get("base"), tuned=forgetting.get("tuned")))
    return " · ".join(parts)


def report_view(ctx: UIContext, typed: str | None, lang: str) -> tuple[str, str, str]:
    """(summary line, report links, compare.md) of the chosen run."""
    if not typed:
        return text("eval.pick_run", lang), "", ""
    try:
        run_dir = ctx.ws.resolve(typed, "run")
    except UserError as err:
        return f"⚠ {err}", "", ""
    markdown, record = read_report(run_dir)
    info = run_info(run_dir)
    links = " · ".join(
        f'<a href="{html.escape(file_url(path))}" target="_blank">{html.escape(name)}</a>'
        for name, path in info.reports.items()
    )
    if not markdown:
        return text("eval.no_report", lang, run=info.name), links, ""
    return _totals(record, lang) or text("eval.report_of", lang, run=info.name), links, markdown


def start_compare(
    ctx: UIContext,
    lang: str,
    typed: str | None,
    questions: str | None,
    general: str | None,
    max_new_tokens: float | None,
) -> str:
    """Run `tuneforge compare --base BASE --tuned RUN ...` as a job; its report lands in RUN/eval."""
    try:
        if not typed:
            raise UserError(text("eval.pick_run", lang))
        run_dir = ctx.ws.resolve(typed, "run")
        if not is_run_dir(run_dir):
            raise UserError(f"{typed}: not a finished run (no model yet)")
        if not questions and not general:
            raise UserError(text("eval.need_questions", lang))
        args: list[Any] = ["--base", read_run_record(run_dir).base_model, "--tuned", ctx.ws.display(run_dir)]
        names = ctx.ws.data_choices()
        if questions:
            args += ["--questions", ctx.ws.safe_entry(questions, "questions", names)]
        if general:
            args += ["--general", ctx.ws.safe_entry(general, "general set", names)]
        args += ["--max-new-tokens", int(max_new_tokens or 64)]
        ctx.jobs.start("compare", cli_argv("compare", *args), ctx.ws.root, ctx.ws.display(run_dir))
    except UserError as err:
        return f"⚠ {err}"
    return text("job.started", lang)


def build_evaluate_tab(ctx: UIContext, texts: Texts, lang_box: Any) -> Any:
    """Lay out the Evaluate tab; returns its run picker (refreshed when the tab is opened)."""
    lang = ctx.lang
    with gr.Row(equal_height=False):
        run = texts.add(gr.Dropdown(choices=ctx.run_choices(), label=text("eval.run", lang), allow_custom_value=True,
                                    elem_id="eval-run", scale=3), label="eval.run")  # fmt: skip
        refresh = texts.add(gr.Button(text("train.refresh", lang), size="sm", scale=0), value="train.refresh")
    summary = gr.Markdown(text("eval.pick_run", lang), elem_id="eval-summary")
    links = gr.HTML("", elem_id="eval-links")
    report = gr.Markdown("", elem_id="eval-report")
    with texts.add(gr.Accordion(text("eval.compare", lang), open=False), label="eval.compare"):
        with gr.Row(equal_height=False):
            questions = texts.add(gr.Dropdown(choices=ctx.ws.data_choices(), value="demo_questions",
                                              allow_custom_value=True, label=text("eval.questions", lang)),
                                  label="eval.questions")  # fmt: skip
            general = texts.add(gr.Dropdown(choices=["", *ctx.ws.data_choices()], value="", allow_custom_value=True,
                                            label=text("eval.general", lang)), label="eval.general")  # fmt: skip
            max_new = texts.add(gr.Number(64, precision=0, label=text("eval.max_new_tokens", lang)),
                                label="eval.max_new_tokens")  # fmt: skip
        with gr.Row():
            start = texts.add(gr.Button(text("eval.start", lang), variant="primary"), value="eval.start")
            stop = texts.add(gr.Button(text("train.stop", lang), variant="stop"), value="train.stop")
        panel = job_panel(texts, lang, "compare")
    seen = gr.State("")

    show = [lang_box, run]
    run.change(lambda lg, r: report_view(ctx, r, lg), show, [summary, links, report])
    refresh.click(lambda: gr.update(choices=ctx.run_choices()), None, run)
    start.click(
        lambda lg, *a: start_compare(ctx, lg, *a),
        [lang_box, run, questions, general, max_new],
        panel.message,
        show_progress="hidden",
    )
    stop.click(lambda: ctx.jobs.stop_latest("compare"), None, None)

    def tick(lg: str, typed: str | None, last: str) -> list[Any]:
        job = ctx.jobs.latest("compare")
        view = job.view() if job is not None else None
        shown_panel, _, shown_state = last.partition("|")
        panel, signature = panel_update(view, lg, shown_panel)
        state = f"{job.id}:{view.state}" if job is not None and view is not None else ""
        changed = state != shown_state and view is not None and not view.running
        report = list(report_view(ctx, typed, lg)) if changed else [gr.skip()] * 3
        return [*panel, f"{signature}|{state}", *report]

    gr.Timer(2.0).tick(tick, [lang_box, run, seen], [*panel.outputs, seen, summary, links, report],
                       show_progress="hidden")  # fmt: skip
    return run


def build_runs_tab(ctx: UIContext, texts: Texts, lang_box: Any) -> Any:
    """Lay out the Runs tab; returns its table (refreshed when the tab is opened)."""
    lang = ctx.lang
    texts.add(gr.Markdown(text("runs.intro", lang)), value="runs.intro")
    refresh = texts.add(gr.Button(text("train.refresh", lang), size="sm"), value="train.refresh")
    table = gr.HTML(runs_html(ctx, lang), elem_id="runs-table")
    refresh.click(lambda lg: runs_html(ctx, lg), lang_box, table)
    lang_box.change(lambda lg: runs_html(ctx, lg), lang_box, table)
    return table
