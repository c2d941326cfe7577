"""Every reliability scenario has a test, and the report tool renders their outcomes."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

from scenarios import SCENARIOS

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def marked_scenarios() -> dict[str, list[str]]:
    """Scenario id -> test functions carrying `pytest.mark.scenario(id)`, found by reading the test files."""
    found: dict[str, list[str]] = {}
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.ClassDef):
                continue
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Attribute)
                    and decorator.func.attr == "scenario"
                    and decorator.args
                    and isinstance(decorator.args[0], ast.Constant)
                ):
                    found.setdefault(decorator.args[0].value, []).append(f"{path.name}::{node.name}")
    return found


def test_every_scenario_has_a_test_and_every_mark_is_known() -> None:
    marked = marked_scenarios()
    assert sorted(set(SCENARIOS) - set(marked)) == []
    assert sorted(set(marked) - set(SCENARIOS)) == []


def load_report_tool():
    spec = importlib.util.spec_from_file_location("reliability_report", ROOT / "tools" / "reliability_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reliability_report"] = module
    spec.loader.exec_module(module)
    return module


def test_report_marks_a_scenario_failed_when_one_of_its_tests_failed(tmp_path: Path) -> None:
    tool = load_report_tool()
    rows = [
        {"scenario": "determinism", "test": "a", "outcome": "passed", "duration": 1.0},
        {"scenario": "determinism", "test": "b", "outcome": "failed", "duration": 2.0},
        {"scenario": "accumulation", "test": "c", "outcome": "passed", "duration": 0.5},
    ]
    lines = {line.split(" | ")[0].lstrip("| "): line for line in tool.table(rows).splitlines()[2:]}
    assert lines[SCENARIOS["determinism"]].endswith("| **FAIL** | 1/2 | 3.0 s |")
    assert lines[SCENARIOS["accumulation"]].endswith("| pass | 1/1 | 0.5 s |")
    assert lines[SCENARIOS["full_disk"]].endswith("| no test | 0/0 | 0.0 s |")


def test_report_replaces_only_the_marked_block(tmp_path: Path) -> None:
    tool = load_report_tool()
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n{tool.START}\nold table\n{tool.END}\nafter\n", encoding="utf-8")
    tool.write_readme(readme, "| new |")
    text = readme.read_text(encoding="utf-8")
    assert "old table" not in text and "| new |" in text
    assert text.startswith("# T\n\nbefore\n") and text.endswith(f"{tool.END}\nafter\n")
