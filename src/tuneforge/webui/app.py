"""The page (Train, Evaluate, Chat, Export, Serve, Runs; English or Chinese) and launching it safely.

Offline and private: Gradio's analytics are off, the theme uses the system's fonts (nothing is fetched from a
font service), server-side rendering (a Node process) and the PWA/MCP extras are off, and files are served only
from the workspace's runs folder. Binding anything but loopback, or a share link, needs --auth (the CLI checks).
Set GRADIO_ANALYTICS_ENABLED=False before importing this module (tuneforge.cli.webui does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from tuneforge.webui.chat import ChatModels
from tuneforge.webui.chat_tab import build_chat_tab, chat_choices
from tuneforge.webui.context import UIContext
from tuneforge.webui.deploy_tab import build_export_tab, build_serve_tab
from tuneforge.webui.forms import form_fields
from tuneforge.webui.i18n import LANGUAGES, text
from tuneforge.webui.jobs import JobManager
from tuneforge.webui.runs_tab import build_evaluate_tab, build_runs_tab, runs_html
from tuneforge.webui.train_tab import build_train_tab
from tuneforge.webui.widgets import Texts
from tuneforge.webui.workspace import DEFAULT_UPLOAD_LIMIT_MB, Workspace

__all__ = ["CSS", "WebUISettings", "build_app", "launch", "make_context", "theme"]

CSS = """
.tf-runs { border-collapse: collapse; width: 100%; font-size: 14px; }
.tf-runs th, .tf-runs td { padding: 4px 8px; border-bottom: 1px solid #e5e7eb; text-align: left; vertical-align: top; }
#estimate { opacity: 0.8; }
[id$="-log"] textarea { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; white-space: pre;
                        overflow-x: auto; }
"""


def theme() -> Any:
    """Gradio's default look with the system's fonts: no font is fetched from the internet."""
    return gr.themes.Default(
        font=[
            "ui-sans-serif",
            "system-ui",
            "Noto Sans CJK SC",
            "WenQuanYi Micro Hei",
            "WenQuanYi Zen Hei",
            "sans-serif",
        ],
        font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"],
    )


@dataclass
class WebUISettings:
    """How `tuneforge webui` was started."""

    workspace: Path = Path(".")
    data_dirs: list[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: tuple[str, str] | None = None
    lang: str = "en"
    upload_limit_mb: float = DEFAULT_UPLOAD_LIMIT_MB


def make_context(settings: WebUISettings) -> UIContext:
    """The server's shared state: workspace (created), jobs, chat models and the form's fields."""
    import tuneforge.methods  # noqa: F401  (registers every method's and adapter's parameters)

    ws = Workspace(settings.workspace, settings.data_dirs, settings.upload_limit_mb)
    ws.create()
    return UIContext(ws, JobManager(ws.jobs_dir), ChatModels(), form_fields(), settings.lang)


def build_app(ctx: UIContext) -> gr.Blocks:
    """The whole page."""
    lang = ctx.lang
    texts = Texts(lang)
    with gr.Blocks(title="tuneforge", analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            texts.add(gr.Markdown(text("app.title", lang), elem_id="app-title"), value="app.title")
            lang_box = gr.Radio(list(LANGUAGES.values()), value=LANGUAGES.get(lang, "English"), show_label=False,
                                elem_id="language", scale=0, min_width=220)  # fmt: skip
        with gr.Tabs():
            with texts.add(gr.Tab(text("tab.train", lang), id="train", elem_id="tab-train"), label="tab.train"):
                on_load = build_train_tab(ctx, texts, lang_box)
            with texts.add(gr.Tab(text("tab.evaluate", lang), id="evaluate", elem_id="tab-evaluate"),
                           label="tab.evaluate") as evaluate_tab:  # fmt: skip
                eval_run = build_evaluate_tab(ctx, texts, lang_box)
            with texts.add(
                gr.Tab(text("tab.chat", lang), id="chat", elem_id="tab-chat"), label="tab.chat"
            ) as chat_tab:
                chat_model = build_chat_tab(ctx, texts, lang_box)
            with texts.add(gr.Tab(text("tab.export", lang), id="export", elem_id="tab-export"),
                           label="tab.export") as export_tab:  # fmt: skip
                export_run = build_export_tab(ctx, texts, lang_box)
            with texts.add(gr.Tab(text("tab.serve", lang), id="serve", elem_id="tab-serve"),
                           label="tab.serve") as serve_tab:  # fmt: skip
                serve_model = build_serve_tab(ctx, texts, lang_box)
            with texts.add(
                gr.Tab(text("tab.runs", lang), id="runs", elem_id="tab-runs"), label="tab.runs"
            ) as runs_tab:
                runs_table = build_runs_tab(ctx, texts, lang_box)
        # opening a tab refreshes its pickers: runs finished meanwhile appear
        evaluate_tab.select(lambda: gr.update(choices=ctx.run_choices()), None, eval_run)
        export_tab.select(lambda: gr.update(choices=ctx.run_choices()), None, export_run)
        chat_tab.select(lambda: gr.update(choices=chat_choices(ctx)), None, chat_model)
        serve_tab.select(lambda: gr.update(choices=chat_choices(ctx)), None, serve_model)
        runs_tab.select(lambda lg: runs_html(ctx, lg), lang_box, runs_table)
        lang_box.change(texts.updates, lang_box, texts.components)
        for event in on_load:
            demo.load(*event, show_progress="hidden")
        demo.load(lambda lg: runs_html(ctx, lg), lang_box, runs_table, show_progress="hidden")
    return demo


def launch(settings: WebUISettings) -> None:
    """Serve the page until Ctrl-C; running jobs are then stopped gracefully (training saves a checkpoint)."""
    ctx = make_context(settings)
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=4)
    try:
        demo.launch(
            server_name=settings.host,
            server_port=settings.port,
            share=settings.share,
            auth=settings.auth,
            theme=theme(),
            css=CSS,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            enable_monitoring=False,
            footer_links=["api", "settings"],
            allowed_paths=[str(ctx.ws.runs_dir)],
            max_file_size=int(settings.upload_limit_mb * 1024 * 1024),
            show_error=True,
            inbrowser=False,
            quiet=False,
        )
    finally:
        ctx.jobs.shutdown()
