"""The Export and Serve tabs: `tuneforge export` and `tuneforge serve` as jobs, with progress and log.

The page never exports or serves in its own process: it runs the same commands a user would type, so a merged
model, a GGUF file or an Ollama folder, and the API server, are exactly what the command line makes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr

from tuneforge.errors import UserError
from tuneforge.export import EXPORTERS, GGUF_TYPES
from tuneforge.models.zoo import ZOO
from tuneforge.serve.loading import DEFAULT_ENGINE, engine_choices
from tuneforge.webui.chat_tab import chat_choices
from tuneforge.webui.configs import cli_argv
from tuneforge.webui.context import UIContext
from tuneforge.webui.i18n import text
from tuneforge.webui.widgets import Texts, job_panel, panel_update

__all__ = [
    "build_export_tab",
    "build_serve_tab",
    "default_export_dir",
    "serve_url",
    "start_export",
    "start_server",
]

_DTYPES = ["auto", "float32", "bfloat16", "float16"]
_SERVING = re.compile(r"serving .* on (http://\S+/v1)")


def default_export_dir(run: str | None, fmt: str) -> str:
    """exported/<run name>-<format>."""
    return f"exported/{Path(run).name if run else 'model'}-{fmt}"


def start_export(
    ctx: UIContext,
    lang: str,
    run: str | None,
    fmt: str,
    gguf_type: str,
    dtype: str,
    target: str,
    force: bool,
) -> str:
    """Run `tuneforge export RUN --to DIR --format F ...` as a job; returns the answer shown under Start."""
    try:
        if not run:
            raise UserError(text("eval.pick_run", lang))
        source = ctx.ws.display(ctx.ws.resolve(run, "run"))
        out = ctx.ws.display(ctx.ws.resolve(target or default_export_dir(run, fmt), "export folder", output=True,
                                            must_exist=False))  # fmt: skip
        args = [source, "--to", out, "--format", fmt, "--gguf-type", gguf_type, "--dtype", dtype]
        ctx.jobs.start("export", cli_argv("export", *args, *(["--force"] if force else [])), ctx.ws.root, out)
    except UserError as err:
        return f"⚠ {err}"
    return text("job.started", lang)


def serve_url(log: str) -> str | None:
    """The server's API address, once its log says it is serving."""
    found = _SERVING.findall(" ".join(log.split()))  # a long line may have been wrapped
    return found[-1] if found else None


def start_server(
    ctx: UIContext, lang: str, model: str | None, host: str, port: float | None, engine: str, api_key: str
) -> str:
    """Run `tuneforge serve MODEL --host H --port P` as a job (the API key goes by environment)."""
    try:
        if not model:
            raise UserError(text("serve.pick_model", lang))
        source = model if model in ZOO else ctx.ws.display(ctx.ws.resolve(model, "model"))
        port_number = int(port or 8000)
        args = [source, "--host", (host or "127.0.0.1").strip(), "--port", port_number, "--engine", engine]
        env = {"TUNEFORGE_API_KEY": api_key} if api_key else {}  # never on the command line (process lists show it)
        ctx.jobs.start("serve", cli_argv("serve", *args), ctx.ws.root, f"{host}:{port_number}", env=env)
    except UserError as err:
        return f"⚠ {err}"
    return text("job.started", lang)


def _tick(ctx: UIContext, kind: str, lang: str, shown: str) -> list[Any]:
    """The panel of the latest `kind` job (and, for a server, its address), only what changed."""
    job = ctx.jobs.latest(kind)
    view = job.view() if job is not None else None
    values, signature = panel_update(view, lang, shown)
    if kind == "serve" and signature != shown:
        url = serve_url(view.log) if view is not None and view.running else None
        values.append(text("serve.url", lang, url=url) if url else text("serve.not_running", lang))
    elif kind == "serve":
        values.append(gr.skip())
    return [*values, signature]


def build_export_tab(ctx: UIContext, texts: Texts, lang_box: Any) -> Any:
    """Lay out the Export tab; returns its run picker."""
    lang = ctx.lang
    formats = EXPORTERS.names()
    with gr.Row(equal_height=False):
        run = texts.add(gr.Dropdown(choices=ctx.run_choices(), label=text("eval.run", lang), allow_custom_value=True,
                                    scale=3, elem_id="export-run"), label="eval.run")  # fmt: skip
        refresh = texts.add(gr.Button(text("train.refresh", lang), size="sm", scale=0), value="train.refresh")
    with gr.Row(equal_height=False):
        fmt = texts.add_fn(
            gr.Dropdown(choices=[(f"{n} — {text(f'export.{n}', lang)}", n) for n in formats], value="hf",
                        label=text("export.format", lang)),
            lambda lg: {"choices": [(f"{n} — {text(f'export.{n}', lg)}", n) for n in formats],
                        "label": text("export.format", lg)},
        )  # fmt: skip
        gguf_type = texts.add(gr.Dropdown(choices=list(GGUF_TYPES), value="f16", label=text("export.gguf_type", lang)),
                              label="export.gguf_type")  # fmt: skip
        dtype = texts.add(gr.Dropdown(choices=_DTYPES, value="auto", label=text("export.dtype", lang)),
                          label="export.dtype")  # fmt: skip
    with gr.Row(equal_height=False):
        target = texts.add(gr.Textbox(default_export_dir(None, "hf"), label=text("export.target", lang),
                                      info=text("export.target_help", lang)),
                           label="export.target", info="export.target_help")  # fmt: skip
        force = texts.add(gr.Checkbox(False, label=text("export.force", lang), info=text("export.force_help", lang)),
                          label="export.force", info="export.force_help")  # fmt: skip
    with gr.Row():
        start = texts.add(gr.Button(text("export.start", lang), variant="primary"), value="export.start")
        stop = texts.add(gr.Button(text("train.stop", lang), variant="stop"), value="train.stop")
    panel = job_panel(texts, lang, "export")

    for trigger in (run.change, fmt.change):
        trigger(default_export_dir, [run, fmt], target)
    refresh.click(lambda: gr.update(choices=ctx.run_choices()), None, run)
    start.click(
        lambda *a: start_export(ctx, *a),
        [lang_box, run, fmt, gguf_type, dtype, target, force],
        panel.message,
        show_progress="hidden",
    )
    stop.click(lambda: ctx.jobs.stop_latest("export"), None, None)
    shown = gr.State("")
    gr.Timer(2.0).tick(lambda lg, s: _tick(ctx, "export", lg, s), [lang_box, shown], [*panel.outputs, shown],
                       show_progress="hidden")  # fmt: skip
    return run


def build_serve_tab(ctx: UIContext, texts: Texts, lang_box: Any) -> Any:
    """Lay out the Serve tab; returns its model picker."""
    lang = ctx.lang
    with gr.Row(equal_height=False):
        model = texts.add(gr.Dropdown(choices=chat_choices(ctx), label=text("chat.model", lang), allow_custom_value=True,
                                      scale=3, elem_id="serve-model"), label="chat.model")  # fmt: skip
        refresh = texts.add(gr.Button(text("train.refresh", lang), size="sm", scale=0), value="train.refresh")
    with gr.Row(equal_height=False):
        host = texts.add(gr.Textbox("127.0.0.1", label=text("serve.host", lang), info=text("serve.host_help", lang)),
                         label="serve.host", info="serve.host_help")  # fmt: skip
        port = texts.add(gr.Number(8000, precision=0, label=text("serve.port", lang)), label="serve.port")
        engine = texts.add(gr.Dropdown(choices=engine_choices(), value=DEFAULT_ENGINE, label=text("serve.engine", lang)),
                           label="serve.engine")  # fmt: skip
        api_key = texts.add(gr.Textbox(type="password", label=text("serve.api_key", lang),
                                       info=text("serve.api_key_help", lang)),
                            label="serve.api_key", info="serve.api_key_help")  # fmt: skip
    with gr.Row():
        start = texts.add(gr.Button(text("serve.start", lang), variant="primary"), value="serve.start")
        stop = texts.add(gr.Button(text("serve.stop", lang), variant="stop"), value="serve.stop")
    url = gr.Markdown(text("serve.not_running", lang), elem_id="serve-url")
    panel = job_panel(texts, lang, "serve")

    refresh.click(lambda: gr.update(choices=chat_choices(ctx)), None, model)
    start.click(
        lambda *a: start_server(ctx, *a),
        [lang_box, model, host, port, engine, api_key],
        panel.message,
        show_progress="hidden",
    )
    stop.click(lambda: ctx.jobs.stop_latest("serve"), None, None)
    shown = gr.State("")
    gr.Timer(2.0).tick(lambda lg, s: _tick(ctx, "serve", lg, s), [lang_box, shown], [*panel.outputs, url, shown],
                       show_progress="hidden")  # fmt: skip
    return model
