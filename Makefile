# Two commands do everything: `make demo` (set up, fetch the published weights, stylize the
# sample video) and `make test` (set up, run the test suite). The virtual environment is
# made on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench.py

demo: setup
	$(PY) download_weights.py
	$(PY) test_video.py --video input/videos/astronaut.mp4 --style input/style/strokes.jpg
