"""Jittor start-up. Import this module before anything imports jittor.

Jittor decides at import time whether it is a CUDA build: it finds `nvcc` on the PATH and
then loads the CUDA runtime next to it. On a machine with nvcc but no runtime or no GPU
that import dies, so here we look first and, when CUDA cannot work, hide nvcc from Jittor
(the `nvcc_path` environment variable, empty). A user can still force either way by
setting `nvcc_path` before starting Python.

oneDNN, which makes Jittor's CPU convolutions as fast as PyTorch's, comes from the
`jittor-offline` package (requirements.txt): Jittor copies its archive from there
instead of downloading it, so nothing here needs the network.
"""
import glob
import os
import shutil
import signal
import sys

from cli import UserError

CUDA_CHOICES = ("auto", "0", "1")


def find_nvcc():
    """The nvcc that Jittor would pick, or None."""
    if os.environ.get("nvcc_path"):
        return os.environ["nvcc_path"]
    candidates = [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/bin/nvcc", "/opt/cuda/bin/nvcc"]
    return next((c for c in candidates if c and os.path.isfile(c)), None)


def cuda_runtime_present(nvcc):
    """Jittor loads libcudart from the CUDA tree that holds nvcc: is it there?"""
    cuda_home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    patterns = [os.path.join(cuda_home, lib, "libcudart.so*") for lib in ("lib64", "lib", "targets/*/lib")]
    return any(glob.glob(p) for p in patterns)


def gpu_present():
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def cuda_usable():
    nvcc = find_nvcc()
    return bool(nvcc) and cuda_runtime_present(nvcc) and gpu_present()


def jittor_cache_is_cold():
    """True when Jittor has not compiled its core yet for this machine and Python."""
    import jittor_utils
    return not glob.glob(os.path.join(jittor_utils.cache_path, "jittor_core*.so"))


def prepare_environment():
    os.environ.setdefault("log_silent", "1")
    if "nvcc_path" not in os.environ and not cuda_usable():
        os.environ["nvcc_path"] = ""
    if jittor_cache_is_cold():
        print("Jittor is compiling itself for this machine (first run only, about 3 minutes on 2 cores)...",
              file=sys.stderr, flush=True)


prepare_environment()
import jittor as jt  # noqa: E402  (must come after prepare_environment)

jt.flags.log_silent = 1
# Jittor's import installs a SIGINT handler that exits at once ("Caught SIGINT, quick exit"),
# skipping Python's clean-up: Ctrl-C must raise KeyboardInterrupt so that scripts can
# remove their unfinished outputs.
signal.signal(signal.SIGINT, signal.default_int_handler)


def add_device_argument(parser):
    parser.add_argument("--use_cuda", choices=CUDA_CHOICES, default="auto",
                        help="run on the GPU: auto (default) uses CUDA when Jittor can, "
                             "0 forces the CPU, 1 requires CUDA and fails without it")


def use_device(choice):
    """Select CPU or GPU for everything Jittor computes from now on."""
    if choice == "1" and not jt.has_cuda:
        raise UserError("--use_cuda 1: Jittor has no usable CUDA here (no GPU, no CUDA runtime next to "
                        f"nvcc={find_nvcc() or 'not found'}, or nvcc_path was set empty); use --use_cuda 0")
    jt.flags.use_cuda = int(choice == "1" or (choice == "auto" and jt.has_cuda))
