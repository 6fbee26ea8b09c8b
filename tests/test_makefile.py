"""The set-up command: the virtual environment is made with a Python that the pinned packages exist for."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

# What `make setup` reads: the Makefile and the files its first target depends on.
SETUP_FILES = ("Makefile", "requirements.txt", "requirements-cuda12.txt", "requirements-cuda13.txt",
               "requirements-cuda13-toolkit.txt", "cuda_setup.py")
# Stand-ins for interpreters, as the Makefile's version check sees them: fails it (3.10), passes it (3.11).
PYTHON_310, PYTHON_311 = "#!/bin/sh\nexit 1\n", "#!/bin/sh\nexit 0\n"


@pytest.fixture
def checkout(tmp_path):
    """A folder holding what `make setup` reads, and bin/python3: a Python 3.10."""
    for name in SETUP_FILES:
        shutil.copy(os.path.join(REPO, name), tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_text(PYTHON_310)
    (tmp_path / "bin" / "python3").chmod(0o755)
    return tmp_path


# What a `make PYTHON=... test` (or `PYTHON=... make test`) around the suite would pass on to the make of a test.
OUTER_MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON", "CUDA")


def make(folder, *argv, path=None):
    env = {name: value for name, value in os.environ.items() if name not in OUTER_MAKE_VARIABLES}
    env["PATH"] = path or os.environ["PATH"]
    return subprocess.run(["make", "-C", str(folder), "--no-print-directory", *argv], capture_output=True, text=True,
                          env=env, timeout=60)


def test_an_unsupported_python_is_refused_in_one_line_before_anything_is_made(checkout):
    result = make(checkout, "PYTHON=bin/python3", "setup")
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "error: MCCNet needs Python 3.11 or 3.12, and bin/python3 is neither: install one (Debian/Ubuntu: apt-get "
        "install python3.11-venv python3.11-dev), then run make again, or name it: make PYTHON=/path/to/python3.11 ...")
    assert not (checkout / ".venv").exists()


def test_where_python3_is_too_old_python3_11_makes_the_environment(checkout):
    """Ubuntu 22.04's python3 is 3.10; a python3.11 beside it (deadsnakes, pyenv) is taken instead."""
    (checkout / "bin" / "python3.11").write_text(PYTHON_311)
    (checkout / "bin" / "python3.11").chmod(0o755)
    result = make(checkout, "--dry-run", "setup", path=f"{checkout / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert "python3.11 -m venv .venv" in result.stdout.splitlines()


def test_make_setup_installs_what_a_gpu_needs_into_a_venv_made_without_one(checkout):
    """A .venv made on a cluster's login node (no GPU), then `make setup` on a GPU node: the GPU's requirements are
    asked for again; `CUDA=13` asks for those of CUDA 13's GPU machines from anywhere."""
    (checkout / ".venv").mkdir()
    (checkout / ".venv" / ".installed").touch()  # newer than what it depends on: made already
    for argv, asked in ((["setup"], "cuda_setup.py )"), (["setup", "CUDA=13"], "cuda_setup.py --cuda 13)")):
        result = make(checkout, "--dry-run", *argv)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 1 and f"gpu_requirements=$(.venv/bin/python {asked}" in result.stdout


def test_a_gpu_requirement_that_pip_cannot_install_says_where_to_install_it_from(checkout):
    """A GPU node that does not reach the package index, with a .venv made without its GPU's requirements."""
    bin_ = checkout / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text("#!/bin/sh\necho requirements-cuda13.txt\n")  # what cuda_setup.py would say
    (bin_ / "pip").write_text("#!/bin/sh\necho 'ERROR: No matching distribution found' >&2\nexit 1\n")
    for tool in ("python", "pip"):
        (bin_ / tool).chmod(0o755)
    (checkout / ".venv" / ".installed").touch()
    result = make(checkout, "setup")
    assert result.returncode != 0
    assert result.stderr.splitlines()[1] == (
        "error: pip could not install requirements-cuda13.txt, what Jittor's CUDA build needs here; where this machine "
        "does not reach the package index, run make setup CUDA=12 or 13 (its CUDA) on one that does, such as a "
        "cluster's login node")


@pytest.mark.parametrize("script,module", [("test_video.py", "numpy"), ("train.py", "numpy"), ("evaluate.py", "cv2"),
                                           ("download_weights.py", "tqdm"), ("weights.py", "numpy"),
                                           ("bench.py", "numpy")])
def test_a_python_without_the_environment_is_told_which_to_use(script, module):
    """`python test_video.py …` in a shell where `.venv` is not activated, after `make demo`: the Python there lacks
    the packages, and the first import ended in a traceback. One line names the Python to use instead. (`-S`: no
    site-packages, the environment's Python as a bare one.)"""
    result = subprocess.run([sys.executable, "-S", script, "--help"], cwd=REPO, capture_output=True, text=True)
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        f"error: this Python ({sys.executable}) has no module named '{module}', which the scripts need: run them "
        "with the environment that `make` makes, .venv/bin/python (or `source .venv/bin/activate` first)"])
