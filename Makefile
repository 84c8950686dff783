# mubench — the two commands the README promises:
#   make demo   set up (first time) and run the main job on the embedded micro world
#   make test   set up (first time) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-fast check-baseline clean-venv

$(BIN)/mubench: requirements-ci.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-ci.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

setup: $(BIN)/mubench

demo: setup
	$(BIN)/mubench run suite=micro method=sd
	$(BIN)/mubench run suite=micro method=random-mask
	$(BIN)/mubench report suite=micro

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
