"""The Train tab: the form, its live YAML and CLI command, the data preview, Save/Load, Start/Stop and progress.

Start writes the form's YAML to configs/<run>.yaml and runs `tuneforge train configs/<run>.yaml` in the
workspace (an argument list, see tuneforge.webui.jobs); the panel below follows the latest training job of the
server, so a reloaded page shows the running job again with its log and loss curve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from tuneforge.errors import UserError
from tuneforge.webui.configs import (
    check_data_fits,
    check_output,
    config_file_for,
    form_config,
    import_config,
    read_config_file,
    save_config,
    train_argv,
    train_command_text,
)
from tuneforge.webui.context import UIContext
from tuneforge.webui.forms import assemble, values_from_config
from tuneforge.webui.i18n import text
from tuneforge.webui.preview import preview_data
from tuneforge.webui.runs import loss_figure, loss_points
from tuneforge.webui.train_form import TrainForm, build_form, method_info, wire_form
from tuneforge.webui.widgets import Texts, job_panel, panel_update

__all__ = ["build_train_tab", "loss_plot"]

_MULTI_PICKERS = ("data.train", "data.dataset")


def loss_plot(run_dir: Path | None, lang: str) -> Any:
    """The run's loss curves (a matplotlib figure), or None before the first logged step."""
    points = loss_points(run_dir) if run_dir is not None else []
    if not points or run_dir is None:
        return None
    return loss_figure(points, run_dir.name, text("train.step", lang), text("train.loss", lang))


def _describe(ctx: UIContext, form: TrainForm, lang: str, args: tuple[Any, ...]) -> tuple[str, str, str]:
    """The live preview: (YAML, command, check line) of the form as it stands."""
    method, adapter, values = form.read(args)
    try:
        raw = assemble(ctx.specs, values, method, adapter)
    except UserError as err:
        return "", "", f"⚠ {err}"
    try:
        formed = form_config(ctx.specs, values, method, adapter, ctx.ws)
    except UserError as err:
        return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), "", f"⚠ {err}"
    command = train_command_text(config_file_for(ctx.ws, formed.raw["output"]["dir"]), ctx.ws)
    return formed.yaml(), command, "✓ " + text("train.valid", lang)


def _start(ctx: UIContext, form: TrainForm, lang: str, args: tuple[Any, ...]) -> str:
    method, adapter, values = form.read(args)
    try:
        formed = form_config(ctx.specs, values, method, adapter, ctx.ws)
        checked = form_config(ctx.specs, values, method, adapter, ctx.ws, absolute=True)
        check_output(checked.config, ctx.ws)
        kinds = check_data_fits(checked.config, ctx.ws)
        config_file = save_config(ctx.ws, formed)
        ctx.jobs.start(
            "train", train_argv(config_file, ctx.ws), ctx.ws.root, formed.raw["output"]["dir"], exclusive=True
        )
    except UserError as err:
        return f"⚠ {err}"
    rows = ", ".join(f"{text(f'kind.{kind}', lang)} {count}" for kind, count in sorted(kinds.items()))
    return text("train.started", lang, config=ctx.ws.display(config_file), rows=rows)


def _preview(ctx: UIContext, form: TrainForm, lang: str, args: tuple[Any, ...]) -> tuple[str, str, str]:
    method, adapter, values = form.read(args)
    try:
        checked = form_config(ctx.specs, values, method, adapter, ctx.ws, absolute=True)
        shown = preview_data(checked.config, ctx.ws, lang)
    except UserError as err:
        return f"⚠ {err}", "", ""
    return ("✓ " if shown.fits else "⚠ ") + shown.method_check, shown.samples_html, shown.report


def _load(ctx: UIContext, form: TrainForm, lang: str, typed: str | None) -> list[Any]:
    """Every form input set from a saved config, then the status line."""
    unchanged = [gr.skip()] * len(form.inputs)
    if not typed:
        return [*unchanged, "⚠ " + text("train.pick_config", lang), gr.skip()]
    try:
        config = read_config_file(ctx.ws, typed)
    except UserError as err:
        return [*unchanged, f"⚠ {err}", gr.skip()]
    values = values_from_config(ctx.specs, config)
    for key in _MULTI_PICKERS:
        values[key] = [str(v) for v in (config.data.train if key == "data.train" else config.data.dataset)]
    fields = [values[spec.key] for spec in form.specs]
    status = "✓ " + text("train.loaded", lang, config=typed)
    return [config.method.name, config.adapter.name, *fields, status, method_info(config.method.name, lang)]


def _tick(ctx: UIContext, lang: str, shown: str) -> list[Any]:
    """The job panel of the latest training job, its loss curve and the buttons, each sent only when it changed."""
    job = ctx.jobs.latest("train")
    view = job.view() if job is not None else None
    shown_panel, shown_plot, shown_running = (shown.split("|") + ["", "", ""])[:3]
    panel, panel_signature = panel_update(view, lang, shown_panel)
    run_dir = ctx.ws.root / job.target if job is not None else None
    metrics = run_dir / "metrics.jsonl" if run_dir is not None else None
    size = metrics.stat().st_size if metrics is not None and metrics.is_file() else 0
    plot_signature = f"{job.id if job else ''}:{size}:{lang}"
    plot = gr.skip() if plot_signature == shown_plot else loss_plot(run_dir, lang)
    running = str(view is not None and view.running)
    buttons = [gr.update(interactive=running == "False"), gr.update(interactive=running == "True")]
    if running == shown_running:
        buttons = [gr.skip(), gr.skip()]
    return [*panel, plot, f"{panel_signature}|{plot_signature}|{running}", *buttons]


def build_train_tab(ctx: UIContext, texts: Texts, lang_box: Any) -> list[tuple[Any, list[Any], list[Any]]]:
    """Lay out the Train tab and wire its events (call inside a gr.Tab); returns its page-load events
    (function, inputs, outputs): the live YAML preview, and the running job's config back in a reloaded form."""
    lang = ctx.lang
    form = build_form(ctx.specs, ctx.ws, lang, texts)
    wire_form(form, ctx.ws, lang_box)
    inputs = [lang_box, *form.inputs]

    with texts.add(gr.Accordion(text("train.preview", lang), open=False), label="train.preview"):
        preview_button = texts.add(
            gr.Button(text("train.preview_button", lang), elem_id="train-preview-button"), value="train.preview_button"
        )
        preview_check = gr.Markdown("", elem_id="preview-check")
        preview_samples = gr.HTML("", elem_id="preview-samples")
        preview_report = texts.add(
            gr.Textbox(label=text("train.report", lang), lines=8, max_lines=20), label="train.report"
        )
    with texts.add(gr.Accordion(text("train.config", lang), open=True), label="train.config"):
        with gr.Row(equal_height=False):
            config_yaml = texts.add(gr.Code(language="yaml", label=text("train.yaml", lang), lines=12,
                                            interactive=False, elem_id="config-yaml"), label="train.yaml")  # fmt: skip
            with gr.Column():
                command = texts.add(gr.Textbox(label=text("train.command", lang), lines=2, interactive=False,
                                               buttons=["copy"], elem_id="cli-command"), label="train.command")  # fmt: skip
                check = gr.Markdown("", elem_id="config-check")
                texts.add(gr.Markdown(text("train.estimate", lang), elem_id="estimate"), value="train.estimate")
        with gr.Row(equal_height=False):
            save_name = texts.add(
                gr.Textbox(label=text("train.save_name", lang), placeholder="my-run"), label="train.save_name"
            )
            save_button = texts.add(gr.Button(text("train.save", lang)), value="train.save")
            saved = texts.add(gr.Dropdown(choices=ctx.ws.config_files(), label=text("train.saved", lang),
                                          allow_custom_value=True), label="train.saved")  # fmt: skip
            load_button = texts.add(gr.Button(text("train.load", lang)), value="train.load")
            load_file = texts.add(gr.File(label=text("train.load_file", lang), file_types=[".yaml", ".yml"], height=90),
                                  label="train.load_file")  # fmt: skip
        config_status = gr.Markdown("", elem_id="config-status")
    with gr.Row():
        start = texts.add(
            gr.Button(text("train.start", lang), variant="primary", elem_id="train-start"), value="train.start"
        )
        stop = texts.add(gr.Button(text("train.stop", lang), variant="stop", interactive=False, elem_id="train-stop"),
                         value="train.stop")  # fmt: skip
    panel = job_panel(texts, lang, "train")
    plot = texts.add(
        gr.Plot(label=text("train.loss_curve", lang), elem_id="loss-plot", format="png"), label="train.loss_curve"
    )
    shown = gr.State("")
    timer = gr.Timer(1.0)

    describe = lambda lg, *args: _describe(ctx, form, lg, args)  # noqa: E731
    gr.on(
        [c.change for c in form.inputs] + [lang_box.change], describe, inputs, [config_yaml, command, check],
        show_progress="hidden", trigger_mode="always_last",
    )  # fmt: skip
    preview_button.click(lambda lg, *args: _preview(ctx, form, lg, args), inputs,
                         [preview_check, preview_samples, preview_report])  # fmt: skip
    start.click(lambda lg, *args: _start(ctx, form, lg, args), inputs, panel.message, show_progress="hidden").then(
        lambda lg, s: _tick(ctx, lg, s), [lang_box, shown], [*panel.outputs, plot, shown, start, stop],
        show_progress="hidden",
    )  # fmt: skip
    stop.click(lambda: ctx.jobs.stop_latest("train"), None, None)
    timer.tick(lambda lg, s: _tick(ctx, lg, s), [lang_box, shown], [*panel.outputs, plot, shown, start, stop],
               show_progress="hidden")  # fmt: skip

    def on_save(lg: str, name: str, *args: Any) -> tuple[str, Any]:
        method, adapter, values = form.read(args)
        try:
            path = save_config(ctx.ws, form_config(ctx.specs, values, method, adapter, ctx.ws), name or None)
        except UserError as err:
            return f"⚠ {err}", gr.skip()
        shown_path = ctx.ws.display(path)
        return "✓ " + text("train.saved_to", lg, config=shown_path), gr.update(
            choices=ctx.ws.config_files(), value=shown_path
        )

    save_button.click(on_save, [lang_box, save_name, *form.inputs], [config_status, saved])
    load_outputs = [*form.inputs, config_status, form.method_text]
    load_button.click(lambda lg, typed: _load(ctx, form, lg, typed), [lang_box, saved], load_outputs)

    def on_load_file(lg: str, path: str | None) -> list[Any]:
        if not path:
            return [gr.skip()] * (len(load_outputs) + 1)
        try:
            typed = ctx.ws.display(import_config(ctx.ws, Path(path)))
        except UserError as err:
            return [*[gr.skip()] * len(form.inputs), f"⚠ {err}", gr.skip(), gr.skip()]
        return [*_load(ctx, form, lg, typed), gr.update(choices=ctx.ws.config_files(), value=typed)]

    load_file.upload(on_load_file, [lang_box, load_file], [*load_outputs, saved])

    def restore(lg: str) -> list[Any]:
        job = ctx.jobs.latest("train")
        if job is None or not job.view(0).running:
            return [gr.skip()] * len(load_outputs)
        return _load(ctx, form, lg, job.argv[-1])  # the config file the job runs

    return [(describe, inputs, [config_yaml, command, check]), (restore, [lang_box], load_outputs)]
