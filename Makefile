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
	$(BIN)/mubench report --html out=mubench-report suite=micro baseline=sd
	@echo "open mubench-report/index.html to see the images behind the numbers"

test: setup
	$(BIN)/python -m pytest -q

# the project's own regression check (.ci/run runs it after the tests): a small micro run, seed 0, in a throwaway
# MUBENCH_HOME, compared with the committed baseline (tolerances and how they were chosen are in the file)
check-baseline: setup
	d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	    MUBENCH_HOME=$$d/home $(BIN)/mubench run suite=micro method=sd limit=320 seed=0 out=$$d/micro-sd && \
	    $(BIN)/mubench check --baseline reports/baselines/micro-sd.json results=$$d/micro-sd

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
