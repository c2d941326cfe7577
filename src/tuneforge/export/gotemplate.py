"""A small renderer for the subset of Go's text/template that Ollama Modelfile templates use.

Supported: literal text, `{{ .Field }}` (System, Content, Role, Prompt, Response), `{{ if COND }}` /
`{{ else if COND }}` / `{{ else }}` / `{{ end }}`, `{{ range .Messages }}`, conditions `.Field`,
`eq .Field "text"`, `ne .Field "text"`, and `{{-` / `-}}` whitespace trimming. Export uses it to check that the
Modelfile it writes renders conversations exactly like the tokenizer's own chat template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["render_go_template"]

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)


@dataclass
class _Node:
    kind: str  # text, field, if, range
    value: str = ""
    branches: list[tuple[str | None, list[_Node]]] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)


def _tokens(source: str) -> list[tuple[str, str]]:
    """('text', s) and ('action', s) pieces with trim markers applied to the neighbouring text."""
    pieces: list[tuple[str, str]] = []
    position = 0
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if match.group(1):
            text = text.rstrip()
        pieces.append(("text", text))
        pieces.append(("action", match.group(2)))
        position = match.end()
        if match.group(3):
            rest = source[position:]
            position += len(rest) - len(rest.lstrip())
    pieces.append(("text", source[position:]))
    return [p for p in pieces if p != ("text", "")]


def _parse(tokens: list[tuple[str, str]], index: int = 0, stop: tuple[str, ...] = ()) -> tuple[list[_Node], int]:
    nodes: list[_Node] = []
    while index < len(tokens):
        kind, value = tokens[index]
        if kind == "text":
            nodes.append(_Node("text", value))
            index += 1
            continue
        head = value.split()[0] if value.split() else ""
        if head in stop:
            return nodes, index
        if head == "if":
            node, index = _parse_if(tokens, index)
            nodes.append(node)
        elif head == "range":
            body, index = _parse(tokens, index + 1, ("end",))
            nodes.append(_Node("range", value.split(None, 1)[1], body=body))
            index += 1
        elif value.startswith("."):
            nodes.append(_Node("field", value))
            index += 1
        else:
            raise ValueError(f"unsupported template action {{{{ {value} }}}}")
    return nodes, index


def _parse_if(tokens: list[tuple[str, str]], index: int) -> tuple[_Node, int]:
    node = _Node("if")
    condition: str | None = tokens[index][1].split(None, 1)[1]
    index += 1
    while True:
        body, index = _parse(tokens, index, ("else", "end"))
        node.branches.append((condition, body))
        action = tokens[index][1]
        index += 1
        if action == "end":
            return node, index
        condition = action.split(None, 2)[2] if action.startswith("else if") else None


def _value(expression: str, scope: dict[str, Any], root: dict[str, Any]) -> Any:
    if expression.startswith('"'):
        return expression.strip('"')
    name = expression.lstrip("$").lstrip(".")
    source = root if expression.startswith("$") else scope
    return source.get(name, "")


def _test(condition: str, scope: dict[str, Any], root: dict[str, Any]) -> bool:
    parts = re.findall(r'"[^"]*"|\S+', condition)
    if parts[0] in ("eq", "ne"):
        equal = _value(parts[1], scope, root) == _value(parts[2], scope, root)
        return equal if parts[0] == "eq" else not equal
    return bool(_value(parts[0], scope, root))


def _render(nodes: list[_Node], scope: dict[str, Any], root: dict[str, Any]) -> str:
    out = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "field":
            out.append(str(_value(node.value, scope, root)))
        elif node.kind == "range":
            for item in _value(node.value, scope, root) or []:
                out.append(_render(node.body, item, root))
        else:
            for condition, body in node.branches:
                if condition is None or _test(condition, scope, root):
                    out.append(_render(body, scope, root))
                    break
    return "".join(out)


def render_go_template(template: str, data: dict[str, Any]) -> str:
    """Render `template` with `data` (e.g. {"System": ..., "Messages": [{"Role", "Content"}, ...]})."""
    nodes, _ = _parse(_tokens(template))
    return _render(nodes, data, data)
