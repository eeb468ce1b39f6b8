# `make reproduce` runs every notebook on params/smoke.yaml; `make test` runs unit tests + nbval.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PARAMS ?= params/smoke.yaml

.PHONY: reproduce test lint notebooks gpu-check

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

reproduce: $(VENV)/.installed
	$(PY) -m richreps.run $(PARAMS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check richreps tests bench conftest.py
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check richreps tests bench conftest.py
	$(VENV)/bin/ruff format --check richreps tests bench conftest.py

# Re-execute the committed notebooks with their defaults (= params/smoke.yaml) after a change.
notebooks: $(VENV)/.installed
	$(PY) -m richreps.run params/smoke.yaml --refresh-committed

# The prepared GPU check (bench/gpu_check.py): about 8 minutes on one H100/H200, resumable.
# `make gpu-check ARGS=--dry-run` runs every part at a tiny size on the CPU.
gpu-check: $(VENV)/.installed
	$(PY) -m bench.gpu_check $(ARGS)
