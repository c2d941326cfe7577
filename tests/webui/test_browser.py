"""The page in a real browser: Playwright driving Debian's Chromium against `tuneforge webui`, fully offline.

One walk through what a user does: open the page, pick the tiny test model and a small dataset, see a dataset
that does not fit the method refused, start a 5-step run, reload the page while it trains (the page reattaches),
watch it finish with its loss curve, then chat with the run and get the answer the model really gives. Every
request that would leave the machine is blocked and recorded: there must be none. Screenshots of each tab go
to tests/webui/artifacts/ (or $TUNEFORGE_TEST_ARTIFACTS).

`make test` installs Chromium (apt) and Playwright (pip). Without them the test is skipped on a developer's
machine and fails in CI (CI=true).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from webui_helpers import make_workspace

from e2e.cli_helpers import MEMORISE

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TUNEFORGE_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _missing() -> str | None:
    try:
        import gradio  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        return f"{err.name} is not installed (pip install -e '.[dev,webui]')"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=en-US"]
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Iterator[tuple[str, Path]]:
    """`tuneforge webui` on a free port, over a workspace holding the tiny model and the data."""
    workspace = make_workspace(tmp_path_factory.mktemp("webui") / "ws", tiny_llama_dir)
    port = _free_port()
    log = (workspace.parent / "server.log").open("w", encoding="utf-8")
    command = [sys.executable, "-m", "tuneforge.cli.main", "webui", "--workspace", str(workspace), "--port", str(port)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, (workspace.parent / "server.log").read_text(encoding="utf-8")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, "the web UI did not start within 120 s"
        time.sleep(0.5)
    yield url, workspace
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _pick(page: Any, field: str, value: str, custom: bool = True) -> None:
    """Choose `value` in a dropdown: typed (custom values) or clicked among the options."""
    box = page.locator(f"#{field} input")
    box.click()
    if custom:
        box.fill(value)
        box.press("Enter")
    else:
        page.get_by_role("option", name=re.compile("^" + re.escape(value))).first.click()
    page.keyboard.press("Escape")


def _wait_text(locator: Any, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        shown = locator.inner_text()
        if re.search(pattern, shown):
            return shown
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {pattern!r}; the page shows {shown!r}"
        time.sleep(0.5)


def _expected_answer(run_dir: Path, prompt: str) -> str:
    """What the trained run answers, computed here with the library (greedy, the chat tab's 128 tokens)."""
    from tuneforge.models.generate import generate_replies
    from tuneforge.models.load import load_model

    loaded = load_model(str(run_dir))
    return generate_replies(loaded.model, loaded.tokenizer, [[{"role": "user", "content": prompt}]], 128)[0].text


def test_train_watch_reload_and_chat_offline(browser: Any, server: tuple[str, Path]) -> None:
    url, workspace = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    left: list[str] = []

    def loopback_only(route: Any) -> None:
        request_url = route.request.url
        host = urllib.parse.urlparse(request_url).hostname
        if request_url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            left.append(request_url)
            route.abort()

    page.route("**/*", loopback_only)
    page.goto(url)
    page.locator("#train-start").wait_for(timeout=60_000)

    # the language switch re-words the page: tabs, buttons, every field's label and help
    page.get_by_label("中文").check()
    _wait_text(page.locator("#tab-train-button"), "训练", 60)
    _wait_text(page.locator("#f-train-learning_rate"), "学习率[\\s\\S]*峰值学习率。 \\[train.learning_rate\\]", 30)
    _wait_text(page.locator("#train-start"), "开始", 30)
    _shot(page, "train-zh")
    page.get_by_label("English").check()
    _wait_text(page.locator("#f-train-learning_rate"), "Learning rate[\\s\\S]*Peak learning rate.", 60)

    # the form: the tiny model, a small dataset, 5 steps; YAML and command follow the fields
    _pick(page, "f-model-name_or_path", "models/tiny")
    _pick(page, "f-data-train", "data/memorise.jsonl")
    steps = page.locator("#f-train-max_steps input")
    steps.fill("5")
    steps.press("Tab")
    page.get_by_text("Before/after evaluation").click()  # open the accordion: questions asked before and after
    questions = page.locator("#f-eval-questions textarea, #f-eval-questions input").first
    questions.fill("data/questions.json")
    questions.press("Tab")
    answer_length = page.locator("#f-eval-max_new_tokens input")
    answer_length.fill("16")
    answer_length.press("Tab")
    _wait_text(page.locator("#config-check"), "✓ valid config", 30)
    yaml_text = _wait_text(page.locator("#config-yaml"), "max_steps: 5", 30)
    run_name = re.search(r"dir: runs/(run-[\d-]+)", yaml_text).group(1)
    command = page.locator("#cli-command textarea").input_value()
    assert command == f"cd {workspace} && tuneforge train configs/{run_name}.yaml"

    # the data preview: samples rendered with the model's template, supervised tokens highlighted, the report
    page.get_by_text("Data preview", exact=True).click()
    page.locator("#train-preview-button").click()
    _wait_text(page.locator("#preview-check"), r"sft can train on this data \(chat\)", 120)
    _wait_text(page.locator("#preview-samples"), r"sample 1: data/memorise\.jsonl:\d+ \(chat; \d+ tokens", 10)
    assert page.locator("#preview-samples span[style*='#bbf7d0']").count() >= 4  # legend + each sample's answer
    _shot(page, "train")

    # each method offers its own fields; data that does not fit the chosen method is refused before Start
    assert not page.locator("#f-method-dpo-beta").is_visible()
    _pick(page, "f-method-name", "dpo", custom=False)
    page.locator("#f-method-dpo-beta").wait_for(state="visible", timeout=10_000)
    page.locator("#train-start").click()
    _wait_text(page.locator("#train-message"), "method 'dpo' trains on preference pairs", 60)
    assert not (workspace / "runs" / run_name).exists()
    _pick(page, "f-method-name", "sft", custom=False)
    _wait_text(page.locator("#method-info"), "sft", 10)

    page.locator("#train-start").click()
    helper = ThreadPoolExecutor(1)  # the test's own model work overlaps the page's
    helper.submit(importlib.import_module, "tuneforge.models.load")
    _wait_text(page.locator("#train-status"), "running", 60)
    page.reload()  # the page reattaches to the running job
    page.locator("#train-start").wait_for(timeout=60_000)
    _wait_text(page.locator("#train-status"), f"(running|finished) · runs/{run_name}", 90)
    if "running" in page.locator("#train-status").inner_text():  # the form shows the running job's config again
        _wait_text(page.locator("#config-yaml"), f"dir: runs/{run_name}", 30)
        assert page.locator("#f-model-name_or_path input").input_value() == "models/tiny"
    _wait_text(page.locator("#train-status"), f"finished · runs/{run_name}", 240)
    log = page.locator("#train-log textarea").input_value()
    assert re.search(r"^training .* 5/5 eta", log, re.MULTILINE) and "done in" in log, log
    curve = page.locator("#loss-plot img")
    curve.wait_for(timeout=30_000)  # the loss curve, drawn from the run's metrics.jsonl
    assert curve.get_attribute("src").startswith("data:image/png;base64,")
    _shot(page, "train-finished")
    run_dir = workspace / "runs" / run_name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5]

    # chat with the run: the page shows what the model answers
    prompt = MEMORISE[0][0]
    expected_answer = helper.submit(_expected_answer, run_dir, prompt)
    page.get_by_role("tab", name="Chat").click()
    _pick(page, "chat-model", run_name, custom=False)
    page.locator("#chat-prompt textarea").fill(prompt)
    page.locator("#chat-send").click()
    answer = page.locator('#chat-tuned [data-testid="bot"]')
    answer.wait_for(timeout=120_000)
    expected = expected_answer.result(timeout=300) or "(empty answer)"
    helper.shutdown()
    _wait_text(page.locator("#chat-send"), "Send", 5)
    deadline = time.monotonic() + 60
    while " ".join(answer.inner_text().split()) != " ".join(expected.split()):
        assert time.monotonic() < deadline, (answer.inner_text(), expected)
        time.sleep(0.5)
    _shot(page, "chat")

    # the before/after report training wrote (eval.questions) is shown for the run
    page.get_by_role("tab", name="Evaluate").click()
    _pick(page, "eval-run", run_name, custom=False)
    _wait_text(page.locator("#eval-report"), re.escape(MEMORISE[0][0]), 30)
    assert "compare.html" in page.locator("#eval-links").inner_text()
    for tab in ("Evaluate", "Export", "Serve", "Runs"):
        page.get_by_role("tab", name=tab).click()
        time.sleep(1)
        _shot(page, tab.lower())
    _wait_text(page.locator("#runs-table"), rf"{run_name}\s+finished\s+sft\s+lora", 10)
    # each run links to its reports; the page serves files of the runs folder and nothing else
    href = page.locator("#runs-table a", has_text="compare.md").first.get_attribute("href")
    report = page.request.get(urllib.parse.urljoin(url, href))
    assert report.status == 200 and MEMORISE[0][0] in report.text()
    for outside in ("/etc/passwd", str(workspace / "data" / "memorise.jsonl")):
        assert page.request.get(urllib.parse.urljoin(url, "gradio_api/file=" + outside)).status in (403, 404)

    assert left == []  # nothing was fetched from outside the machine: fonts, scripts and analytics are local or off
    page.close()
