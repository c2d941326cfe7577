"""A small renderer for the subset of Go's text/template that Ollama Modelfile templates use.

Supported: literal text; values `{{ .Field }}`, `{{ .Field.Sub }}`, `{{ $.Field }}`, `{{ $var }}`, `{{ $var.Field }}`
and string constants `{{ "text" }}` (Go escapes); variables `{{ $x := VALUE }}` and `{{ $x = VALUE }}`;
`{{ if COND }}` / `{{ else if COND }}` / `{{ else }}` / `{{ end }}`; `{{ range VALUE }}`, `{{ range $v := VALUE }}`
and `{{ range $i, $v := VALUE }}` over lists and maps (maps in sorted key order, as Go ranges over them); the
functions `eq A B`, `ne A B`, `not A` and Ollama's `json A` (Go's json.Marshal: compact, keys sorted, `<`, `>`
and `&` escaped); truth as Go defines it (empty strings, zero, empty lists and maps are false); and `{{-` / `-}}`
whitespace trimming. The data is what Ollama gives a template: System, Messages (Role, Content, ToolCalls with
Function.Name and Function.Arguments), Tools.

Export uses it to check that the Modelfile it writes renders conversations exactly like the tokenizer's own chat
template (the tests check the same templates with Go itself). A template outside this subset, or malformed, raises
a UserError naming the line, column and action; so does data of the wrong shape (a range over something that is
neither a list nor a map, a field read from a string).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import UserError

__all__ = ["MAX_DEPTH", "go_json", "literal_action", "render_go_template"]

MAX_DEPTH = 32  # nested if/range blocks; deeper templates are refused (no chat template comes close)

_SPACE = " \t\r\n"
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE = re.compile(rf"(\$(?:{_NAME})?)?((?:\.{_NAME})*|\.)")  # ., .A.B, $, $.A, $x, $x.A
_ASSIGNMENT = re.compile(rf"(\${_NAME})\s*(:=|=)\s*(.+)", re.S)
_RANGE = re.compile(rf"range\s+(?:(\${_NAME})\s*(?:,\s*(\${_NAME})\s*)?:=\s*)?(\S+)")
_FUNCTIONS = {"eq": 2, "ne": 2, "not": 1, "json": 1}  # name -> number of arguments
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_OPERAND = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s"]+|"')
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}

Operand = tuple[str, str, tuple[str, ...]]  # ("string", text, ()) or ("ref", "" | "$" | "$x", field names)
Expression = tuple[str, tuple[Operand, ...]]  # ("value", (operand,)) or (function, arguments)


@dataclass(frozen=True)
class _Token:
    kind: str  # text or action
    value: str
    offset: int


@dataclass
class _Node:
    kind: str  # text, value, set, if, range
    text: str = ""
    expression: Expression = ("value", (("string", "", ()),))
    name: str = ""  # the variable a set node writes
    declare: bool = False  # := (a new variable in this block) rather than = (an existing one)
    names: tuple[str, ...] = ()  # range variables: ($v,) or ($i, $v)
    branches: list[tuple[Expression | None, list[_Node]]] = field(default_factory=list)
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
                return ("string", _unquote(word), ())
            except ValueError as err:
                raise self.error(token, str(err)) from None
        match = _REFERENCE.fullmatch(word)
        if match is None or word == "":
            raise self.error(token, f"{word!r} is not a field (.Name, $.Name), a variable ($x) or a string constant")
        fields = tuple(match.group(2).split(".")[1:]) if match.group(2) not in ("", ".") else ()
        return ("ref", match.group(1) or "", fields)

    def expression(self, words: list[str], token: _Token, what: str) -> Expression:
        """One value, or a call of eq, ne, not or json."""
        if words and words[0] in _FUNCTIONS:
            if len(words) - 1 != _FUNCTIONS[words[0]]:
                raise self.error(token, what)
            return (words[0], tuple(self.operand(word, token) for word in words[1:]))
        if len(words) != 1:
            raise self.error(token, what)
        return ("value", (self.operand(words[0], token),))

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
            words = _OPERAND.findall(token.value)
            head = words[0] if words else ""
            if head in ("else", "end"):
                if opener is None:
                    raise self.error(token, f"unexpected {head!r}: no if or range is open")
                return nodes
            self.index += 1
            nodes.append(self.action(token, words, depth))
        if opener is not None:
            raise self.error(opener, "no matching {{ end }}")
        return nodes

    def action(self, token: _Token, words: list[str], depth: int) -> _Node:
        head = words[0] if words else ""
        if head == "if":
            return self.if_block(token, depth)
        if head == "range":
            return self.range_block(token, depth)
        assignment = _ASSIGNMENT.fullmatch(token.value)
        if assignment:
            value = self.expression(_OPERAND.findall(assignment.group(3)), token, "a variable needs one value")
            return _Node("set", name=assignment.group(1), declare=assignment.group(2) == ":=", expression=value)
        if head.startswith((".", "$", '"')) or head in _FUNCTIONS:
            return _Node("value", expression=self.expression(words, token, "unsupported action"))
        raise self.error(token, "unsupported action")

    def condition(self, text: str, token: _Token) -> Expression:
        return self.expression(_OPERAND.findall(text), token, "a condition must be a value, eq A B, ne A B or not A")

    def if_block(self, opener: _Token, depth: int) -> _Node:
        node = _Node("if")
        condition: Expression | None = self.condition(opener.value[2:], opener)
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
        match = _RANGE.fullmatch(opener.value)
        if match is None:
            raise self.error(opener, "range needs exactly one field (with $v := or $i, $v := before it)")
        operand = self.operand(match.group(3), opener)
        if operand[0] != "ref":
            raise self.error(opener, "range needs a field or a variable")
        names = tuple(name for name in match.group(1, 2) if name)
        body = self.block(depth + 1, opener)
        closing = self.tokens[self.index]
        self.index += 1
        if closing.value != "end":
            raise self.error(closing, "expected {{ end }} (range with else is not supported)")
        return _Node("range", expression=("value", (operand,)), names=names, body=body)


# ---------------------------------------------------------------------------------------------- rendering


class _Frames:
    """Variables in scope: one frame per open block, as Go scopes `$x := ...` to the enclosing if or range."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.stack: list[dict[str, Any]] = [{"$": root}]

    def find(self, name: str) -> dict[str, Any]:
        for frame in reversed(self.stack):
            if name in frame:
                return frame
        raise UserError(f"Go template: undefined variable {name}")


def _show(operand: Operand) -> str:
    kind, name, fields = operand
    if kind == "string":
        return f'"{name}"'
    return (name + "".join(f".{field_name}" for field_name in fields)) or "."


def _value(operand: Operand, dot: Any, frames: _Frames) -> Any:
    kind, name, fields = operand
    if kind == "string":
        return name
    value = dot if name == "" else frames.find(name)[name]
    for field_name in fields:
        if not isinstance(value, dict):
            raise UserError(
                f"Go template: cannot read .{field_name} from a {type(value).__name__}; range items must be objects"
            )
        value = value.get(field_name)
    return value


def _truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, lists and maps are false; everything else is true."""
    return bool(value) if isinstance(value, bool | int | float | str | list | tuple | dict) or value is None else True


def go_json(value: Any) -> str:
    """What Go's json.Marshal (Ollama's `json` template function) writes for `value`."""

    def plain(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer() and abs(item) < 1e21:
            return int(item)  # Go writes the float64 2.0 as 2
        if isinstance(item, dict):
            return {str(key): plain(sub) for key, sub in item.items()}
        return [plain(sub) for sub in item] if isinstance(item, list | tuple) else item

    text = json.dumps(plain(value), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _evaluate(expression: Expression, dot: Any, frames: _Frames) -> Any:
    function, operands = expression
    values = [_value(operand, dot, frames) for operand in operands]
    if function == "value":
        return values[0]
    if function == "json":
        return go_json(values[0])
    if function == "not":
        return not _truth(values[0])
    equal = ("" if values[0] is None else values[0]) == ("" if values[1] is None else values[1])
    return equal if function == "eq" else not equal


def _text_of(value: Any) -> str:
    """How Go prints a value (maps and lists as JSON, as Ollama's argument and tool types print themselves)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_json(value)
    return go_json(value) if isinstance(value, dict | list | tuple) else str(value)


def _items(node: _Node, dot: Any, frames: _Frames) -> list[tuple[Any, Any]]:
    items = _evaluate(node.expression, dot, frames)
    if items is None or items == "":
        return []
    if isinstance(items, dict):
        return sorted(items.items())
    if not isinstance(items, list | tuple):
        shown = _show(node.expression[1][0])
        raise UserError(f"Go template: range over {shown} needs a list, not a {type(items).__name__}")
    return list(enumerate(items))


def _render(nodes: list[_Node], dot: Any, frames: _Frames) -> str:
    out = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "value":
            out.append(_text_of(_evaluate(node.expression, dot, frames)))
        elif node.kind == "set":
            frame = frames.stack[-1] if node.declare else frames.find(node.name)
            frame[node.name] = _evaluate(node.expression, dot, frames)
        elif node.kind == "range":
            for key, item in _items(node, dot, frames):
                frames.stack.append(dict(zip(node.names, (key, item)[2 - len(node.names) :], strict=True)))
                out.append(_render(node.body, item, frames))
                frames.stack.pop()
        else:
            for condition, body in node.branches:
                if condition is None or _truth(_evaluate(condition, dot, frames)):
                    frames.stack.append({})
                    out.append(_render(body, dot, frames))
                    frames.stack.pop()
                    break
    return "".join(out)


def render_go_template(template: str, data: dict[str, Any]) -> str:
    """Render `template` with `data` (e.g. {"System": ..., "Messages": [{"Role", "Content"}, ...]})."""
    nodes = _Parser(template).block(0, None)
    return _render(nodes, data, _Frames(data))


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
