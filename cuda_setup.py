"""What Jittor 1.3.11's CUDA build needs on today's GPU machines, prepared without touching the system.

Jittor 1.3.11 predates CUDA 13 and cuDNN 9. Its CUDA build
- reads two `cudaDeviceProp` fields that CUDA 13 removed (clockRate, computeMode): compile
  flags map them to fields that remain (`CUDA13_FLAGS`), and cuTT, a transpose that reads
  them too, is off;
- looks for cuDNN only beside nvcc, in /usr/include and /usr/lib, under cuDNN 8's library
  names (`libcudnn_{ops,cnn}_{infer,train}.so`): where cuDNN is elsewhere (pip's
  nvidia-cudnn-cu*, which `make setup` installs on GPU machines from requirements-cuda*.txt)
  or is cuDNN 9, `cuda_root` joins it and the toolkit in one CUDA tree in Jittor's cache,
  cuDNN 9's libraries also under the cuDNN 8 names;
- compiles its cuDNN RNN ops, written for the RNN API that cuDNN 9 removed, and has its
  float16 convolutions accumulate in float16. CUDA builds import Jittor from a copy in
  Jittor's cache (`adapted_jittor`) without those RNN ops (MCCNet has no RNN) and with
  float32 accumulation for float16 convolutions (cuDNN's "pseudo half" configuration, which
  PyTorch uses).
Nothing is written outside Jittor's cache and the virtual environment; a CUDA 12 toolkit
with a cuDNN 8 that Jittor finds on its own is used as it is.

Run as a script (by `make setup`) it prints the requirements file with the cuDNN for this
machine's GPU and CUDA toolkit, or nothing. Standard library only.
"""
import glob
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple

# CUDA 13 removed cudaDeviceProp.clockRate and .computeMode, which Jittor 1.3.11's
# helper_cuda.h reads (to print device details): mapped to fields that remain.
CUDA13_FLAGS = "-DclockRate=multiProcessorCount -DcomputeMode=major"
# Jittor's settings (environment variables) that cuda_build_environment chooses and a user may set instead.
USER_SETTINGS = ("cache_name", "use_cutlass", "cc_flags", "use_cutt")
SETUP_CUDA_MAJORS = (12, 13)  # the toolkits with a requirements-cuda<major>.txt
# The cuDNN 8 libraries that Jittor loads, and the cuDNN 9 libraries that took their place.
CUDNN8_NAMES = {"libcudnn_ops_infer.so": "libcudnn_ops.so.9", "libcudnn_ops_train.so": "libcudnn_ops.so.9",
                "libcudnn_cnn_infer.so": "libcudnn_cnn.so.9", "libcudnn_cnn_train.so": "libcudnn_cnn.so.9"}
# Where Jittor looks for cuDNN besides the toolkit's own folders: (headers, libraries).
SYSTEM_CUDNN = [("/usr/include", "/usr/lib/x86_64-linux-gnu"), ("/usr/include", "/usr/lib")]
# Jittor's cuDNN convolutions compute in their output's type; cuDNN accepts float for float16,
# bfloat16 and float32 data (the only types they take).
HALF_ACCUMULATION = "CUDNN_CROSS_CORRELATION, getDataType<Ty>()"
FLOAT_ACCUMULATION = "CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT"
LEFT_OUT = ("__pycache__", "cudnn_rnn*")  # files of Jittor that the adapted copy does not have
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "jittor", "mccnet_cuda")
JTCUDA = os.path.join(os.path.expanduser("~"), ".cache", "jittor", "jtcuda")  # Jittor's own CUDA 12.2 + cuDNN 8
NO_TOOLKIT = ("no CUDA toolkit (nvcc and the CUDA runtime beside it): install one, or run "
              "`python -m jittor_utils.install_cuda` (Jittor's CUDA 12.2 and cuDNN 8, downloaded into Jittor's cache)")

# A cuDNN installation: its header and library folders, its (major, minor, patch) version,
# and whether Jittor would find it on its own.
Cudnn = namedtuple("Cudnn", "include lib version found_by_jittor")


def find_nvcc():
    """The nvcc that Jittor would pick, or None: the user's `nvcc_path`, else Jittor's own CUDA
    (`python -m jittor_utils.install_cuda` puts one in Jittor's cache), else the PATH's, else
    the usual places."""
    if os.environ.get("nvcc_path"):
        return os.environ["nvcc_path"]
    candidates = sorted(glob.glob(os.path.join(JTCUDA, "*", "bin", "nvcc")))[-1:] + [
        shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/bin/nvcc", "/opt/cuda/bin/nvcc"]
    return next((c for c in candidates if c and os.path.isfile(c)), None)


def toolkit_home(nvcc):
    """The CUDA toolkit folder that holds `nvcc` (symbolic links followed, as Jittor does)."""
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def cuda_runtime_present(nvcc):
    """Jittor loads libcudart from the CUDA tree that holds nvcc: is it there?"""
    patterns = [os.path.join(toolkit_home(nvcc), lib, "libcudart.so*") for lib in ("lib64", "lib", "targets/*/lib")]
    return any(glob.glob(p) for p in patterns)


def gpu_present():
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def nvcc_version(nvcc):
    """(major, minor) of the toolkit of `nvcc`, (0, 0) when it cannot tell."""
    try:
        output = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    match = re.search(r"release (\d+)\.(\d+)", output)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def cudnn_version(include):
    """(major, minor, patch) from `include`/cudnn_version.h, None without that header."""
    try:
        with open(os.path.join(include, "cudnn_version.h")) as f:
            text = f.read()
    except OSError:
        return None
    numbers = [re.search(rf"#define CUDNN_{name}\s+(\d+)", text) for name in ("MAJOR", "MINOR", "PATCHLEVEL")]
    return tuple(int(n[1]) for n in numbers) if all(numbers) else None


def pip_cudnn_folder():
    """The folder of the cuDNN that pip installed (package nvidia-cudnn-cu*), or None."""
    try:
        spec = importlib.util.find_spec("nvidia.cudnn")
    except ImportError:
        return None
    return list(spec.submodule_search_locations)[0] if spec and spec.submodule_search_locations else None


def find_cudnn(nvcc):
    """The cuDNN that Jittor's CUDA build will use: pip's first, else one where Jittor looks; or None."""
    pip_folder = pip_cudnn_folder()
    if pip_folder:
        include, lib = os.path.join(pip_folder, "include"), os.path.join(pip_folder, "lib")
        if cudnn_version(include):
            return Cudnn(include, lib, cudnn_version(include), False)
    home = toolkit_home(nvcc)
    for include, lib in [(os.path.join(home, "include"), os.path.join(home, "lib64"))] + SYSTEM_CUDNN:
        if cudnn_version(include) and glob.glob(os.path.join(lib, "libcudnn.so*")):
            return Cudnn(include, lib, cudnn_version(include), True)
    return None


def cuda_root(nvcc, cudnn):
    """A CUDA tree (made once, in Jittor's cache) where Jittor finds the toolkit of `nvcc` and `cudnn`.

    Its bin/nvcc runs the toolkit's (Jittor takes the tree from nvcc's real path, so it must be
    a file, not a link); include/ and lib64/ hold links to the toolkit's entries and to
    cuDNN's (cuDNN's first: it replaces any other cuDNN in the toolkit); every other entry
    links to the toolkit's. cuDNN's libraries are also linked under their unversioned names
    (what Jittor loads) and cuDNN 9's under the cuDNN 8 names.
    """
    home = toolkit_home(nvcc)
    version = ".".join(map(str, cudnn.version))
    key = hashlib.sha256(f"{home}\n{cudnn.include}\n{cudnn.lib}".encode()).hexdigest()[:12]
    root = os.path.join(CACHE, "cuda{}.{}-cudnn{}-{}".format(*nvcc_version(nvcc), version, key))
    if os.path.isdir(root):
        return root
    os.makedirs(CACHE, exist_ok=True)
    building = tempfile.mkdtemp(dir=CACHE, prefix=".building-")
    for folder in ("bin", "include", "lib64"):
        os.mkdir(os.path.join(building, folder))
    for header in glob.glob(os.path.join(cudnn.include, "cudnn*.h")):
        _link(header, os.path.join(building, "include"))
    for library in glob.glob(os.path.join(cudnn.lib, "libcudnn*.so*")):
        _link(library, os.path.join(building, "lib64"))
        unversioned = re.sub(r"\.so\..*$", ".so", os.path.basename(library))
        _link(library, os.path.join(building, "lib64"), unversioned)
    if cudnn.version[0] >= 9:
        for old_name, library in CUDNN8_NAMES.items():
            _link(os.path.join(cudnn.lib, library), os.path.join(building, "lib64"), old_name)
    for entry in os.listdir(home):
        if entry in ("include", "lib64"):
            for name in os.listdir(os.path.join(home, entry)):
                if not name.startswith(("cudnn", "libcudnn")):
                    _link(os.path.join(home, entry, name), os.path.join(building, entry))
        elif entry != "bin":
            _link(os.path.join(home, entry), building)
    with open(os.path.join(building, "bin", "nvcc"), "w") as f:
        f.write(f"#!/bin/sh\nexec {shlex.quote(os.path.realpath(nvcc))} \"$@\"\n")
    os.chmod(os.path.join(building, "bin", "nvcc"), 0o755)
    return _publish(building, root)


def adapted_jittor():
    """A folder (made once, in Jittor's cache) holding a copy of the installed Jittor adapted as above."""
    source = str(importlib.metadata.distribution("jittor").locate_file("jittor"))
    # Named by what it is made of, so that a changed adaptation makes a new copy.
    recipe = hashlib.sha256(repr((HALF_ACCUMULATION, FLOAT_ACCUMULATION, LEFT_OUT)).encode()).hexdigest()[:8]
    folder = os.path.join(CACHE, "jittor-{}-adapted-{}".format(importlib.metadata.version("jittor"), recipe))
    if os.path.isdir(folder):
        return folder
    os.makedirs(CACHE, exist_ok=True)
    building = tempfile.mkdtemp(dir=CACHE, prefix=".building-")
    copy = os.path.join(building, "jittor")
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(*LEFT_OUT))
    for path in glob.glob(os.path.join(copy, "extern", "cuda", "cudnn", "ops", "cudnn_conv*_op.cc")):
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace(HALF_ACCUMULATION, FLOAT_ACCUMULATION))
    return _publish(building, folder)


def _link(target, folder, name=None):
    link = os.path.join(folder, name or os.path.basename(target))
    if not os.path.lexists(link):
        os.symlink(target, link)


def _publish(building, final):
    """Move a finished folder to its final name; another process (an MPI rank) may have done it first."""
    try:
        os.rename(building, final)
    except OSError:
        shutil.rmtree(building)
    return final


def cuda_build_environment(nvcc):
    """(The environment for Jittor's CUDA build with the toolkit of `nvcc`, None) or (None, why not).

    Its own Jittor cache; CUTLASS off (a download at first use, for attention ops only);
    CUDA 13's flags; cuDNN in a CUDA tree of ours where Jittor would not find it by itself;
    the adapted copy of Jittor first on PYTHONPATH.
    """
    if not nvcc or not cuda_runtime_present(nvcc):
        return None, NO_TOOLKIT
    major, minor = nvcc_version(nvcc)
    cudnn = find_cudnn(nvcc)
    if cudnn is None:
        return None, f"no cuDNN found for CUDA {major}.{minor}: `make setup` installs it where a GPU is present"
    environment = {"nvcc_path": nvcc, "cache_name": f"cuda{major}.{minor}", "use_cutlass": "0"}
    if major >= 13:
        environment.update(cc_flags=CUDA13_FLAGS, use_cutt="0")
    if not cudnn.found_by_jittor or cudnn.version[0] >= 9:
        environment["nvcc_path"] = os.path.join(cuda_root(nvcc, cudnn), "bin", "nvcc")
    paths = [adapted_jittor()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return environment, None


def requirements_file():
    """The requirements file with the cuDNN that this machine's GPU needs, or None (saying why on stderr)."""
    if not gpu_present():
        return None
    nvcc = find_nvcc()
    if not nvcc or not cuda_runtime_present(nvcc):
        print(f"A GPU but {NO_TOOLKIT}", file=sys.stderr)
        return None
    major, minor = nvcc_version(nvcc)
    if major not in SETUP_CUDA_MAJORS:
        print(f"CUDA {major}.{minor}: no cuDNN is installed for it (only for CUDA "
              f"{' and '.join(map(str, SETUP_CUDA_MAJORS))}); Jittor looks for its own", file=sys.stderr)
        return None
    return f"requirements-cuda{major}.txt"


def main():
    requirements = requirements_file()
    if requirements:
        print(requirements)


if __name__ == "__main__":
    main()
