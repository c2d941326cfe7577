"""The Train tab's form: model, method, adapter, data and every other config field, laid out from the schema."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from tuneforge.data.llamafactory import load_catalog
from tuneforge.errors import UserError
from tuneforge.methods import METHODS
from tuneforge.models.adapters import ADAPTERS
from tuneforge.webui.forms import PICKED_KEYS, FieldSpec, default_values
from tuneforge.webui.i18n import field_help, field_label, language_code, text
from tuneforge.webui.widgets import Texts, field_widget
from tuneforge.webui.workspace import Workspace

__all__ = ["DATA_SUFFIXES", "TrainForm", "build_form", "default_run_dir", "method_info", "wire_form"]

DATA_SUFFIXES = [".json", ".jsonl", ".csv", ".parquet", ".txt"]
_BESIDE_PICKERS = ("model.trust_remote_code", "model.hub", "output.overwrite")
_ROW = 3


def default_run_dir() -> str:
    """A fresh run folder name for a new form."""
    return f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}"


def _choices(kind: str, names: list[str], lang: str) -> list[tuple[str, str]]:
    return [(f"{name} — {text(f'{kind}.{name}', lang)}", name) for name in names]


def method_info(method: str, lang: str) -> str:
    """What data the method trains on (from its registration)."""
    separator = "、" if language_code(lang) == "zh" else ", "
    kinds = separator.join(text(f"kind.{kind}", lang) for kind in sorted(METHODS.get(method).data_kinds))
    return text("train.method_info", lang, method=method, kinds=kinds)


@dataclass
class TrainForm:
    """The form's components; `inputs` is the order every handler receives them in."""

    specs: list[FieldSpec]
    widgets: dict[str, Any]
    method: Any
    adapter: Any
    method_groups: dict[str, Any] = field(default_factory=dict)
    adapter_groups: dict[str, Any] = field(default_factory=dict)
    method_text: Any = None
    upload: Any = None
    refresh: Any = None

    @property
    def inputs(self) -> list[Any]:
        return [self.method, self.adapter, *(self.widgets[s.key] for s in self.specs)]

    def read(self, args: tuple[Any, ...]) -> tuple[str, str, dict[str, Any]]:
        """(method, adapter, {field key: value}) from a handler's arguments in `inputs` order."""
        method, adapter, *values = args
        return method, adapter, {spec.key: value for spec, value in zip(self.specs, values, strict=True)}


def _grid(specs: list[FieldSpec], lang: str, texts: Texts, defaults: dict[str, Any], widgets: dict[str, Any]) -> None:
    for start in range(0, len(specs), _ROW):
        with gr.Row(equal_height=False):
            for spec in specs[start : start + _ROW]:
                widgets[spec.key] = field_widget(spec, lang, texts, defaults[spec.key])


def _pickers(form: TrainForm, by_key: dict[str, FieldSpec], ws: Workspace, lang: str, texts: Texts) -> None:
    """Model and data pickers: lists of what the workspace holds, any other value typed in (then sandboxed)."""

    def picker(key: str, **kwargs: Any) -> Any:
        spec = by_key[key]
        widget = gr.Dropdown(label=field_label(spec, lang), info=field_help(spec, lang), allow_custom_value=True,
                             elem_id="f-" + key.replace(".", "-"), **kwargs)  # fmt: skip
        form.widgets[key] = texts.field(widget, spec)
        return widget

    with gr.Row(equal_height=False):
        picker("model.name_or_path", choices=ws.model_choices(), value=by_key["model.name_or_path"].default, scale=3)
        form.refresh = texts.add(gr.Button(text("train.refresh", lang), size="sm", scale=0), value="train.refresh")
    with gr.Row(equal_height=False):
        picker("data.train", choices=ws.data_choices(), value=[], multiselect=True, scale=3)
        form.upload = texts.add(
            gr.File(label=text("train.upload", lang), file_count="multiple", file_types=DATA_SUFFIXES, scale=1,
                    elem_id="train-upload", height=120),
            label="train.upload",
        )  # fmt: skip
    with gr.Row(equal_height=False):
        picker("data.dataset_dir", choices=ws.catalog_dirs(), value=None)
        picker("data.dataset", choices=[], value=[], multiselect=True)


def _variant_groups(kind: str, names: list[str], chosen: str, form: TrainForm, lang: str, texts: Texts,
                    defaults: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    groups = {}
    for name in names:
        specs = [s for s in form.specs if s.path[0] == kind and s.variant == name]
        with gr.Group(visible=name == chosen) as group:
            if specs:
                _grid(specs, lang, texts, defaults, form.widgets)
            else:
                texts.add(gr.Markdown(text("train.no_params", lang)), value="train.no_params")
        groups[name] = group
    return groups


def build_form(specs: list[FieldSpec], ws: Workspace, lang: str, texts: Texts) -> TrainForm:
    """Lay out the form; returns its components (events are wired by the caller and `wire_form`)."""
    by_key = {s.key: s for s in specs}
    defaults = default_values(specs)
    defaults["output.dir"] = default_run_dir()
    method_names, adapter_names = METHODS.names(), ADAPTERS.names()
    form = TrainForm(specs, {}, None, None)
    _pickers(form, by_key, ws, lang, texts)
    with gr.Row(equal_height=False):
        method = form.method = gr.Dropdown(
            choices=_choices("method", method_names, lang), value="sft", label=text("train.method", lang),
            info=text("train.method_help", lang), elem_id="f-method-name",
        )  # fmt: skip
        adapter = form.adapter = gr.Dropdown(
            choices=_choices("adapter", adapter_names, lang), value="lora", label=text("train.adapter", lang),
            info=text("train.adapter_help", lang), elem_id="f-adapter-name",
        )  # fmt: skip
        form.widgets["output.dir"] = field_widget(by_key["output.dir"], lang, texts, defaults["output.dir"])
    with gr.Row(equal_height=False):
        for key in _BESIDE_PICKERS:
            form.widgets[key] = field_widget(by_key[key], lang, texts, defaults[key])
    texts.add_fn(method, lambda lg: {"choices": _choices("method", method_names, lg), "label": text("train.method", lg),
                                     "info": text("train.method_help", lg)})  # fmt: skip
    texts.add_fn(adapter, lambda lg: {"choices": _choices("adapter", adapter_names, lg),
                                      "label": text("train.adapter", lg), "info": text("train.adapter_help", lg)})  # fmt: skip
    form.method_text = gr.Markdown(method_info("sft", lang), elem_id="method-info")
    with texts.add(gr.Accordion(text("train.method_params", lang), open=True), label="train.method_params"):
        form.method_groups = _variant_groups("method", method_names, "sft", form, lang, texts, defaults)
    with texts.add(gr.Accordion(text("train.adapter_params", lang), open=True), label="train.adapter_params"):
        form.adapter_groups = _variant_groups("adapter", adapter_names, "lora", form, lang, texts, defaults)
    placed = set(PICKED_KEYS) | set(_BESIDE_PICKERS)
    for section, key, is_open in (("data", "train.data_options", False), ("train", "train.hyper", True),
                                  ("eval", "train.evaluation", False)):  # fmt: skip
        with texts.add(gr.Accordion(text(key, lang), open=is_open), label=key):
            rest = [s for s in specs if s.path[0] == section and s.variant is None and s.key not in placed]
            _grid(rest, lang, texts, defaults, form.widgets)
    with texts.add(gr.Accordion(text("train.more", lang), open=False), label="train.more"):
        rest = [s for s in specs if s.path[0] in ("model", "output", "plugins") and s.key not in placed]
        _grid(rest, lang, texts, defaults, form.widgets)
    missing = [s.key for s in specs if s.key not in form.widgets]
    if missing:
        raise RuntimeError(f"form fields without a widget: {missing}")
    return form


def wire_form(form: TrainForm, ws: Workspace, lang_box: Any) -> None:
    """The form's own events: method/adapter groups, dataset catalogs, uploads, refreshing the pickers."""
    method_groups, adapter_groups = list(form.method_groups.items()), list(form.adapter_groups.items())

    def on_method(method: str, lang: str) -> list[Any]:
        return [gr.update(visible=name == method) for name, _ in method_groups] + [method_info(method, lang)]

    form.method.change(on_method, [form.method, lang_box], [g for _, g in method_groups] + [form.method_text])
    lang_box.change(lambda method, lang: method_info(method, lang), [form.method, lang_box], form.method_text)
    form.adapter.change(
        lambda adapter: [gr.update(visible=name == adapter) for name, _ in adapter_groups],
        form.adapter,
        [g for _, g in adapter_groups],
    )

    def on_catalog(folder: str | None, chosen: list[str] | None) -> Any:
        if not folder:
            return gr.update(choices=[], value=[])
        try:
            names = sorted(load_catalog(ws.resolve(folder, "data.dataset_dir")))
        except UserError as err:
            gr.Warning(str(err))
            return gr.update(choices=[], value=[])
        return gr.update(choices=names, value=[name for name in chosen or [] if name in names])  # a loaded config's

    catalog, names = form.widgets["data.dataset_dir"], form.widgets["data.dataset"]
    catalog.change(on_catalog, [catalog, names], names)

    def on_upload(files: list[str] | None, chosen: list[str] | None) -> Any:
        added = []
        for path in files or []:
            try:
                added.append(ws.display(ws.save_upload(Path(path))))
            except UserError as err:
                gr.Warning(str(err))
        value = list(dict.fromkeys([*(chosen or []), *added]))
        return gr.update(choices=ws.data_choices(), value=value), None

    data_train = form.widgets["data.train"]
    form.upload.upload(on_upload, [form.upload, data_train], [data_train, form.upload])

    def on_refresh() -> list[Any]:
        return [
            gr.update(choices=ws.model_choices()),
            gr.update(choices=ws.data_choices()),
            gr.update(choices=ws.catalog_dirs()),
        ]

    form.refresh.click(
        on_refresh, None, [form.widgets["model.name_or_path"], data_train, form.widgets["data.dataset_dir"]]
    )
