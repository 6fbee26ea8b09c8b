"""Jittor start-up. Import this module before anything imports jittor.

Jittor decides at import time whether it is a CUDA build: it finds `nvcc` on the PATH and
then loads the CUDA runtime next to it. Here we look first:
- no nvcc, no CUDA runtime beside it, or no GPU: nvcc is hidden from Jittor (the
  `nvcc_path` environment variable, empty), a CPU build;
- otherwise Jittor gets what its CUDA build needs (CUDA 13 flags, see
  `cuda_build_environment`) and is first imported in a child process: if that fails
  (a compile error, an old driver: Jittor then aborts the process) we say why in one line
  and use the CPU. The verdict is kept in Jittor's cache until the toolkit, the driver or
  Jittor changes.
CPU and CUDA builds get separate Jittor caches (`cache_name`), so that switching between
them does not recompile. A user can force either way by setting `nvcc_path` before
starting Python.

oneDNN, which makes Jittor's CPU convolutions as fast as PyTorch's, comes from the
`jittor-offline` package (requirements.txt): nothing here needs the network.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

from cli import UserError

CUDA_CHOICES = ("auto", "0", "1")
# CUDA 13 removed cudaDeviceProp.clockRate and .computeMode, which Jittor 1.3.11's
# helper_cuda.h reads (to print device details): mapped to fields that remain.
CUDA13_FLAGS = "-DclockRate=multiProcessorCount -DcomputeMode=major"
PROBE_SECONDS = 1800  # the first CUDA build compiles Jittor's core: minutes
cuda_problem = None  # why Jittor's CUDA build could not be used here, when it was tried


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
    """Whether Jittor can be a CUDA build here: nvcc, the CUDA runtime beside it, and a GPU."""
    nvcc = find_nvcc()
    return bool(nvcc) and cuda_runtime_present(nvcc) and gpu_present()


def nvcc_version(nvcc):
    """(major, minor) of the toolkit of `nvcc`, (0, 0) when it cannot tell."""
    try:
        output = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    match = re.search(r"release (\d+)\.(\d+)", output)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def cuda_build_environment(nvcc):
    """The environment for Jittor 1.3.11's CUDA build with the toolkit of `nvcc`.

    Its own cache; CUTLASS off (a download at first use, for attention ops only); on CUDA 13
    the flags above, and cuTT off (a faster transpose that reads the removed fields too).
    """
    major, minor = nvcc_version(nvcc)
    environment = {"nvcc_path": nvcc, "cache_name": f"cuda{major}.{minor}", "use_cutlass": "0"}
    if major >= 13:
        environment.update(cc_flags=CUDA13_FLAGS, use_cutt="0")
    return environment


def _probe_key(environment):
    driver = ""
    if os.path.exists("/proc/driver/nvidia/version"):
        with open("/proc/driver/nvidia/version") as f:
            driver = f.readline().strip()
    import importlib.metadata
    return dict(environment, driver=driver, jittor=importlib.metadata.version("jittor"))


def cuda_build_problem(environment):
    """None if Jittor imports as a CUDA build with `environment` (tried in a child process), else why not."""
    path = os.path.join(os.path.expanduser("~"), ".cache", "jittor", "mccnet_cuda_probe.json")
    key = _probe_key(environment)
    try:
        with open(path) as f:
            cached = json.load(f)
        if cached["key"] == key:
            return cached["problem"]
    except (OSError, ValueError, KeyError):
        pass
    print("Checking that Jittor's CUDA build works here (the first time it compiles: minutes)...",
          file=sys.stderr, flush=True)
    child = dict(os.environ, **environment)
    command = [sys.executable, "-c", "import jittor; assert jittor.has_cuda, 'no CUDA in this build'"]
    for _ in range(2):  # a changed cc_flags makes Jittor rebuild its compiler and ask for a second run
        try:
            result = subprocess.run(command, env=child, capture_output=True, text=True, timeout=PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            return f"importing it took more than {PROBE_SECONDS} s"
        if "please rerun" not in result.stderr:
            break
    problem = None if result.returncode == 0 else _reason(result.stderr)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"key": key, "problem": problem}, f)
    return problem


def _reason(stderr):
    """The telling line of a failed Jittor import: a CUDA error code, else the last error line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", stderr)
    code = re.search(r"cuda\w*Error\w*|CUDNN_STATUS_\w+", text)
    if code:
        return code.group(0)
    lines = [line.strip() for line in text.splitlines() if "rror" in line] or text.strip().splitlines() or ["?"]
    return lines[-1][:200]


def jittor_cache_is_cold():
    """True when Jittor has not compiled its core yet for this machine and Python."""
    import jittor_utils
    return not glob.glob(os.path.join(jittor_utils.cache_path, "jittor_core*.so"))


def prepare_environment():
    """Before Jittor's import: quiet logs, a CUDA build only where it works, a word when it will compile."""
    global cuda_problem
    os.environ.setdefault("log_silent", "1")
    forced = os.environ.get("nvcc_path")
    if forced or ("nvcc_path" not in os.environ and cuda_usable()):
        environment = cuda_build_environment(find_nvcc())
        environment.update({k: os.environ[k] for k in environment if k in os.environ})  # the user's choices win
        cuda_problem = cuda_build_problem(environment)
        if cuda_problem is None:
            os.environ.update(environment)
        else:
            print(f"Jittor's CUDA build does not work here ({cuda_problem}): using the CPU", file=sys.stderr)
    if cuda_problem is not None or not os.environ.get("nvcc_path"):
        os.environ["nvcc_path"] = ""
        os.environ.setdefault("cache_name", "cpu")
    if jittor_cache_is_cold():
        print("Jittor is compiling itself for this machine (first run only, about 3 minutes on 2 cores)...",
              file=sys.stderr, flush=True)


prepare_environment()
import jittor as jt  # noqa: E402  (must come after prepare_environment)

jt.flags.log_silent = 1


def add_device_argument(parser):
    parser.add_argument("--use_cuda", choices=CUDA_CHOICES, default="auto",
                        help="run on the GPU: auto (default) uses CUDA when Jittor can, "
                             "0 forces the CPU, 1 requires CUDA and fails without it")


def use_device(choice):
    """Select CPU or GPU for everything Jittor computes from now on."""
    if choice == "1" and not jt.has_cuda:
        why = (f"Jittor's CUDA build does not work here ({cuda_problem})" if cuda_problem else
               f"Jittor has no usable CUDA here (no GPU, no CUDA runtime next to nvcc={find_nvcc() or 'not found'}, "
               "or nvcc_path was set empty)")
        raise UserError(f"--use_cuda 1: {why}; use --use_cuda 0")
    jt.flags.use_cuda = int(choice == "1" or (choice == "auto" and jt.has_cuda))
