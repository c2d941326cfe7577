"""Ollama Modelfile syntax: write a value so that Ollama reads back exactly that text, and read a Modelfile.

The rules are those of Ollama's parser (`parser/parser.go`, `ParseFile`), which has no escape sequences at all:

- a command is a name (FROM, TEMPLATE, SYSTEM, PARAMETER <name>, ...) and a value that runs to the end of its line;
- a value is read with surrounding spaces trimmed; triple quotes (three double quotes) or double quotes around it
  are removed, and inside quotes a line break does not end the value. A quoted value ends at the first line
  break where the text so far (trimmed) starts and ends with its quotes: a line of a triple-quoted value that
  ends with three quotes (or a line of a double-quoted value that ends with a quote) ends it early, and the rest
  of the value is read as new commands;
- characters that are not printable (Go's `strconv.IsPrint`), other than spaces, tabs and line breaks, are dropped.

So a value cannot always be written: `modelfile_value` tries the quoting styles in turn, keeps the first that
`parse_modelfile` (a port of that parser) reads back as exactly the value, and raises a UserError otherwise.
"""

from __future__ import annotations

import unicodedata

from tuneforge.errors import UserError

__all__ = ["BARE", "DOUBLE", "TRIPLE", "ModelfileSyntaxError", "go_printable", "modelfile_value", "parse_modelfile"]

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter", "message",
            "requires")  # fmt: skip
_ROLES = ("system", "user", "assistant")
_SPACES, _NEWLINES = " \t", "\r\n"


class ModelfileSyntaxError(ValueError):
    """Text that Ollama's Modelfile parser refuses."""


def go_printable(char: str) -> bool:
    """Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    return char == " " or unicodedata.category(char)[0] in "LMNPS"


def _unquote(text: str) -> tuple[str, bool]:
    if text.startswith('"""'):
        return (text[3:-3], True) if len(text) >= 6 and text.endswith('"""') else ("", False)
    if text.startswith('"'):
        return (text[1:-1], True) if len(text) >= 2 and text.endswith('"') else ("", False)
    return text, True


def _next_state(char: str, state: str) -> tuple[str, str]:
    """(next state, the character to keep or "") for one character, as Ollama's parseRuneForState."""
    if state == "nil":
        if char == "#":
            return "comment", ""
        return ("nil", "") if char in _SPACES + _NEWLINES else ("name", char)
    if state in ("name", "message"):
        if char.isascii() and char.isalpha():
            return state, char
        if char in _SPACES:
            return "value", ""
        raise ModelfileSyntaxError(f"unexpected {char!r} in a command name")
    if state == "parameter":
        if char.isascii() and (char.isalnum() or char == "_"):
            return state, char
        if char in _SPACES:
            return "value", ""
        raise ModelfileSyntaxError(f"unexpected {char!r} in a parameter name")
    if state == "value":
        return ("nil", char) if char in _SPACES + _NEWLINES else ("value", char)
    return ("nil", "") if char in _NEWLINES else ("comment", "")  # comment


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """The (command, value) pairs Ollama reads from `text`: FROM is "model", PARAMETER x is "x"."""
    commands: list[tuple[str, str]] = []
    state, name, role, buffer = "nil", "", "", ""
    for char in text:
        following, kept = _next_state(char, state)
        if following != state:
            if state == "name":
                word = buffer.lower()
                if word not in COMMANDS:
                    raise ModelfileSyntaxError(f"unknown command {buffer!r}")
                following = {"parameter": "parameter", "message": "message"}.get(word, following)
                name = "model" if word == "from" else word
            elif state == "parameter":
                name = buffer
            elif state == "message":
                if buffer not in _ROLES:
                    raise ModelfileSyntaxError(f"message role {buffer!r}")
                role = buffer
            elif state == "value":
                value, closed = _unquote(buffer.strip(_SPACES + _NEWLINES))
                if not closed or char in _SPACES:
                    buffer += char
                    continue
                commands.append((name, f"{role}: {value}" if role else value))
                role = ""
            buffer, state = "", following
        if kept and go_printable(kept):
            buffer += kept
    if state == "value":
        value, closed = _unquote(buffer.strip(_SPACES + _NEWLINES))
        if not closed:
            raise ModelfileSyntaxError("unterminated quoted value at the end of the file")
        commands.append((name, f"{role}: {value}" if role else value))
    elif state not in ("nil", "comment"):
        raise ModelfileSyntaxError("a command without a value at the end of the file")
    return commands


TRIPLE, DOUBLE, BARE = '"""', '"', ""


def modelfile_value(text: str, what: str, quotes: tuple[str, ...] = (TRIPLE, DOUBLE, BARE)) -> str:
    """`text` quoted (the first of `quotes` that works) so that Ollama reads it back exactly; else a UserError."""
    for quote in quotes:
        candidate = f"{quote}{text}{quote}"
        try:
            if parse_modelfile(f"SYSTEM {candidate}\n") == [("system", text)]:
                return candidate
        except ModelfileSyntaxError:
            continue
    dropped = sorted({f"U+{ord(c):04X}" for c in text if c not in _SPACES + _NEWLINES and not go_printable(c)})
    reason = (
        f"it holds characters Ollama drops ({', '.join(dropped)})" if dropped else 'one of its lines ends with """'
    )
    raise UserError(
        f"{what} {text[:60]!r} cannot be written in an Ollama Modelfile exactly: {reason}, and the Modelfile "
        "syntax has no escapes. Use the GGUF file (it embeds the chat template), or change that text"
    )
