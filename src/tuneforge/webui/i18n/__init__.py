"""The web UI's two languages, English and Chinese: the one home of every user-visible string of the page.

`text(key, lang)` looks up an interface string (table in `ui.py`); `field_label` / `field_help` give a config
field's label and help: English help is the schema's own description (the single source of help text), Chinese
comes from `fields.py`. `missing_translations` lists what a test must find empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tuneforge.webui.i18n.fields import EN_LABELS, FIELDS_ZH
from tuneforge.webui.i18n.ui import UI

if TYPE_CHECKING:
    from tuneforge.webui.forms import FieldSpec

__all__ = ["LANGUAGES", "field_help", "field_label", "language_code", "missing_translations", "text"]

LANGUAGES: dict[str, str] = {"en": "English", "zh": "中文"}


def language_code(choice: str | None) -> str:
    """The language code ("en" or "zh") of a code or or its name as the switch shows it (default English)."""
    for code, name in LANGUAGES.items():
        if choice in (code, name):
            return code
    return "en"


def text(key: str, lang: str, **values: object) -> str:
    """The interface string `key` in `lang`, with `{name}` placeholders filled from `values`."""
    en, zh = UI[key]
    template = zh if language_code(lang) == "zh" else en
    return template.format(**values) if values else template


def field_label(spec: FieldSpec, lang: str) -> str:
    """A config field's label: Chinese from the table, English from the field name."""
    if language_code(lang) == "zh" and spec.key in FIELDS_ZH:
        return FIELDS_ZH[spec.key][0]
    return EN_LABELS.get(spec.name) or spec.name.replace("_", " ").capitalize()


def field_help(spec: FieldSpec, lang: str) -> str:
    """A config field's help: the schema's description, or its Chinese translation; the YAML key follows."""
    if language_code(lang) == "zh" and spec.key in FIELDS_ZH:
        body = FIELDS_ZH[spec.key][1]
    else:
        body = spec.help
    return f"{body} [{'.'.join(spec.path)}]"


def missing_translations(specs: Iterable[FieldSpec]) -> list[str]:
    """Fields without a Chinese label and help, and interface strings missing a language (empty: complete)."""
    missing = [f"field {spec.key}" for spec in specs if not all(FIELDS_ZH.get(spec.key, ("", "")))]
    missing += [f"ui {key}" for key, pair in UI.items() if len(pair) != 2 or not all(p.strip() for p in pair)]
    return missing
