"""Both languages are complete: every config field and every interface string has English and Chinese."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

import tuneforge.methods  # noqa: F401
from tuneforge.export import EXPORTERS
from tuneforge.methods import METHODS
from tuneforge.methods.base import SAMPLE_KINDS
from tuneforge.models.adapters import ADAPTERS
from tuneforge.webui.forms import form_fields
from tuneforge.webui.i18n import field_help, field_label, language_code, missing_translations, text
from tuneforge.webui.i18n.fields import FIELDS_ZH
from tuneforge.webui.i18n.ui import UI

WEBUI = Path(__file__).resolve().parents[2] / "src" / "tuneforge" / "webui"
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_field_and_string_has_both_languages() -> None:
    assert missing_translations(form_fields()) == []


def test_missing_translations_finds_a_field_without_chinese(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = form_fields()
    monkeypatch.delitem(FIELDS_ZH, "train.learning_rate")
    monkeypatch.setitem(UI, "tab.train", ("Train", ""))
    assert missing_translations(specs) == ["field train.learning_rate", "ui tab.train"]


def test_no_translation_is_left_over_from_a_removed_field() -> None:
    assert set(FIELDS_ZH) - {spec.key for spec in form_fields()} == set()


def test_chinese_help_is_chinese_and_shown_for_zh() -> None:
    for spec in form_fields():
        label, help_text = FIELDS_ZH[spec.key]
        assert CJK.search(help_text), spec.key
        assert field_label(spec, "中文") == label
        assert field_help(spec, "zh") == f"{help_text} [{'.'.join(spec.path)}]"
    lr = next(s for s in form_fields() if s.key == "train.learning_rate")
    assert (field_label(lr, "English"), field_label(lr, "zh")) == ("Learning rate", "学习率")


def test_every_registered_name_has_its_words() -> None:
    """Registries grow: a new method, adapter, sample kind or export format needs its line in the table."""
    keys = [f"method.{n}" for n in METHODS.names()] + [f"adapter.{n}" for n in ADAPTERS.names()]
    keys += [f"kind.{k}" for k in SAMPLE_KINDS] + [f"export.{n}" for n in EXPORTERS.names()]
    keys += [f"state.{s}" for s in ("running", "stopping", "finished", "failed", "stopped")]
    assert [key for key in keys if key not in UI] == []


def test_placeholders_match_between_languages() -> None:
    def fields(template: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}

    for key, (en, zh) in UI.items():
        assert fields(en) == fields(zh), key
    assert (
        text("train.started", "zh", config="configs/a.yaml", rows="对话 8")
        == "已启动，配置 configs/a.yaml（对话 8 行）。"
    )


def test_every_key_the_page_uses_is_in_the_table() -> None:
    """Literal keys in the web UI's code (text("…"), label="…", value="…", …) all exist."""
    pattern = re.compile(r"""(?:text\(|(?:label|info|value|placeholder)=)["']([a-z]+\.[a-z_]+)["']""")
    used = {key for path in WEBUI.rglob("*.py") for key in pattern.findall(path.read_text(encoding="utf-8"))}
    used = {key for key in used if key.split(".")[0] in {k.split(".")[0] for k in UI}}
    assert len(used) > 90  # the pattern finds them (not an empty set passing vacuously)
    assert sorted(used - set(UI)) == []


@pytest.mark.parametrize(("choice", "code"), [("English", "en"), ("中文", "zh"), ("zh", "zh"), (None, "en")])
def test_language_switch_values(choice, code) -> None:
    assert language_code(choice) == code
