# Two commands do everything: `make demo` (set up, fetch the published weights, stylize the
# sample video) and `make test` (set up, run the test suite). The virtual environment is
# made on first use; on a GPU machine it gets cuDNN and NCCL too (and CUDA 13 where no toolkit has what
# Jittor needs); the tests add PyTorch.
# Jittor 1.3.11 and the pinned packages exist for Python 3.11 and 3.12: the first of python3, python3.11
# and python3.12 that is one of them makes the virtual environment (`make PYTHON=... demo` names another).
SUPPORTED_PYTHON := import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))
PYTHON ?= $(or $(shell for p in python3 python3.11 python3.12; do \
	$$p -c '$(SUPPORTED_PYTHON)' 2>/dev/null && echo $$p && break; done),python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench

PIP := $(VENV)/bin/pip install --quiet --disable-pip-version-check

# Inference and training need requirements.txt (make demo); the tests and the benchmark add
# PyTorch, the oracle (requirements-dev.txt). On a machine with a GPU, cuda_setup.py names the
# requirements files with what Jittor's CUDA build needs there: cuDNN and NCCL for the CUDA toolkit, and
# CUDA 13 itself where no toolkit has all it needs (see cuda_setup.py). `make setup CUDA=13` (or 12)
# installs that for GPU machines with that CUDA from one without a GPU: a cluster's login node, which
# reaches the package index where its GPU nodes may not.
install_gpu_requirements = gpu_requirements=$$($(PY) cuda_setup.py $(if $(CUDA),--cuda $(CUDA))) && \
	for file in $$gpu_requirements; do $(PIP) $(1) -r $$file || { echo "error: pip could not install $$file, \
	what Jittor's CUDA build needs here; where this machine does not reach the package index, run \
	make setup CUDA=12 or 13 (its CUDA) on one that does, such as a cluster's login node" >&2; exit 1; }; done

$(VENV)/.installed: requirements.txt requirements-cuda12.txt requirements-cuda13.txt \
		requirements-cuda13-toolkit.txt cuda_setup.py
	@$(PYTHON) -c '$(SUPPORTED_PYTHON)' 2>/dev/null || { echo "error: MCCNet needs Python 3.11 or 3.12, and \
	$(PYTHON) is neither: install one (Debian/Ubuntu: apt-get install python3.11-venv python3.11-dev), then \
	run make again, or name it: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(call install_gpu_requirements)
	touch $@

# PyTorch's CUDA build (PyPI's, on a GPU machine) brings cuDNN and NCCL for CUDA 13, into the folders
# where a CUDA 12 machine's cuDNN and NCCL for Jittor lie: Jittor's go back on top.
$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	$(call install_gpu_requirements,--force-reinstall --no-deps)
	touch $@

# Again at every `make setup` (and `make demo`; pip skips what is there): a .venv made where no GPU was gets what
# the GPU needs on the first GPU machine it is used on.
setup: $(VENV)/.installed
	@$(call install_gpu_requirements)

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed-dev
	$(PY) bench.py

demo: setup
	$(PY) download_weights.py
	$(PY) test_video.py --video input/videos/astronaut.mp4 --style input/style/strokes.jpg
