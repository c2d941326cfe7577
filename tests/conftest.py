"""Shared pytest configuration: offline environment and tiny model fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    # lets tests do `from fixtures.tiny_models import ...` without touching pyproject's pytest config
    sys.path.insert(0, str(TESTS_DIR))

# Set at import time too, so that modules imported during collection (transformers, datasets,
# huggingface_hub read some of these once at import) already see the offline settings.
_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
os.environ.update(_OFFLINE_ENV)


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory: pytest.TempPathFactory):
    """Force offline mode for the whole session and point TUNEFORGE_HOME at a throwaway directory."""
    home = tmp_path_factory.mktemp("tuneforge_home")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _OFFLINE_ENV.items():
            mp.setenv(key, value)
        mp.setenv("TUNEFORGE_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with a tiny random LlamaForCausalLM + ChatML tokenizer (safetensors)."""
    from fixtures.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), arch="llama", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with a tiny random Qwen2ForCausalLM + ChatML tokenizer (safetensors)."""
    from fixtures.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"), arch="qwen2", seed=0)


def pytest_configure(config: pytest.Config) -> None:
    """Register the scenario marker (see tests/scenarios.py)."""
    config.addinivalue_line("markers", "scenario(id): proves a reliability scenario of tests/scenarios.py")


# The longest test files (minutes each: the real `make demo`, a browser, an offline install) run first, so that
# with several test processes (make test) one starts on them while the others share out the rest.
LONGEST_FIRST = ("e2e/test_default_model.py", "webui/test_browser.py", "e2e/test_bundle.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A scenario marker must name a known scenario; the longest test files go first."""
    from scenarios import SCENARIOS

    for item in items:
        for mark in item.iter_markers("scenario"):
            if not mark.args or mark.args[0] not in SCENARIOS:
                raise pytest.UsageError(f"{item.nodeid}: unknown scenario {mark.args!r}; see tests/scenarios.py")

    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within each file and among the others is kept


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With TUNEFORGE_SCENARIO_RECORD set, append each scenario test's outcome there (for make reliability)."""
    record = os.environ.get("TUNEFORGE_SCENARIO_RECORD")
    scenario = dict(report.user_properties).get("scenario")
    if not record or not scenario or (report.when != "call" and report.outcome == "passed"):
        return
    import json

    row = {"scenario": scenario, "test": report.nodeid, "outcome": report.outcome, "duration": report.duration}
    with open(record, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


@pytest.fixture(autouse=True)
def _scenario_property(request: pytest.FixtureRequest) -> None:
    """Carry a test's scenario id into its report (read by pytest_runtest_logreport)."""
    mark = request.node.get_closest_marker("scenario")
    if mark is not None:
        request.node.user_properties.append(("scenario", mark.args[0]))
