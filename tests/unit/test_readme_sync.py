"""README.md and README_zh.md stay in step: same sections, same commands, same generated tables.

The Chinese README is a translation, so its prose cannot be compared; what can is its skeleton: the heading levels
in order, every fenced code block byte for byte, every inline `tuneforge ...` / `make ...` command, and the blocks
that tools write between `<!-- name:start -->` / `<!-- name:end -->` markers (identical in both files).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGLISH, CHINESE = ROOT / "README.md", ROOT / "README_zh.md"
# Blocks written by tools: tools/reliability_report.py and benchmarks/readme_table.py.
GENERATED = ("reliability", "bench")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`([^`]+)`")
COMMAND = re.compile(r"^(?:[\w.~-]*/)*(?:tuneforge|make)(?:\s|$)")
BLOCK_START = re.compile(r"^\s*(?:[-*+] |\d+[.)] |\||#)")
LINK = re.compile(r"\]\(#([^)\s]+)\)")


def split_fences(text: str) -> tuple[list[str], list[str]]:
    """The fenced code blocks (fence lines included, verbatim) and the lines outside them, in order."""
    blocks: list[str] = []
    prose: list[str] = []
    current: list[str] | None = None
    marker = ""
    for line in text.splitlines(keepends=True):
        match = FENCE.match(line)
        if current is None:
            if match:
                current, marker = [line], match.group(1)
            else:
                prose.append(line)
        else:
            current.append(line)
            if match and match.group(1) == marker and line.strip() == marker:
                blocks.append("".join(current))
                current = None
    if current is not None:
        blocks.append("".join(current))
    return blocks, prose


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every markdown heading outside code blocks."""
    _, prose = split_fences(text)
    found = []
    for line in prose:
        match = HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def paragraphs(lines: list[str]) -> list[str]:
    """Prose lines grouped as markdown pairs backticks: a blank line, list item, table row or heading starts anew."""
    groups: list[list[str]] = []
    for line in lines:
        if not line.strip():
            groups.append([])
        elif not groups or BLOCK_START.match(line):
            groups.append([line])
        else:
            groups[-1].append(line)
    return ["".join(group) for group in groups if group]


def inline_commands(text: str) -> set[str]:
    """Inline code spans outside code blocks that are `tuneforge ...` or `make ...` commands (spaces collapsed)."""
    _, prose = split_fences(text)
    spans = (" ".join(span.split()) for block in paragraphs(prose) for span in INLINE_CODE.findall(block))
    return {span for span in spans if COMMAND.match(span)}


def generated_blocks(text: str) -> dict[str, str]:
    """The text between each `<!-- name:start -->` / `<!-- name:end -->` pair, by name."""
    found = {}
    for name in GENERATED:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start in text or end in text:
            head, _, rest = text.partition(start)
            body, closed, _ = rest.partition(end)
            found[name] = body if closed else "<unclosed>"
    return found


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens (CJK kept)."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def broken_links(text: str) -> list[str]:
    """In-page links `](#anchor)` that name no heading of the same file."""
    anchors = {anchor(title) for _, title in headings(text)}
    return [target for target in LINK.findall(text) if target not in anchors]


def sync_problems(english: str, chinese: str) -> list[str]:
    """Everything that differs in the two READMEs' skeletons, one message each (empty when in sync)."""
    problems = []
    levels_en = [level for level, _ in headings(english)]
    levels_zh = [level for level, _ in headings(chinese)]
    if levels_en != levels_zh:
        titles_en, titles_zh = headings(english), headings(chinese)
        for index in range(max(len(titles_en), len(titles_zh))):
            left = titles_en[index] if index < len(titles_en) else None
            right = titles_zh[index] if index < len(titles_zh) else None
            if left is None or right is None or left[0] != right[0]:
                problems.append(f"sections differ from heading #{index + 1}: English {left}, Chinese {right}")
                break
    blocks_en, _ = split_fences(english)
    blocks_zh, _ = split_fences(chinese)
    if len(blocks_en) != len(blocks_zh):
        problems.append(f"code blocks: {len(blocks_en)} in English, {len(blocks_zh)} in Chinese")
    for index, (left, right) in enumerate(zip(blocks_en, blocks_zh, strict=False)):
        if left != right:
            problems.append(f"code block #{index + 1} differs:\n{left}---- vs ----\n{right}")
            break
    commands_en, commands_zh = inline_commands(english), inline_commands(chinese)
    for command in sorted(commands_en - commands_zh):
        problems.append(f"inline command only in English: `{command}`")
    for command in sorted(commands_zh - commands_en):
        problems.append(f"inline command only in Chinese: `{command}`")
    generated_en, generated_zh = generated_blocks(english), generated_blocks(chinese)
    for name in sorted(set(generated_en) | set(generated_zh)):
        if generated_en.get(name) != generated_zh.get(name):
            problems.append(f"generated block '{name}' differs (rerun its tool with both READMEs)")
    return problems


# ---------------------------------------------------------------------------------------------- the real READMEs


def test_readmes_have_the_same_sections_commands_and_generated_tables() -> None:
    problems = sync_problems(ENGLISH.read_text(encoding="utf-8"), CHINESE.read_text(encoding="utf-8"))
    assert problems == [], "README_zh.md is out of step with README.md:\n" + "\n".join(problems)


def test_readmes_link_to_each_other_under_the_title() -> None:
    english = ENGLISH.read_text(encoding="utf-8").splitlines()
    chinese = CHINESE.read_text(encoding="utf-8").splitlines()
    assert english[0] == chinese[0] == "# tuneforge"
    assert "English | [中文](README_zh.md)" in english[1:4]
    assert "[English](README.md) | 中文" in chinese[1:4]


def test_both_readmes_carry_the_reliability_table() -> None:
    for path in (ENGLISH, CHINESE):
        block = generated_blocks(path.read_text(encoding="utf-8")).get("reliability", "")
        assert "| Scenario | Result | Tests | Time |" in block, path.name


@pytest.mark.parametrize("path", [ENGLISH, CHINESE], ids=lambda p: p.name)
def test_in_page_links_reach_a_heading(path: Path) -> None:
    assert broken_links(path.read_text(encoding="utf-8")) == []


def test_reliability_report_rewrites_every_readme_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("reliability_report", ROOT / "tools" / "reliability_report.py")
    tool = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "reliability_report", tool)
    spec.loader.exec_module(tool)
    scenario = next(iter(tool.SCENARIOS))

    def fake_run(record: Path) -> int:  # the scenario tests themselves are not rerun here
        record.write_text(json.dumps({"scenario": scenario, "outcome": "passed", "duration": 1.25}) + "\n")
        return 0

    monkeypatch.setattr(tool, "run_scenarios", fake_run)
    english, chinese = tmp_path / "README.md", tmp_path / "README_zh.md"
    english.write_text(f"# T\n\n## A\n\n{tool.START}\nold\n{tool.END}\n\n## B\n", encoding="utf-8")
    chinese.write_text(f"# T\n\n## 甲\n\n{tool.START}\n旧\n{tool.END}\n\n## 乙\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["reliability_report.py", str(english), str(chinese)])
    assert tool.main() == 0
    texts = [english.read_text(encoding="utf-8"), chinese.read_text(encoding="utf-8")]
    blocks = [generated_blocks(text)["reliability"] for text in texts]
    assert blocks[0] == blocks[1]
    assert f"| {tool.SCENARIOS[scenario]} | pass | 1/1 | 1.2 s |" in blocks[0]
    assert "old" not in texts[0] and "旧" not in texts[1]
    assert texts[1].startswith("# T\n\n## 甲\n\n") and texts[1].endswith(f"{tool.END}\n\n## 乙\n")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "tools/reliability_report.py README.md README_zh.md" in makefile


# ------------------------------------------------------------------------------- the check itself, on small texts

EN = """# tool

English | [中文](README_zh.md)

## Install

Run `make demo` first, then `tuneforge train cfg.yaml`; see [Usage](#usage).

```bash
make demo   # installs
```

## Usage

<!-- reliability:start -->
| Scenario | Result |
<!-- reliability:end -->
"""

ZH = """# tool

[English](README.md) | 中文

## 安装

先运行 `make demo`，再运行
`tuneforge train cfg.yaml`；见 [用法](#用法)。

```bash
make demo   # installs
```

## 用法

<!-- reliability:start -->
| Scenario | Result |
<!-- reliability:end -->
"""


def test_sync_check_accepts_a_faithful_translation() -> None:
    assert sync_problems(EN, ZH) == []
    assert broken_links(EN) == broken_links(ZH) == []
    assert inline_commands(ZH) == {"make demo", "tuneforge train cfg.yaml"}


def test_sync_check_fails_on_a_section_added_to_one_readme() -> None:
    added = EN + "\n### Extra\n\ntext\n"
    assert any("sections differ from heading #4" in p for p in sync_problems(added, ZH))
    assert any("sections differ" in p for p in sync_problems(EN, ZH + "\n## 额外\n"))
    # the same number of headings at another level is a different structure too
    assert any("sections differ" in p for p in sync_problems(EN, ZH.replace("## 用法", "### 用法")))


def test_sync_check_fails_on_a_command_added_to_one_readme() -> None:
    block = "\n```bash\ntuneforge export runs/x --to out\n```\n"
    assert any("code blocks: 2 in English, 1 in Chinese" in p for p in sync_problems(EN + block, ZH))
    assert any("code blocks: 1 in English, 2 in Chinese" in p for p in sync_problems(EN, ZH + block))
    changed = ZH.replace("make demo   # installs", "make demo  # installs")
    assert any("code block #1 differs" in p for p in sync_problems(EN, changed))
    inline = EN.replace("first,", "first (or `make test`),")
    assert sync_problems(inline, ZH) == ["inline command only in English: `make test`"]
    assert sync_problems(EN, ZH + "\n`tuneforge serve runs/x`\n") == [
        "inline command only in Chinese: `tuneforge serve runs/x`"
    ]


def test_sync_check_fails_when_a_generated_block_differs_or_is_missing() -> None:
    stale = ZH.replace("| Scenario | Result |", "| Scenario | Result | Tests |")
    assert sync_problems(EN, stale) == ["generated block 'reliability' differs (rerun its tool with both READMEs)"]
    bench = "\n<!-- bench:start -->\n| job |\n<!-- bench:end -->\n"
    assert sync_problems(EN + bench, ZH) == ["generated block 'bench' differs (rerun its tool with both READMEs)"]
    assert sync_problems(EN + bench, ZH + bench) == []


def test_links_to_a_missing_heading_are_found() -> None:
    assert broken_links(ZH.replace("(#用法)", "(#usage)")) == ["usage"]
