"""An Ollama Modelfile whose TEMPLATE, stop tokens and parameters reproduce the model's own chat template.

The role wrappers are read off the tokenizer's template by rendering probe conversations (so no per-model
template is written by hand), assembled into a Go template, and checked: the Go template must render a multi-turn
conversation, with and without a system prompt, to exactly the text the tokenizer's template gives; otherwise
export stops and says so. Tool calls are not part of the Modelfile template.

Every value is written so that Ollama's Modelfile parser reads back exactly that text (see `modelfile`): template
text that the Modelfile syntax cannot carry (quotes, `{{`, characters Ollama drops) is written as Go string
constants; a default system prompt that cannot be a SYSTEM value becomes part of the template instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.export.base import EXPORTERS, Exporter, ExportOptions
from tuneforge.export.gguf import gguf_file_name, write_gguf_export
from tuneforge.export.gotemplate import literal_action, render_go_template
from tuneforge.export.modelfile import BARE, DOUBLE, TRIPLE, go_printable, modelfile_value, parse_modelfile

__all__ = ["ChatWrappers", "go_template", "modelfile", "read_wrappers", "verify_template", "write_ollama_export"]

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


def go_template(w: ChatWrappers, default_system: str | None = None) -> str:
    """The Go template Ollama renders; system from .System, turns from .Messages, then the generation prompt.

    With `default_system`, the template itself prints that system prompt when the conversation has none.
    """
    system = f"{{{{ if .System }}}}{_text(w.system_prefix)}{{{{ .System }}}}{_text(w.system_suffix)}"
    if default_system is not None:
        system += f"{{{{ else }}}}{_text(w.system_prefix)}{literal_action(default_system)}{_text(w.system_suffix)}"
    return (
        f"{_text(w.bos)}{system}{{{{ end }}}}"
        "{{ range .Messages }}"
        f'{{{{ if eq .Role "user" }}}}{_text(w.user_prefix)}{{{{ .Content }}}}{_text(w.user_suffix)}'
        f'{{{{ else if eq .Role "assistant" }}}}{_text(w.assistant_prefix)}{{{{ .Content }}}}'
        f"{_text(w.assistant_suffix)}"
        "{{ end }}{{ end }}"
        f"{_text(w.assistant_prefix)}"
    )


def _ollama_data(messages: list[dict[str, str]], default_system: str | None) -> dict[str, Any]:
    system = next((m["content"] for m in messages if m["role"] == "system"), default_system or "")
    turns = [{"Role": m["role"], "Content": m["content"]} for m in messages if m["role"] != "system"]
    return {"System": system, "Messages": turns}


def verify_template(tokenizer: Any, template: str, default_system: str | None) -> None:
    """Raise unless the Go template renders probe conversations exactly like the tokenizer's template."""
    probes = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Who are you?"}],
        [{"role": "user", "content": "What is 2 + 2?"}],
    ]  # fmt: skip
    for messages in probes:
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        got = render_go_template(template, _ollama_data(messages, default_system))
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
    template = go_template(w, in_template)
    verify_template(tokenizer, template, system)
    commands = [("model", f"./{gguf_name}"), ("template", template)]
    commands += [("system", system)] if system is not None else []
    commands += [("stop", stop) for stop in _stops(tokenizer, w)]
    commands += [("temperature", str(temperature)), ("num_ctx", str(context))]
    text = "".join(_command_line(name, value) for name, value in commands)
    if parse_modelfile(text) != commands:  # the parser port disagrees with the quoting: never write that file
        raise UserError("the Modelfile would not read back as written; use the GGUF file with its embedded template")
    return text


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
