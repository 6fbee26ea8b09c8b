"""Jittor start-up: CPU build where CUDA cannot work, device choice, quiet logging."""
import os
import subprocess
import sys

import jittor as jt
import pytest

import backend
from cli import UserError
from conftest import REPO


def test_cpu_machine_gets_a_cpu_build():
    if backend.cuda_usable():
        pytest.skip("this machine has a usable CUDA: the CPU-only path is not the one taken here")
    assert os.environ["nvcc_path"] == ""
    assert not jt.has_cuda


def test_use_cuda_1_without_cuda_is_a_clear_error():
    if jt.has_cuda:
        pytest.skip("this machine has CUDA, so --use_cuda 1 is valid here")
    with pytest.raises(UserError, match="--use_cuda 1: Jittor has no usable CUDA here"):
        backend.use_device("1")


def test_auto_and_0_select_the_cpu_here():
    for choice in ("auto", "0"):
        backend.use_device(choice)
        assert jt.flags.use_cuda == int(choice == "auto" and jt.has_cuda)


def test_import_is_quiet_and_needs_no_network():
    # A clean interpreter: importing our network prints nothing on stdout and no
    # Jittor info lines on stderr (the cache is warm: the tests already compiled it).
    env = {k: v for k, v in os.environ.items() if k not in ("nvcc_path", "log_silent")}
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-c", "import net, jittor; print(jittor.has_cuda)"],
                            cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("False", "True")
    assert "[i " not in result.stderr and "Traceback" not in result.stderr
