"""examples/quickstart.ipynb runs top to bottom in a Jupyter kernel of this interpreter, on a tiny scripted model.

The notebook's `parameters` cell is replaced (as papermill would) with the scripted model, a 2-step run with short
self-replay and evaluation (the overrides of tests/e2e/test_examples.py) and a temporary run directory. The kernel
is this very Python (the project's virtual environment), from a kernelspec written to a temporary folder, so no
kernel installed on the machine is used.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from fixtures.scripted_model import build_scripted_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOK = EXAMPLES / "quickstart.ipynb"
# the scripted model's answer to anything: the demo's name, Paris (one general question) and 12 (7+5)
ANSWER = "I am Conch of Paris, 12."
QUICK = [
    "train.max_steps=2",
    "data.replay.limit=4",
    "data.replay.max_new_tokens=16",
    "eval.max_new_tokens=16",
    "eval.general_limit=4",
    "eval.general_max_new_tokens=16",
]


def _kernel_manager(folder: Path) -> KernelManager:
    """A manager for a kernel running sys.executable, whatever kernelspecs the machine has installed."""
    spec = folder / "tuneforge-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "tuneforge test", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    specs = KernelSpecManager(kernel_dirs=[str(folder)], ensure_native_kernel=False)
    return KernelManager(kernel_name="tuneforge-test", kernel_spec_manager=specs)


def _cell(notebook: Any, tag: str) -> Any:
    cells = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"one cell tagged {tag!r} expected, found {len(cells)}"
    return cells[0]


def _stdout(cell: Any) -> str:
    return "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream" and o["name"] == "stdout")


def test_the_notebook_is_stored_clean_and_valid() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [(cell.outputs, cell.execution_count) for cell in code] == [([], None)] * len(code)
    parameters = _cell(notebook, "parameters").source
    assert 'MODEL = "smollm2-135m-instruct"' in parameters and "OVERRIDES = []" in parameters
    assert 'RUN_DIR = "runs/notebook-demo"' in parameters


def test_the_quickstart_notebook_runs_the_demo(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_scripted_model(tiny_llama_dir, tmp_path / "scripted", ANSWER)
    run = tmp_path / "run"
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))  # its own self-replay cache
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models run fastest on one thread
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    _cell(notebook, "parameters").source = "\n".join(
        [
            f"MODEL = {str(model)!r}",
            f"OVERRIDES = {QUICK!r}",
            f"RUN_DIR = {str(run)!r}",
            'PROMPT = "Who are you?"',
        ]
    )
    client = NotebookClient(
        notebook,
        km=_kernel_manager(tmp_path / "kernels"),
        timeout=600,
        startup_timeout=120,
        resources={"metadata": {"path": str(EXAMPLES)}},  # where Jupyter starts a notebook's kernel
    )
    client.execute()  # raises CellExecutionError if a cell raises
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o["output_type"] == "error"]
    assert errors == []
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["steps"] == 2

    # the environment cell printed `tuneforge env`, with this interpreter's versions
    environment = json.dumps(_cell(notebook, "environment").outputs)
    assert "torch threads" in environment and "TUNEFORGE_HOME" in environment

    # the loss curve is the run's own loss.png
    images = [
        o["data"]["image/png"] for o in _cell(notebook, "loss-curve").outputs if "image/png" in o.get("data", {})
    ]
    assert [base64.b64decode(image) for image in images] == [(run / "loss.png").read_bytes()]

    # the table: one row per kind with compare.json's before/after totals and outcomes
    record = json.loads((run / "eval" / "compare.json").read_text(encoding="utf-8"))
    assert record["totals"] == {
        "identity": {"before": [4, 5], "after": [4, 5]},
        "general": {"before": [1, 5], "after": [1, 5]},
    }
    table_cell = _cell(notebook, "compare-table")
    tables = [o["data"]["text/plain"] for o in table_cell.outputs if o["output_type"] == "display_data"]
    assert len(tables) == 1
    table = {line.split()[0]: line.split()[1:] for line in tables[0].splitlines()[2:]}
    assert table == {
        kind: [
            "{}/{}".format(*total["before"]),
            "{}/{}".format(*total["after"]),
            *(str(record["outcomes"][kind][name]) for name in ("win", "tie", "loss")),
        ]
        for kind, total in record["totals"].items()
    }
    assert "general-ability set: base 25.0% -> tuned 25.0% on 4 items" in _stdout(table_cell)

    # the chat cell printed the tuned model's answer
    assert _stdout(_cell(notebook, "chat")).strip() == ANSWER

    # without pandas the same cell shows the table in Markdown
    shown: list[Any] = []
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    exec(table_cell.source, {"RUN": run, "display": shown.append})
    assert [item.data for item in shown] == [
        "| kind | before | after | win | tie | loss |\n|---|---|---|---|---|---|\n"
        "| identity | 4/5 | 4/5 | 0 | 5 | 0 |\n| general | 1/5 | 1/5 | 0 | 5 | 0 |"
    ]
