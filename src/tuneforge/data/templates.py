"""Bundled chat templates for tokenizers that ship without one, and the choice between them and the tokenizer's own.

The templates live as Jinja files in `tuneforge/resources/templates/`: `chatml` (Qwen-style tools), `llama3`,
`mistral` and `gemma`. Each supports a system prompt, multi-turn chats, a `tools` list, assistant tool calls, tool
results and `add_generation_prompt`, and each is prefix-stable (a conversation cut after any turn renders to a
prefix of the whole), which the loss mask in `tuneforge.data.render` relies on.

No token is ever added to the tokenizer (that would change the embedding size). Markers such as `<|eot_id|>` or
`<start_of_turn>` that are not tokens of the vocabulary are rendered, tokenized and learned as ordinary text.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from tuneforge.errors import UserError
from tuneforge.registry import Registry

__all__ = ["TEMPLATES", "bundled_template", "ensure_chat_template"]

# Every tuneforge/resources/templates/NAME.jinja file is the bundled template NAME: adding one is adding its file.
TEMPLATES: Registry[Traversable] = Registry("chat template")
for _file in sorted((resources.files("tuneforge") / "resources" / "templates").iterdir(), key=lambda f: f.name):
    if _file.name.endswith(".jinja"):
        TEMPLATES.register(_file.name.removesuffix(".jinja"))(_file)


def bundled_template(name: str) -> str:
    """The Jinja text of the bundled chat template `name`; unknown names raise a UserError with a suggestion."""
    return TEMPLATES.get(name).read_text(encoding="utf-8")


def ensure_chat_template(tokenizer: Any, name: str | None) -> str:
    """Give `tokenizer` the chat template to train with and describe it.

    An explicit `name` always wins over the tokenizer's own template; without one the tokenizer's template is
    kept, and a tokenizer without any template is an error that names the bundled choices.
    """
    if name is not None:
        tokenizer.chat_template = bundled_template(name)
        return f"bundled chat template {name!r}"
    if getattr(tokenizer, "chat_template", None):
        return "the tokenizer's own chat template"
    raise UserError(
        "the tokenizer has no chat template; set data.template to one of the bundled templates: "
        f"{', '.join(TEMPLATES.names())}."
    )
