"""The Modelfile's Go template renders conversations exactly like the tokenizer's chat template."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fixtures.tiny_models import build_tokenizer
from tuneforge.data.templates import bundled_template
from tuneforge.errors import UserError
from tuneforge.export.gotemplate import render_go_template
from tuneforge.export.ollama import modelfile

CONVERSATION = [
    {"role": "system", "content": "You are Conch."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Conch, made by tuneforge."},
    {"role": "user", "content": "你好！What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "Thanks."},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def _template(text: str) -> str:
    return re.search(r'TEMPLATE """(.*?)"""', text, re.DOTALL).group(1)


def _ollama_render(text: str, messages: list[dict[str, str]]) -> str:
    default = re.search(r'SYSTEM """(.*?)"""', text, re.DOTALL)
    system = next((m["content"] for m in messages if m["role"] == "system"), default.group(1) if default else "")
    turns = [{"Role": m["role"], "Content": m["content"]} for m in messages if m["role"] != "system"]
    return render_go_template(_template(text), {"System": system, "Messages": turns})


@pytest.mark.parametrize("template", ["own", "chatml", "llama3"])
def test_modelfile_template_matches_the_chat_template(tokenizer, template):
    if template != "own":
        tokenizer.chat_template = bundled_template(template)
    text = modelfile(tokenizer, "model-f16.gguf")
    assert text.startswith("FROM ./model-f16.gguf\n")
    for messages in (CONVERSATION, CONVERSATION[1:], CONVERSATION[1:2]):
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert _ollama_render(text, messages) == expected


def test_default_system_prompt_and_stops(tmp_path: Path):
    tokenizer = build_tokenizer(tmp_path)  # its ChatML template adds "You are a helpful assistant." by default
    text = modelfile(tokenizer, "m.gguf")
    assert 'SYSTEM """You are a helpful assistant."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text


def test_templates_that_fold_the_system_prompt_are_refused_with_the_way_out(tokenizer):
    tokenizer.chat_template = bundled_template("gemma")
    with pytest.raises(UserError, match="GGUF file embeds the original template"):
        modelfile(tokenizer, "m.gguf")


def test_go_template_subset():
    template = '{{- if .System }}[{{ .System }}]{{ else }}none{{ end -}}\n {{ range .Messages }}{{ if ne .Role "user" }}<{{ .Content }}>{{ end }}{{ end }}'
    data = {"System": "", "Messages": [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}]}
    assert render_go_template(template, data) == "none<b>"
    assert render_go_template(template, {**data, "System": "s"}) == "[s]<b>"
