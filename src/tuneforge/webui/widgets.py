"""Gradio pieces shared by the tabs: a widget per config field, the language switch's registry, job panels."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from tuneforge.webui.forms import FieldSpec
from tuneforge.webui.i18n import field_help, field_label, text
from tuneforge.webui.jobs import JobView

__all__ = [
    "JobPanel",
    "Texts",
    "field_widget",
    "job_panel",
    "job_panel_values",
    "panel_update",
    "job_status_text",
    "progress_html",
]


@dataclass
class Texts:
    """Every component whose words depend on the language, and how to re-word it."""

    lang: str
    items: list[tuple[Any, Callable[[str], dict[str, Any]]]] = field(default_factory=list)

    def add(self, component: Any, **keys: str) -> Any:
        """Re-word `component` on a language switch: each keyword (label, info, value, placeholder) names a key."""
        self.items.append((component, lambda lang: {prop: text(key, lang) for prop, key in keys.items()}))
        return component

    def add_fn(self, component: Any, update: Callable[[str], dict[str, Any]]) -> Any:
        """Re-word `component` with `update(lang)` → its new properties (e.g. translated choices)."""
        self.items.append((component, update))
        return component

    def field(self, component: Any, spec: FieldSpec) -> Any:
        """A config field's label and help."""
        self.items.append((component, lambda lang: {"label": field_label(spec, lang), "info": field_help(spec, lang)}))
        return component

    @property
    def components(self) -> list[Any]:
        return [component for component, _ in self.items]

    def updates(self, lang: str) -> list[Any]:
        """One gr.update per component, in `components` order."""
        return [gr.update(**update(lang)) for _, update in self.items]


def field_widget(spec: FieldSpec, lang: str, texts: Texts, value: Any = None, **extra: Any) -> Any:
    """The widget of one config field, with its label, help (`info`) and value."""
    common = {
        "label": field_label(spec, lang),
        "info": field_help(spec, lang),
        "elem_id": "f-" + spec.key.replace(".", "-"),
    }
    common.update(extra)
    if spec.kind == "bool":
        widget = gr.Checkbox(value=bool(value), **common)
    elif spec.kind == "choice":
        widget = gr.Dropdown(choices=list(spec.choices), value=value, **common)
    elif spec.kind == "multi":
        widget = gr.Dropdown(choices=list(spec.choices), value=value or [], multiselect=True, **common)
    elif spec.kind in ("int", "float") and not spec.optional:
        widget = gr.Number(value=value, precision=0 if spec.kind == "int" else None, **common)
    elif spec.kind in ("int", "float"):  # a Number shows 0 for "none": a text box shows the empty value as empty
        widget = gr.Textbox(value="" if value is None else str(value), placeholder="—", **common)
    else:
        lines = 2 if spec.kind == "yaml" else 1
        placeholder = "YAML" if spec.kind == "yaml" else ("a, b" if spec.kind in ("list", "numbers") else None)
        widget = gr.Textbox(value=value, lines=lines, placeholder=placeholder, **common)
    return texts.field(widget, spec)


def progress_html(done: int, total: int, line: str) -> str:
    """A progress bar (HTML) with its numbers and the command's own progress line."""
    share = 0 if not total else min(100.0, 100.0 * done / total)
    return (
        '<div class="tf-progress"><div style="background:#e5e7eb;border-radius:4px;height:12px">'
        f'<div style="width:{share:.1f}%;background:#16a34a;height:12px;border-radius:4px"></div></div>'
        f'<div style="font-family:monospace;font-size:12px;margin-top:4px">{html.escape(line)}</div></div>'
    )


@dataclass
class JobPanel:
    """Status, progress bar and log of a job kind; `message` answers Start (e.g. why it was refused)."""

    status: Any
    progress: Any
    log: Any
    message: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.status, self.progress, self.log]


def job_panel(texts: Texts, lang: str, kind: str) -> JobPanel:
    """The answer to Start, then the status line, progress bar and log box of the latest `kind` job."""
    message = gr.Markdown("", elem_id=f"{kind}-message")
    status = gr.Markdown(text("job.none", lang), elem_id=f"{kind}-status")
    progress = gr.HTML("", elem_id=f"{kind}-progress")
    log = texts.add(
        gr.Textbox(label=text("job.log", lang), lines=12, max_lines=12, autoscroll=True, elem_id=f"{kind}-log"),
        label="job.log",
    )
    return JobPanel(status, progress, log, message)


def job_status_text(view: JobView | None, lang: str) -> str:
    """One line: what the job is and how it stands (with the error line of a failed command)."""
    if view is None:
        return text("job.none", lang)
    elapsed = (view.ended or time.time()) - view.started
    state = text(f"state.{view.state}", lang)
    line = f"**{state}** · {html.escape(view.target)} · {elapsed:.0f} s"
    if view.state == "failed":
        errors = [row for row in view.log.splitlines() if "error" in row.lower()]
        line += f" · {text('job.exit', lang, code=view.returncode)}"
        if errors:
            line += f"\n\n`{errors[-1].strip()[:400]}`"
    return line


def panel_update(view: JobView | None, lang: str, shown: str) -> tuple[list[Any], str]:
    """The panel's status, progress and log, each a skip when `shown` (the last signature) says the page already
    shows it; and the new signature. The log is not resent every second: only when it changed."""
    values = job_panel_values(view, lang)
    parts = [f"{hash(value):x}" for value in values]
    before = shown.split(",")
    updates = [gr.skip() if i < len(before) and before[i] == part else value
               for i, (part, value) in enumerate(zip(parts, values, strict=True))]  # fmt: skip
    return updates, ",".join(parts)


def job_panel_values(view: JobView | None, lang: str) -> list[Any]:
    """The panel's status, progress and log for `view` (None: no job yet)."""
    if view is None:
        return [text("job.none", lang), "", ""]
    progress = progress_html(view.progress.done, view.progress.total, view.progress.line) if view.progress else ""
    return [job_status_text(view, lang), progress, view.log]
