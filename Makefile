# `make test` and `make demo` set up ./.venv on a fresh machine by themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real recordings that registry packages ship, fetched as wheels (no install): pyannote.audio's sample.wav/.rttm
# (MIT, see tests/test_corpora_prepare.py).
FIXTURES := tests/.fixtures
PYANNOTE_WHEEL := $(FIXTURES)/pyannote_audio-4.0.7-py3-none-any.whl

.PHONY: test lint demo venv clean fixtures

venv: $(STAMP)

$(STAMP): requirements.txt setup.cfg setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-build-isolation -e '.[dev,se]'
	touch $(STAMP)

fixtures: $(PYANNOTE_WHEEL)

$(PYANNOTE_WHEEL): $(STAMP)
	$(PY) -m pip download --quiet --no-deps --dest $(FIXTURES) pyannote.audio==4.0.7

test: $(STAMP) fixtures
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(PY) -m downstream_probes.pipelines.demo

clean:
	rm -rf $(VENV) runs
