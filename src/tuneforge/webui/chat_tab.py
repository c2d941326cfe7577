"""The Chat tab: talk to a run or a model; side by side, the same prompt to a run and to its base model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from tuneforge.errors import UserError
from tuneforge.models.zoo import ZOO
from tuneforge.webui.chat import stream_answer
from tuneforge.webui.context import UIContext
from tuneforge.webui.i18n import text
from tuneforge.webui.widgets import Texts

__all__ = ["build_chat_tab", "chat_choices", "chat_source", "send_message"]

Messages = list[dict[str, Any]]


def chat_choices(ctx: UIContext) -> list[tuple[str, str]]:
    """Runs first (newest first), then the models the workspace offers."""
    runs = ctx.run_choices()
    taken = {value for _, value in runs}
    return [*runs, *((m, m) for m in ctx.ws.model_choices() if m not in taken)]


def chat_source(ctx: UIContext, typed: str | None) -> str:
    """What to load for the picked entry: a zoo name as is, anything else as a checked absolute path."""
    if not typed:
        raise UserError("pick a run or a model to chat with")
    return typed if typed in ZOO else str(ctx.ws.resolve(typed, "model"))


def _conversation(system: str, history: Messages, prompt: str) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system.strip() else []
    turns = [
        {"role": m["role"], "content": str(m["content"])} for m in history if m.get("role") in ("user", "assistant")
    ]
    return [*head, *turns, {"role": "user", "content": prompt}]


def send_message(
    ctx: UIContext, lang: str, typed: str | None, mode: str, system: str, max_new: float | None, temperature: float | None,
    trust: bool, prompt: str, tuned: Messages, base: Messages,
) -> Iterator[tuple[Messages, Messages, str, str]]:  # fmt: skip
    """Stream the answer(s) into the chat windows; the last value clears the prompt box."""
    if not prompt.strip():
        yield tuned, base, prompt, ""
        return
    tuned, base = list(tuned or []), list(base or [])
    settings = {"max_new_tokens": int(max_new or 256), "temperature": float(temperature or 0)}
    try:
        source = chat_source(ctx, typed)
        side_by_side = mode == "side"
        loaded = ctx.chat.get(source, trust)
        base_model, adapter_off = ctx.chat.base_of(source, trust) if side_by_side else (None, False)
        windows = [(tuned, loaded, False)] + ([(base, base_model, adapter_off)] if side_by_side else [])
        asked = {id(window): _conversation(system, window, prompt) for window, _, _ in windows}
        for window, model, off in windows:
            window += [{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}]
            for partial in stream_answer(
                model, ctx.chat.lock_for(model), asked[id(window)], adapter_off=off, **settings
            ):
                window[-1]["content"] = partial
                yield tuned, base, "", ""
            if not window[-1]["content"].strip():
                window[-1]["content"] = text("chat.empty", lang)
            yield tuned, base, "", ""
    except UserError as err:
        yield tuned, base, prompt, f"⚠ {err}"


def build_chat_tab(ctx: UIContext, texts: Texts, lang_box: Any) -> Any:
    """Lay out the Chat tab; returns its model picker (refreshed when the tab is opened)."""
    lang = ctx.lang
    with gr.Row(equal_height=False):
        model = texts.add(gr.Dropdown(choices=chat_choices(ctx), label=text("chat.model", lang), allow_custom_value=True,
                                      elem_id="chat-model", scale=3), label="chat.model")  # fmt: skip
        refresh = texts.add(gr.Button(text("train.refresh", lang), size="sm", scale=0), value="train.refresh")
        trust = texts.add(gr.Checkbox(False, label=text("chat.trust", lang), info=text("chat.trust_help", lang)),
                          label="chat.trust", info="chat.trust_help")  # fmt: skip
    with gr.Row(equal_height=False):
        mode = texts.add_fn(
            gr.Radio([(text("chat.single", lang), "single"), (text("chat.side", lang), "side")], value="single",
                     label=text("chat.mode", lang), elem_id="chat-mode"),
            lambda lg: {"choices": [(text("chat.single", lg), "single"), (text("chat.side", lg), "side")],
                        "label": text("chat.mode", lg)},
        )  # fmt: skip
        max_new = texts.add(
            gr.Number(128, precision=0, label=text("chat.max_new_tokens", lang)), label="chat.max_new_tokens"
        )
        temperature = texts.add(gr.Slider(0, 2, 0, step=0.05, label=text("chat.temperature", lang),
                                          info=text("chat.temperature_help", lang)),
                                label="chat.temperature", info="chat.temperature_help")  # fmt: skip
    system = texts.add(gr.Textbox(label=text("chat.system", lang), placeholder=text("chat.system_help", lang)),
                       label="chat.system", placeholder="chat.system_help")  # fmt: skip
    with gr.Row(equal_height=True):
        tuned = texts.add(
            gr.Chatbot(label=text("chat.tuned", lang), elem_id="chat-tuned", height=360), label="chat.tuned"
        )
        base = texts.add(gr.Chatbot(label=text("chat.base", lang), elem_id="chat-base", height=360, visible=False),
                         label="chat.base")  # fmt: skip
    with gr.Row(equal_height=True):
        prompt = texts.add(gr.Textbox(placeholder=text("chat.placeholder", lang), show_label=False, scale=4,
                                      elem_id="chat-prompt"), placeholder="chat.placeholder")  # fmt: skip
        send = texts.add(gr.Button(text("chat.send", lang), variant="primary", scale=1, elem_id="chat-send"),
                         value="chat.send")  # fmt: skip
        clear = texts.add(gr.Button(text("chat.clear", lang), scale=1), value="chat.clear")
    status = gr.Markdown("", elem_id="chat-status")

    inputs = [lang_box, model, mode, system, max_new, temperature, trust, prompt, tuned, base]
    outputs = [tuned, base, prompt, status]
    send.click(lambda *a: (yield from send_message(ctx, *a)), inputs, outputs)
    prompt.submit(lambda *a: (yield from send_message(ctx, *a)), inputs, outputs)
    clear.click(lambda: ([], [], ""), None, [tuned, base, status])
    mode.change(lambda m: gr.update(visible=m == "side"), mode, base)
    refresh.click(lambda: gr.update(choices=chat_choices(ctx)), None, model)
    return model
