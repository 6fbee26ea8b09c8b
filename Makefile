# Two commands do everything: `make demo` (set up, fetch the published weights, stylize the
# sample video) and `make test` (set up, run the test suite). The virtual environment is
# made on first use; on a GPU machine it gets cuDNN too.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench

PIP := $(VENV)/bin/pip install --quiet --disable-pip-version-check

# On a machine with a GPU and a CUDA 12 or 13 toolkit, cuda_setup.py names the requirements
# file with the cuDNN for it (Jittor's CUDA build needs cuDNN; see cuda_setup.py).
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-cuda12.txt requirements-cuda13.txt cuda_setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements-dev.txt
	gpu_requirements=$$($(PY) cuda_setup.py) && if [ -n "$$gpu_requirements" ]; then $(PIP) -r $$gpu_requirements; fi
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench.py

demo: setup
	$(PY) download_weights.py
	$(PY) test_video.py --video input/videos/astronaut.mp4 --style input/style/strokes.jpg
