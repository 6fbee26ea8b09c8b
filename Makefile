# Two commands do everything: `make demo` (set up, fetch the published weights, stylize the
# sample video) and `make test` (set up, run the test suite). The virtual environment is
# made on first use; on a GPU machine it gets cuDNN too (and CUDA 13 where no toolkit has what
# Jittor needs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench

PIP := $(VENV)/bin/pip install --quiet --disable-pip-version-check

# On a machine with a GPU, cuda_setup.py names the requirements files with what Jittor's CUDA
# build needs there: cuDNN for the CUDA toolkit, and CUDA 13 itself where no toolkit has all
# it needs (see cuda_setup.py).
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-cuda12.txt requirements-cuda13.txt \
		requirements-cuda13-toolkit.txt cuda_setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements-dev.txt
	gpu_requirements=$$($(PY) cuda_setup.py) && for file in $$gpu_requirements; do $(PIP) -r $$file || exit 1; done
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench.py

demo: setup
	$(PY) download_weights.py
	$(PY) test_video.py --video input/videos/astronaut.mp4 --style input/style/strokes.jpg
