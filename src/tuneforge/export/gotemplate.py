"""A small renderer for the subset of Go's text/template that Ollama Modelfile templates use.

Supported: literal text, `{{ .Field }}` and `{{ $.Field }}` (System, Content, Role, ...), string constants
`{{ "text" }}` (Go escapes), `{{ if COND }}` / `{{ else if COND }}` / `{{ else }}` / `{{ end }}`,
`{{ range .Messages }}`, conditions `.Field`, `eq A B` and `ne A B` (fields or strings), and `{{-` / `-}}`
whitespace trimming. Export uses it to check that the Modelfile it writes renders conversations exactly like the
tokenizer's own chat template. A template outside this subset, or malformed, raises a UserError naming the line,
column and action; so does data of the wrong shape (a range over something that is not a list of objects).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import UserError

__all__ = ["MAX_DEPTH", "literal_action", "render_go_template"]

MAX_DEPTH = 32  # nested if/range blocks; deeper templates are refused (no chat template comes close)

_SPACE = " \t\r\n"
_FIELD = re.compile(r"(\$?)\.([A-Za-z_][A-Za-z0-9_]*)")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_OPERAND = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s"]+|"')
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}

Operand = tuple[str, str, bool]  # ("field", name, from_root) or ("string", text, False)
_NOTHING: Operand = ("string", "", False)


@dataclass(frozen=True)
class _Condition:
    test: str  # truth, eq or ne
    left: Operand
    right: Operand = _NOTHING


@dataclass(frozen=True)
class _Token:
    kind: str  # text or action
    value: str
    offset: int


@dataclass
class _Node:
    kind: str  # text, value, if, range
    text: str = ""
    operand: Operand = _NOTHING
    branches: list[tuple[_Condition | None, list[_Node]]] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)


def _error(template: str, offset: int, problem: str) -> UserError:
    line = template.count("\n", 0, offset) + 1
    column = offset - (template.rfind("\n", 0, offset) + 1) + 1
    return UserError(f"Go template, line {line} column {column}: {problem}")


# ------------------------------------------------------------------------------------------------- lexing


def _action_end(source: str, start: int, opened: int) -> int:
    """Index of the `}}` closing the action whose text starts at `start` (string constants skipped)."""
    index = start
    while index < len(source):
        if source.startswith("}}", index):
            return index
        if source[index] == '"':
            index += 1
            while index < len(source) and source[index] not in '"\n':
                index += 2 if source[index] == "\\" else 1
            if index >= len(source) or source[index] != '"':
                raise _error(source, opened, "unterminated string constant in an action")
        index += 1
    raise _error(source, opened, "unclosed action: '{{' without '}}'")


def _tokens(source: str) -> list[_Token]:
    """Text and action tokens, with `{{- ` / ` -}}` trimming applied to the neighbouring text."""
    tokens: list[_Token] = []
    position, trim_next = 0, False
    while True:
        start = source.find("{{", position)
        text = source[position:] if start < 0 else source[position:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            if text:
                tokens.append(_Token("text", text, position))
            return tokens
        inner = start + 2
        if source.startswith("-", inner) and source[inner + 1 : inner + 2] in tuple(_SPACE):
            text, inner = text.rstrip(_SPACE), inner + 1
        if text:
            tokens.append(_Token("text", text, position))
        end = _action_end(source, inner, start)
        action = source[inner:end]
        trim_next = len(action) >= 2 and action.endswith("-") and action[-2] in _SPACE
        tokens.append(_Token("action", (action[:-1] if trim_next else action).strip(_SPACE), start))
        position = end + 2


# ------------------------------------------------------------------------------------------------ parsing


def _unquote(literal: str) -> str:
    """The text of a Go interpreted string constant such as "a\\n\\"b\\"" (quotes included)."""
    out, index, body = [], 0, literal[1:-1]
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        code = body[index + 1 : index + 2]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            index += 2
        elif code in _HEX_DIGITS:
            digits = body[index + 2 : index + 2 + _HEX_DIGITS[code]]
            if len(digits) != _HEX_DIGITS[code] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"bad \\{code} escape")
            value = int(digits, 16)
            if (code == "x" and value > 0x7F) or value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise ValueError(f"unsupported escape \\{code}{digits}")
            out.append(chr(value))
            index += 2 + len(digits)
        else:
            raise ValueError(f"unknown escape \\{code}")
    return "".join(out)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokens(source)
        self.index = 0

    def error(self, token: _Token, problem: str) -> UserError:
        return _error(self.source, token.offset, f"{problem} in {{{{ {token.value} }}}}")

    def operand(self, word: str, token: _Token) -> Operand:
        if word.startswith('"'):
            if _STRING.fullmatch(word) is None:
                raise self.error(token, f"{word} is not one string constant")
            try:
                return ("string", _unquote(word), False)
            except ValueError as err:
                raise self.error(token, str(err)) from None
        match = _FIELD.fullmatch(word)
        if match is None:
            raise self.error(token, f"{word!r} is not a field (.Name or $.Name) or a string constant")
        return ("field", match.group(2), bool(match.group(1)))

    def condition(self, text: str, token: _Token) -> _Condition:
        words = _OPERAND.findall(text)
        if len(words) == 1:
            return _Condition("truth", self.operand(words[0], token))
        if len(words) == 3 and words[0] in ("eq", "ne"):
            return _Condition(words[0], self.operand(words[1], token), self.operand(words[2], token))
        raise self.error(token, "a condition must be .Field, eq A B or ne A B")

    def block(self, depth: int, opener: _Token | None) -> list[_Node]:
        """Nodes up to the `else`/`end` closing `opener` (left unconsumed), or to the end for the top level."""
        if depth > MAX_DEPTH:
            raise self.error(opener or self.tokens[self.index], f"blocks nested deeper than {MAX_DEPTH} levels")
        nodes: list[_Node] = []
        while self.index < len(self.tokens):
            token = self.tokens[self.index]
            if token.kind == "text":
                nodes.append(_Node("text", text=token.value))
                self.index += 1
                continue
            head = token.value.split(None, 1)[0] if token.value.split() else ""
            if head in ("else", "end"):
                if opener is None:
                    raise self.error(token, f"unexpected {head!r}: no if or range is open")
                return nodes
            self.index += 1
            if head == "if":
                nodes.append(self.if_block(token, depth))
            elif head == "range":
                nodes.append(self.range_block(token, depth))
            elif head.startswith((".", "$", '"')):
                nodes.append(_Node("value", operand=self.operand(token.value, token)))
            else:
                raise self.error(token, "unsupported action")
        if opener is not None:
            raise self.error(opener, "no matching {{ end }}")
        return nodes

    def if_block(self, opener: _Token, depth: int) -> _Node:
        node = _Node("if")
        condition: _Condition | None = self.condition(opener.value[2:], opener)
        while True:
            node.branches.append((condition, self.block(depth + 1, opener)))
            closing = self.tokens[self.index]
            self.index += 1
            words = closing.value.split(None, 2)
            if words == ["end"]:
                return node
            if condition is None or words[0] != "else" or (len(words) > 1 and words[1] != "if"):
                raise self.error(closing, "expected {{ end }}")
            if len(words) == 2:
                raise self.error(closing, "missing condition")
            condition = None if len(words) == 1 else self.condition(words[2], closing)

    def range_block(self, opener: _Token, depth: int) -> _Node:
        words = opener.value.split()
        if len(words) != 2:
            raise self.error(opener, "range needs exactly one field")
        operand = self.operand(words[1], opener)
        if operand[0] != "field":
            raise self.error(opener, "range needs a field")
        body = self.block(depth + 1, opener)
        closing = self.tokens[self.index]
        self.index += 1
        if closing.value != "end":
            raise self.error(closing, "expected {{ end }} (range with else is not supported)")
        return _Node("range", operand=operand, body=body)


# ---------------------------------------------------------------------------------------------- rendering


def _value(operand: Operand, scope: Any, root: dict[str, Any]) -> Any:
    kind, name, from_root = operand
    if kind == "string":
        return name
    source = root if from_root else scope
    if not isinstance(source, dict):
        raise UserError(
            f"Go template: cannot read .{name} from a {type(source).__name__}; range items must be objects"
        )
    value = source.get(name, "")
    return "" if value is None else value


def _test(condition: _Condition, scope: Any, root: dict[str, Any]) -> bool:
    if condition.test == "truth":
        return bool(_value(condition.left, scope, root))
    equal = _value(condition.left, scope, root) == _value(condition.right, scope, root)
    return equal if condition.test == "eq" else not equal


def _render(nodes: list[_Node], scope: Any, root: dict[str, Any]) -> str:
    out = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "value":
            out.append(str(_value(node.operand, scope, root)))
        elif node.kind == "range":
            items = _value(node.operand, scope, root)
            if items == "":
                continue
            if not isinstance(items, list | tuple):
                kind = type(items).__name__
                raise UserError(f"Go template: range over .{node.operand[1]} needs a list, not a {kind}")
            out.extend(_render(node.body, item, root) for item in items)
        else:
            for condition, body in node.branches:
                if condition is None or _test(condition, scope, root):
                    out.append(_render(body, scope, root))
                    break
    return "".join(out)


def render_go_template(template: str, data: dict[str, Any]) -> str:
    """Render `template` with `data` (e.g. {"System": ..., "Messages": [{"Role", "Content"}, ...]})."""
    nodes = _Parser(template).block(0, None)
    return _render(nodes, data, data)


def literal_action(text: str) -> str:
    """A `{{ "..." }}` action printing `text` exactly (Go escapes for quotes, backslashes and non-printables)."""
    out = []
    for char in text:
        code = next((key for key, value in _ESCAPES.items() if value == char), None)
        if code is not None:
            out.append("\\" + code)
        elif char.isprintable():
            out.append(char)
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
    return '{{ "' + "".join(out) + '" }}'
