"""The Ollama Modelfile: its Go template renders conversations exactly like the tokenizer's chat template, and
Ollama's parser reads back exactly the commands intended, whatever text the chat template holds.

`parse_modelfile` (a port of Ollama's parser/parser.go) is first checked against cases from Ollama's own
parser_test.go; the Modelfiles are then read with it, as `ollama create` would read them.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from fixtures.ollama_cases import GO_FEATURES, TOOL_CONVERSATION
from fixtures.tiny_models import CHATML_TEMPLATE, build_tokenizer
from tuneforge.data.messages import Conversation
from tuneforge.data.render import conversation_text
from tuneforge.data.templates import bundled_template
from tuneforge.errors import UserError
from tuneforge.export.gotemplate import MAX_DEPTH, go_json, literal_action, render_go_template
from tuneforge.export.modelfile import ModelfileSyntaxError, modelfile_value, parse_modelfile
from tuneforge.export.ollama import modelfile, ollama_template_data

CONVERSATION = [
    {"role": "system", "content": "You are Conch."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Conch, made by tuneforge."},
    {"role": "user", "content": "你好！What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "Thanks."},
]
TINY_MODELFILE = '''FROM ./model-f16.gguf
TEMPLATE """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ $content := .Content }}{{ range $index, $call := .ToolCalls }}{{ if $index }}
{{ else if $content }}
{{ end }}{{ "<tool_call>\\n{\\"name\\": " }}{{ json .Function.Name }}{{ ", \\"arguments\\": " }}{{ "{" }}{{ $sep := "" }}\
{{ range $key, $value := .Function.Arguments }}{{ $sep }}{{ json $key }}: {{ json $value }}{{ $sep = ", " }}{{ end }}}}
</tool_call>{{ end }}<|im_end|>
{{ else if eq .Role "tool" }}<|im_start|>tool
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""
SYSTEM """You are a helpful assistant."""
PARAMETER stop "<|im_end|>"
PARAMETER temperature 0.7
PARAMETER num_ctx 2048
'''
HOSTILE = [
    'Be "careful".\n"""\nFROM /etc/passwd\nSYSTEM """pwned"""\nPARAMETER stop x',  # a line ends with """
    'Say "hi" twice.\nFROM /etc/passwd\nPARAMETER num_ctx 1\n"quoted line"\n{{ .System }} \\n',  # no such line
    '"""',
    "tab\there, and a bell \a and a zero-width joiner \u200d",  # characters Ollama's parser drops
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def _commands(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in parse_modelfile(text):
        found.setdefault(name, []).append(value)
    return found


def _ollama_render(text: str, messages: list[dict[str, Any]]) -> str:
    """What Ollama renders: .System from the conversation or else the SYSTEM default, .Messages the turns."""
    commands = _commands(text)
    default = commands.get("system", [""])[0]
    return render_go_template(commands["template"][0], ollama_template_data(messages, default))


def _with_default_system(tokenizer: Any, system: str) -> Any:
    """The tokenizer with a ChatML template whose default system prompt is `system`."""
    tokenizer.chat_template = CHATML_TEMPLATE.replace("You are a helpful assistant.", f"' + {json.dumps(system)} + '")
    return tokenizer


# ---------------------------------------------------------------------------------------------- the parser port

OLLAMA_PARSER_CASES = [  # from ollama parser/parser_test.go
    ('FROM foo\nSYSTEM """\nThis is a\nmultiline system.\n"""\n', [("system", "\nThis is a\nmultiline system.\n")]),
    ('FROM foo\nSYSTEM """This is a\nmultiline system."""\n', [("system", "This is a\nmultiline system.")]),
    ('FROM foo\nSYSTEM """"""\n', [("system", "")]),
    ('FROM foo\nSYSTEM ""\n', [("system", "")]),
    ('FROM foo\nSYSTEM "\'"\n', [("system", "'")]),
    ('FROM foo\nSYSTEM """\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""\n', [("system", "''\"'\"\"'\"\"'\"'''''\"\"'\"\"'")]),
    ('FROM foo\nSYSTEM """\nwith "quotes".\n"""\n', [("system", '\nwith "quotes".\n')]),
    ("FROM foo\nPARAMETER stop ### User: \n", [("stop", "### User:")]),
    ('FROM foo\nPARAMETER stop "### User: "\n', [("stop", "### User: ")]),
    ('FROM foo\nPARAMETER stop """### User:\n"""\n', [("stop", "### User:\n")]),
    ("FROM foo\nMESSAGE system You are a file parser.\n", [("message", "system: You are a file parser.")]),
    ("FROM foo\n# comment\nLICENSE MIT\n", [("license", "MIT")]),
]


@pytest.mark.parametrize(("text", "expected"), OLLAMA_PARSER_CASES)
def test_the_parser_port_agrees_with_ollamas_tests(text: str, expected: list[tuple[str, str]]) -> None:
    assert parse_modelfile(text) == [("model", "foo"), *expected]


def test_the_parser_port_reads_spaces_and_errors_like_ollama() -> None:
    assert parse_modelfile("FROM     FOOO BAR    ") == [("model", "FOOO BAR")]
    assert parse_modelfile('FROM "     model 1"\nLICENSE "MIT       "') == [
        ("model", "     model 1"),
        ("license", "MIT       "),
    ]
    assert parse_modelfile("PARAMETER what the \nFROM lemons make lemonade ") == [
        ("what", "the"),
        ("model", "lemons make lemonade"),
    ]
    for bad in (
        'FROM foo\nSYSTEM """This is a multiline system.""\n',
        "FROM foo\nBADCOMMAND x\n",
        "FROM foo\nMESSAGE badguy hi\n",
    ):
        with pytest.raises(ModelfileSyntaxError):
            parse_modelfile(bad)
    # why quoting needs care: a line of a triple-quoted value that ends with """ ends the value there
    assert parse_modelfile('FROM m\nSYSTEM """a"""\nFROM /etc/passwd"""\n')[1:] == [
        ("system", "a"),
        ("model", '/etc/passwd"""'),
    ]


@pytest.mark.parametrize("text", [*HOSTILE[1:3], 'a"\nFROM /x', " padded ", '""x', "<|im_end|>", "x\r\ny", ""])
def test_values_are_quoted_to_read_back_exactly(text: str) -> None:
    def read_back(quoted: str) -> list[tuple[str, str]]:
        return parse_modelfile(f"FROM ./m.gguf\nPARAMETER stop {quoted}\nPARAMETER num_ctx 8\n")

    expected = [("model", "./m.gguf"), ("stop", text), ("num_ctx", "8")]
    assert read_back(modelfile_value(text, "the value")) == expected
    for quotes in (('"', '"""', ""), ("", '"')):  # other preferences: any quoting chosen reads back exactly
        try:
            quoted = modelfile_value(text, "the value", quotes)
        except UserError:
            continue
        assert read_back(quoted) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [(HOSTILE[0], 'one of its lines ends with """'), ("a\x00b", r"it holds characters Ollama drops \(U\+0000\)")],
)
def test_values_no_quoting_can_carry_are_refused(text: str, reason: str) -> None:
    with pytest.raises(
        UserError, match=f"the default system prompt .* cannot be written in an Ollama Modelfile exactly: {reason}"
    ):
        modelfile_value(text, "the default system prompt")


# -------------------------------------------------------------------------------------------------- Modelfiles


def test_the_tiny_models_modelfile_is_exactly_this(tokenizer) -> None:
    tokenizer.chat_template = CHATML_TEMPLATE
    assert modelfile(tokenizer, "model-f16.gguf") == TINY_MODELFILE


@pytest.mark.parametrize("template", ["own", "chatml", "llama3"])
def test_modelfile_template_matches_the_chat_template(tokenizer, template):
    tokenizer.chat_template = CHATML_TEMPLATE if template == "own" else bundled_template(template)
    text = modelfile(tokenizer, "model-f16.gguf")
    assert parse_modelfile(text)[0] == ("model", "./model-f16.gguf")
    for messages in (CONVERSATION, CONVERSATION[1:], CONVERSATION[1:2]):
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert _ollama_render(text, messages) == expected
    assert "{{ range $index, $call := .ToolCalls }}" in text
    for messages in (TOOL_CONVERSATION, TOOL_CONVERSATION[1:], TOOL_CONVERSATION[1:4], TOOL_CONVERSATION[:6]):
        expected = conversation_text(tokenizer, Conversation(messages), generation=True)
        assert _ollama_render(text, [m.to_template() for m in messages]) == expected


def test_tool_results_the_template_groups_are_opened_and_closed_once_per_run(tokenizer) -> None:
    tokenizer.chat_template = bundled_template("chatml")  # tool results share one user turn
    text = modelfile(tokenizer, "m.gguf")
    rendered = _ollama_render(text, [m.to_template() for m in TOOL_CONVERSATION[1:6]])
    assert rendered.endswith(
        '<|im_start|>user\n<tool_response>\n{"temp": 18}\n</tool_response>\n<tool_response>\n{"temp": 25}\n'
        "</tool_response><|im_end|>\n<|im_start|>assistant\nParis: 18 C, 北京: 25 C.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京", "unit": "C"}}\n</tool_call>' in rendered


def test_a_template_whose_tool_calls_cannot_be_read_gets_no_tool_branches(tokenizer, caplog) -> None:
    tokenizer.chat_template = CHATML_TEMPLATE + "{# says tool_calls, renders none #}"
    with caplog.at_level("WARNING", logger="tuneforge.export.ollama"):
        text = modelfile(tokenizer, "m.gguf")
    assert ".ToolCalls" not in text and '"tool"' not in text
    assert "the Ollama template leaves tool calls out: cannot find one tool call's" in caplog.text
    for messages in (CONVERSATION, CONVERSATION[1:2]):
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert _ollama_render(text, messages) == expected


@pytest.mark.parametrize("system", HOSTILE, ids=["triple-quote-line", "injection", "only-quotes", "dropped-chars"])
def test_hostile_default_system_prompts_give_exactly_the_intended_commands(tokenizer, system: str) -> None:
    text = modelfile(_with_default_system(tokenizer, system), "m.gguf")
    commands = parse_modelfile(text)
    names = [name for name, _ in commands]
    writable = system in HOSTILE[1:3]  # the others cannot be a SYSTEM value: the template prints them instead
    assert names == ["model", "template", *(["system"] if writable else []), "stop", "temperature", "num_ctx"]
    values = dict(commands)
    assert (values["model"], values["stop"], values["temperature"], values["num_ctx"]) == (
        "./m.gguf",
        "<|im_end|>",
        "0.7",
        "2048",
    )
    assert values.get("system") == (system if writable else None)
    for messages in (CONVERSATION[1:], CONVERSATION[1:2], CONVERSATION):
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert _ollama_render(text, messages) == expected


QUOTES_AND_BRACES = (
    "{% for m in messages %}{{ '<\"\"\"' + m['role'] + '{{>\\n{' + m['content'] + '}<end>\\n' }}{% endfor %}"
    '{% if add_generation_prompt %}{{ \'<"""assistant{{>\\n{\' }}{% endif %}'
)
TRAILING_BRACE = (
    "{% for m in messages %}{{ '[' + m['role'] + ']{' + m['content'] + '}<end>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[assistant]{' }}{% endif %}"
)


@pytest.mark.parametrize(
    ("chat_template", "written"),
    [
        (QUOTES_AND_BRACES, '{{ "<\\"\\"\\"user{{>\\n{" }}{{ .Content }}}<end>'),
        (TRAILING_BRACE, '{{ "[user]{" }}{{ .Content }}}<end>'),  # "{" + "{{" would open the action one brace early
    ],
    ids=["quotes-and-braces", "trailing-brace"],
)
def test_template_text_with_quotes_and_braces_is_written_as_go_strings(
    tokenizer, chat_template: str, written: str
) -> None:
    tokenizer.chat_template = chat_template
    text = modelfile(tokenizer, "m.gguf")
    assert [name for name, _ in parse_modelfile(text)] == [
        "model",
        "template",
        "stop",
        "stop",
        "temperature",
        "num_ctx",
    ]
    assert written in _commands(text)["template"][0]
    for messages in (CONVERSATION, CONVERSATION[1:2]):
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert _ollama_render(text, messages) == expected


def test_templates_that_fold_the_system_prompt_are_refused_with_the_way_out(tokenizer):
    tokenizer.chat_template = bundled_template("gemma")
    with pytest.raises(UserError, match="GGUF file embeds the original template"):
        modelfile(tokenizer, "m.gguf")


# ------------------------------------------------------------------------------------------------ Go templates


def test_go_template_subset():
    template = '{{- if .System }}[{{ .System }}]{{ else }}none{{ end -}}\n {{ range .Messages }}{{ if ne .Role "user" }}<{{ .Content }}>{{ end }}{{ end }}'
    data = {"System": "", "Messages": [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}]}
    assert render_go_template(template, data) == "none<b>"
    assert render_go_template(template, {**data, "System": "s"}) == "[s]<b>"
    assert render_go_template('{{ if eq $.System "s" }}{{ "a\\"}}\\n" }}{{ end }}', {"System": "s"}) == 'a"}}\n'


@pytest.mark.parametrize(
    ("template", "data", "expected"), GO_FEATURES, ids=[f"go-{i}" for i in range(len(GO_FEATURES))]
)
def test_variables_fields_ranges_and_functions_render_as_go_does(template: str, data: dict, expected: str) -> None:
    assert render_go_template(template, data) == expected


def test_go_json_writes_what_go_encoding_json_writes() -> None:
    assert go_json({"b": 1.0, "a": ["x<y", 1e21, 0.5, False]}) == '{"a":["x\\u003cy",1e+21,0.5,false],"b":1}'


@pytest.mark.parametrize(
    "text", ['say "hi"', "a\\b", "{{ .System }}", "}}{{", "line\nbreak\r\ttab", "\x00\a\u200d😀 é"]
)
def test_literal_actions_print_their_text_exactly(text: str) -> None:
    assert render_go_template(literal_action(text), {"System": "no"}) == text


MALFORMED = {
    "{{ if }}x{{ end }}": "line 1 column 1: a condition must be",
    "a\n{{ if .System }}x": "line 2 column 1: no matching {{ end }} in {{ if .System }}",
    "{{ end }}": "unexpected 'end': no if or range is open",
    "{{ else }}": "unexpected 'else'",
    "{{ range }}{{ end }}": "range needs exactly one field",
    "{{ range .Messages }}": "no matching {{ end }}",
    "x {{ .System": "line 1 column 3: unclosed action",
    '{{ "abc }}': "unterminated string constant",
    "{{ if eq .Role }}x{{ end }}": "a condition must be",
    "{{ if .A }}{{ else }}{{ else }}{{ end }}": "expected {{ end }} in {{ else }}",
    '{{ template "x" }}': "unsupported action",
    "{{ }}": "unsupported action",
    '{{ "\\q" }}': "unknown escape",
    "{{ if .A }}" * 5000: f"blocks nested deeper than {MAX_DEPTH} levels",
    "{{ range .System }}x{{ end }}": "range over .System needs a list, not a str",
    "{{ range .Messages }}{{ .Content }}{{ end }}": "cannot read .Content from a str",
}


@pytest.mark.parametrize("template", list(MALFORMED), ids=[f"malformed-{i}" for i in range(len(MALFORMED))])
def test_malformed_templates_raise_a_user_error_naming_the_place(template: str) -> None:
    with pytest.raises(UserError, match="Go template") as error:
        render_go_template(template, {"System": "abc", "Messages": ["not a message"]})
    assert MALFORMED[template] in str(error.value)


def test_random_templates_render_or_raise_a_user_error() -> None:
    """Fuzz: templates glued from fragments either render to text or raise a UserError, never anything else."""
    fragments = [
        "{{", "}}", "{{ ", " }}", "{{- ", " -}}", "if ", "else ", "else if ", "end", "range ", ".System", ".Messages",
        ".Content", ".Role", "$.System", "eq ", "ne ", '"user"', '"', "\\", "text ", "\n", "{{ end }}", "{{ else }}",
        "{{ if .System }}", "{{ range .Messages }}", "{{ .Content }}", '{{ "a\\n" }}',
    ]  # fmt: skip
    data = {"System": "s", "Messages": [{"Role": "user", "Content": "c"}, {"Role": "assistant", "Content": "d"}]}
    rng = random.Random(0)
    outcomes = {"rendered": 0, "refused": 0}
    for _ in range(2000):
        template = "".join(rng.choice(fragments) for _ in range(rng.randint(1, 14)))
        try:
            render_go_template(template, data)
            outcomes["rendered"] += 1
        except UserError:
            outcomes["refused"] += 1
    assert min(outcomes.values()) > 100  # the fuzz reaches both outcomes
