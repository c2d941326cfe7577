"""An Ollama Modelfile whose TEMPLATE, stop tokens and parameters reproduce the model's own chat template.

The role wrappers are read off the tokenizer's template by rendering probe conversations (so no per-model
template is written by hand), assembled into a Go template, and checked: the Go template must render a multi-turn
conversation, with and without a system prompt, and one with tool calls and tool results, to exactly the text the
model trains on (the tokenizer's template; tool calls as `ollama_tools` reads them); otherwise export stops and says
so. The renderer used for that check is tuneforge's own (`gotemplate`); the tests render the same Modelfiles with
Go's text/template, the engine Ollama runs. A template whose tool calls have no fixed form gets no tool branches
(with a warning); tool definitions (Ollama's `.Tools`) are never part of it.

Every value is written so that Ollama's Modelfile parser reads back exactly that text (see `modelfile`): template
text that the Modelfile syntax cannot carry (quotes, `{{`, characters Ollama drops) is written as Go string
constants; a default system prompt that cannot be a SYSTEM value becomes part of the template instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.messages import Conversation, Message
from tuneforge.data.render import conversation_text
from tuneforge.errors import UserError
from tuneforge.export.base import EXPORTERS, Exporter, ExportOptions
from tuneforge.export.gguf import gguf_file_name, write_gguf_export
from tuneforge.export.gotemplate import literal_action, render_go_template
from tuneforge.export.modelfile import BARE, DOUBLE, TRIPLE, go_printable, modelfile_value, parse_modelfile
from tuneforge.export.ollama_tools import (
    ResultsTemplate,
    ToolWrappers,
    read_tool_wrappers,
    tool_calls_template,
    tool_results_template,
)

__all__ = [
    "PROBES",
    "ChatWrappers",
    "go_template",
    "modelfile",
    "ollama_template_data",
    "read_wrappers",
    "verify_template",
    "write_ollama_export",
]

log = logging.getLogger(__name__)

_S, _U1, _A1, _U2 = "SYSTEMQZXW", "USERONEQZXW", "ASSISTANTONEQZXW", "USERTWOQZXW"


@dataclass(frozen=True)
class ChatWrappers:
    """The text around each role's content in the chat template."""

    bos: str
    system_prefix: str
    system_suffix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    default_system: str | None


def _render(tokenizer: Any, messages: list[tuple[str, str]], generation: bool) -> str:
    conversation = [{"role": role, "content": content} for role, content in messages]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation)


def _after(text: str, marker: str) -> str:
    return text[text.index(marker) + len(marker) :]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise UserError(f"cannot read the chat template's {what}: its pieces are not consistent across turns")
    return text[len(prefix) :]


def read_wrappers(tokenizer: Any) -> ChatWrappers:
    """Role prefixes and suffixes of the tokenizer's chat template, found by rendering probe conversations."""
    full = _render(tokenizer, [("system", _S), ("user", _U1), ("assistant", _A1), ("user", _U2)], True)
    user_suffix = _after(_render(tokenizer, [("system", _S), ("user", _U1)], False), _U1)
    assistant_suffix = _after(_render(tokenizer, [("system", _S), ("user", _U1), ("assistant", _A1)], False), _A1)
    between_u1_a1 = full[full.index(_U1) + len(_U1) : full.index(_A1)]
    assistant_prefix = _strip_prefix(between_u1_a1, user_suffix, "assistant prefix")
    between_a1_u2 = full[full.index(_A1) + len(_A1) : full.index(_U2)]
    user_prefix = _strip_prefix(between_a1_u2, assistant_suffix, "user prefix")
    between_s_u1 = full[full.index(_S) + len(_S) : full.index(_U1)]
    if not between_s_u1.endswith(user_prefix):
        raise UserError("cannot read the chat template's system suffix")
    system_suffix = between_s_u1[: len(between_s_u1) - len(user_prefix)]
    head = full[: full.index(_S)]
    without_system = _render(tokenizer, [("user", _U1)], False)
    before_user = without_system[: without_system.index(_U1)]
    stuff = before_user[: len(before_user) - len(user_prefix)] if before_user.endswith(user_prefix) else before_user
    bos = _template_bos(tokenizer, head)
    default_system = None
    if stuff.startswith(head) and stuff.endswith(system_suffix) and len(stuff) > len(head):
        default_system = stuff[len(head) : len(stuff) - len(system_suffix)]
    system_prefix = _strip_prefix(head, bos, "system prefix")
    return ChatWrappers(
        bos, system_prefix, system_suffix, user_prefix, user_suffix, assistant_prefix, assistant_suffix, default_system
    )


def _template_bos(tokenizer: Any, head: str) -> str:
    """The BOS text the template itself writes ({{ bos_token }}), which precedes every conversation."""
    bos = tokenizer.bos_token or ""
    uses_bos = "bos_token" in (tokenizer.chat_template or "")
    return bos if bos and uses_bos and head.startswith(bos) else ""


def _text(piece: str) -> str:
    """Template source printing `piece`: as is, or as a Go string constant when the Modelfile cannot carry it."""
    safe = "{{" not in piece and not piece.endswith("{") and '"' not in piece  # a trailing { would open an action
    plain = safe and all(c in " \t\r\n" or go_printable(c) for c in piece)
    return piece if plain else literal_action(piece)


def go_template(w: ChatWrappers, default_system: str | None = None, tools: ToolWrappers | None = None) -> str:
    """The Go template Ollama renders; system from .System, turns from .Messages, then the generation prompt.

    With `default_system`, the template itself prints that system prompt when the conversation has none. With
    `tools`, assistant turns print their .ToolCalls and `tool` messages print as the training text has them.
    """
    system = f"{{{{ if .System }}}}{_text(w.system_prefix)}{{{{ .System }}}}{_text(w.system_suffix)}"
    if default_system is not None:
        system += f"{{{{ else }}}}{_text(w.system_prefix)}{literal_action(default_system)}{_text(w.system_suffix)}"
    calls, results = "", ResultsTemplate()
    if tools is not None:
        calls, results = tool_calls_template(tools, _text), tool_results_template(tools, _text)
    return (
        f"{_text(w.bos)}{system}{{{{ end }}}}{results.declare}{{{{ range .Messages }}}}{results.turn_start}"
        f'{{{{ if eq .Role "user" }}}}{_text(w.user_prefix)}{{{{ .Content }}}}{_text(w.user_suffix)}'
        f'{{{{ else if eq .Role "assistant" }}}}{_text(w.assistant_prefix)}{{{{ .Content }}}}{calls}'
        f"{_text(w.assistant_suffix)}{results.branch}"
        f"{{{{ end }}}}{results.turn_end}{{{{ end }}}}{results.after}"
        f"{_text(w.assistant_prefix)}"
    )


def ollama_template_data(messages: list[dict[str, Any]], default_system: str | None) -> dict[str, Any]:
    """What Ollama gives a template for a chat request of OpenAI-style `messages` (as its server and template/
    template.go build it): the Modelfile SYSTEM added when the conversation has no system message, consecutive
    messages of one role (but `tool`) merged, .System all system messages, .Messages all messages with their
    tool calls."""
    if default_system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": default_system}, *messages]
    turns: list[dict[str, Any]] = []
    for m in messages:
        if turns and turns[-1]["Role"] == m["role"] != "tool":
            turns[-1]["Content"] += "\n\n" + m["content"]
            continue
        calls = [c.get("function", c) for c in m.get("tool_calls") or []]
        turns.append({"Role": m["role"], "Content": m["content"], "ToolCalls": [_ollama_call(c) for c in calls]})
    system = "\n\n".join(t["Content"] for t in turns if t["Role"] == "system")
    return {"System": system, "Messages": turns}


def _ollama_call(function: dict[str, Any]) -> dict[str, Any]:
    arguments = function.get("arguments") or {}
    return {
        "Function": {
            "Name": function["name"],
            "Arguments": json.loads(arguments) if isinstance(arguments, str) else arguments,
        }
    }


_CALLS = [{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}},
          {"name": "get_weather", "arguments": {"city": "Rome", "days": 1}}]  # fmt: skip
PROBES: list[list[Message]] = [
    [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello!"),
     Message("user", "Who are you?")],
    [Message("user", "What is 2 + 2?")],
    [Message("user", "Weather in Paris and Rome?"), Message("assistant", "Checking.", tool_calls=_CALLS),
     Message("tool", "18 C, sunny"), Message("tool", "24 C, clear"), Message("assistant", "Paris 18 C, Rome 24 C."),
     Message("user", "Thanks!"), Message("assistant", "", tool_calls=_CALLS[1:]), Message("tool", "24 C")],
]  # fmt: skip
"""Conversations every Modelfile template must render exactly as in training; the last one has tool calls."""


def verify_template(tokenizer: Any, template: str, default_system: str | None, tools: bool = False) -> None:
    """Raise unless the Go template renders the probe conversations (`tools`: with tool calls too) exactly like the
    text the model trains on."""
    for messages in PROBES if tools else PROBES[:2]:
        expected = conversation_text(tokenizer, Conversation(messages), generation=True)
        data = ollama_template_data([m.to_template() for m in messages], default_system)
        got = render_go_template(template, data)
        if got != expected:
            raise UserError(
                "the chat template cannot be expressed as an Ollama template (rendering differs: "
                f"{expected[:80]!r} vs {got[:80]!r}); use the GGUF file with its embedded template instead"
            )


def _stops(tokenizer: Any, w: ChatWrappers) -> list[str]:
    stops = []
    marker = w.assistant_suffix.strip()
    if marker:
        stops.append(marker)
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    return stops


def modelfile(tokenizer: Any, gguf_name: str, temperature: float = 0.7, context: int = 2048) -> str:
    """The Modelfile text: FROM the GGUF file, TEMPLATE, SYSTEM default, stop tokens and parameters."""
    try:
        w = read_wrappers(tokenizer)
    except UserError as err:
        raise UserError(
            f"cannot write an Ollama template for this chat template ({err}); templates that fold the system prompt "
            "into the first user turn (Mistral, Gemma) are not expressible this way. The GGUF file embeds the "
            "original template: use it with llama.cpp (`llama-server -m FILE --jinja`), or export --format gguf"
        ) from None
    system, in_template = w.default_system or None, None
    if system is not None:
        try:
            modelfile_value(system, "the default system prompt")
        except UserError:  # no Modelfile quoting carries it: the template prints it instead
            system, in_template = None, system
    template = _checked_template(tokenizer, w, in_template, system)
    commands = [("model", f"./{gguf_name}"), ("template", template)]
    commands += [("system", system)] if system is not None else []
    commands += [("stop", stop) for stop in _stops(tokenizer, w)]
    commands += [("temperature", str(temperature)), ("num_ctx", str(context))]
    text = "".join(_command_line(name, value) for name, value in commands)
    if parse_modelfile(text) != commands:  # the parser port disagrees with the quoting: never write that file
        raise UserError("the Modelfile would not read back as written; use the GGUF file with its embedded template")
    return text


def _checked_template(tokenizer: Any, w: ChatWrappers, in_template: str | None, system: str | None) -> str:
    """The verified Go template: with tool calls when they render as in training, else without (and a warning)."""
    plain = go_template(w, in_template)
    verify_template(tokenizer, plain, system)
    try:
        with_tools = go_template(w, in_template, read_tool_wrappers(tokenizer, w.assistant_prefix, w.assistant_suffix))
        verify_template(tokenizer, with_tools, system, tools=True)
    except UserError as err:
        log.warning("the Ollama template leaves tool calls out: %s", err)
        return plain
    return with_tools


def _command_line(name: str, value: str) -> str:
    if name == "model":
        return f"FROM {modelfile_value(value, 'the GGUF file name', (BARE, DOUBLE))}\n"
    if name in ("template", "system"):
        return f"{name.upper()} {modelfile_value(value, f'the {name}')}\n"
    quotes = (DOUBLE, TRIPLE, BARE) if name == "stop" else (BARE, DOUBLE, TRIPLE)
    return f"PARAMETER {name} {modelfile_value(value, f'the {name} parameter', quotes)}\n"


def write_ollama_export(source: str, folder: Path, options: ExportOptions) -> None:
    """The GGUF file plus a Modelfile whose template reproduces the chat template."""
    gguf, tokenizer = write_gguf_export(source, folder, options)
    (folder / "Modelfile").write_text(modelfile(tokenizer, gguf.name), encoding="utf-8")


def _ollama_next_steps(out: Path, options: ExportOptions) -> list[str]:
    return [
        f"GGUF file: {out / gguf_file_name(options)}",
        f"Ollama: ollama create {out.name} -f {out / 'Modelfile'} && ollama run {out.name}",
    ]


EXPORTERS.register("ollama")(
    Exporter(
        help="the GGUF file plus a Modelfile whose template reproduces the chat template (ollama create NAME -f "
        "DIR/Modelfile)",
        write=write_ollama_export,
        next_steps=_ollama_next_steps,
    )
)
