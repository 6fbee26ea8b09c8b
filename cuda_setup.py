"""What Jittor 1.3.11's CUDA build needs on today's GPU machines, prepared without touching the system.

Jittor 1.3.11 predates CUDA 13 and cuDNN 9. Its CUDA build
- reads two `cudaDeviceProp` fields that CUDA 13 removed (clockRate, computeMode): compile
  flags map them to fields that remain (`CUDA13_FLAGS`);
- downloads two libraries from GitHub at its first start, which GPU nodes often cannot reach:
  cuTT (transposes; it also reads those two fields) and CUTLASS (attention ops only). Both are
  off: Jittor's own transposes run instead, and MCCNet has no attention;
- looks for cuDNN only beside nvcc, in /usr/include and /usr/lib, under cuDNN 8's library
  names (`libcudnn_{ops,cnn}_{infer,train}.so`): where cuDNN is elsewhere (pip's
  nvidia-cudnn-cu*, which `make setup` installs on GPU machines from requirements-cuda*.txt)
  or is cuDNN 9, `cuda_root` joins it and the toolkit in one CUDA tree in Jittor's cache,
  cuDNN 9's libraries also under the cuDNN 8 names;
- compiles its cuDNN RNN ops, written for the RNN API that cuDNN 9 removed, and has its
  float16 convolutions accumulate in float16. CUDA builds import Jittor from a copy in
  Jittor's cache (`adapted_jittor`) without those RNN ops (MCCNet has no RNN) and with
  float32 accumulation for float16 convolutions (cuDNN's "pseudo half" configuration, which
  PyTorch uses). With MCCNET_CONV_API=graph (an experiment until measured on a GPU), a copy
  of its own runs the 2-D convolutions through cuDNN's graph API (cudnn_graph_conv.h);
- under `mpirun`, builds NCCL 2.8.4 from source (minutes) to average gradients on the GPUs and
  give each rank a GPU of its own, which fails with CUDA 13 (it uses `cudaLaunchParams`,
  removed): the CUDA tree joins pip's NCCL (nvidia-nccl-cu*, which `make setup` installs with
  cuDNN) and Jittor is pointed at it; without it, Jittor's NCCL is off (gradients averaged by
  MPI through the host, every rank on the first GPU: backend.py says so).
Jittor's CUDA build also needs a toolkit with cuBLAS, cuRAND, cuFFT and cuSPARSE. Where a GPU
has none (PyTorch's wheels bring no nvcc) or one without those libraries, and its driver runs
CUDA 13, `make setup` installs CUDA 13 from pip (requirements-cuda13-toolkit.txt; CUDA 12's
pip packages have no nvcc), and the CUDA tree joins it to cuDNN the same way.
Nothing is written outside Jittor's cache and the virtual environment; where pip's cuDNN is
absent, a CUDA 12 toolkit with a cuDNN 8 that Jittor finds on its own is used as it is.

Run as a script (by `make setup`) it prints the requirements files with what this machine's
GPU needs (cuDNN, and CUDA itself where needed), one per line, or nothing; `--cuda 13` (`make
setup CUDA=13`) names GPU machines' CUDA from one without a GPU. Standard library and cli.py
only: it runs before Jittor is imported, and before anything is installed.
"""
import ctypes
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple

from cli import ArgumentParser, run


def jittor_cache_root():
    """Jittor's cache folder, <Jittor's home>/.cache/jittor, that home found as `jittor_utils.home` finds it: the
    JITTOR_HOME variable (where a small home quota cannot hold the cache), else the home Jittor recorded in
    ~/.cache/jittor/config.json when it last saw that variable, else the user's. Found without importing Jittor,
    whose import fixes its cache for good."""
    try:
        with open(os.path.join(os.path.expanduser("~"), ".cache", "jittor", "config.json")) as f:
            recorded = json.load(f).get("JITTOR_HOME")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return os.path.join(os.path.abspath(os.environ.get("JITTOR_HOME", recorded or os.path.expanduser("~"))),
                        ".cache", "jittor")


# CUDA 13 removed cudaDeviceProp.clockRate and .computeMode, which Jittor 1.3.11's
# helper_cuda.h reads (to print device details): mapped to fields that remain.
CUDA13_FLAGS = "-DclockRate=multiProcessorCount -DcomputeMode=major"
CUDA_CHOICES = ("auto", "0", "1")  # the values of --use_cuda (backend.py)
# Jittor's settings (environment variables) that cuda_build_environment chooses and a user may set instead.
USER_SETTINGS = ("cache_name", "use_cutlass", "cc_flags", "use_cutt", "use_nccl", "nccl_include_path",
                 "nccl_lib_path")
SETUP_CUDA_MAJORS = (12, 13)  # the toolkits with a requirements-cuda<major>.txt
# The libraries besides cuDNN that Jittor's CUDA build loads (header <name>.h, library lib<name>.so);
# it stops without any of them.
JITTOR_LIBRARIES = {"cublas": "cuBLAS", "curand": "cuRAND", "cufft": "cuFFT", "cusparse": "cuSPARSE"}
PIP_TOOLKIT = "requirements-cuda13-toolkit.txt"  # CUDA 13 from pip: nvcc, the runtime and those libraries
PIP_TOOLKIT_DRIVER = 580  # the oldest NVIDIA driver that runs CUDA 13
# The cuDNN 8 libraries that Jittor loads, and the cuDNN 9 libraries that took their place.
CUDNN8_NAMES = {"libcudnn_ops_infer.so": "libcudnn_ops.so.9", "libcudnn_ops_train.so": "libcudnn_ops.so.9",
                "libcudnn_cnn_infer.so": "libcudnn_cnn.so.9", "libcudnn_cnn_train.so": "libcudnn_cnn.so.9"}
# Where Jittor looks for cuDNN and CUDA's libraries besides the toolkit's own folders: (headers, libraries).
SYSTEM_FOLDERS = [("/usr/include", "/usr/lib/x86_64-linux-gnu"), ("/usr/include", "/usr/lib")]
# Jittor's cuDNN convolutions compute in their output's type; cuDNN accepts float for float16,
# bfloat16 and float32 data (the only types they take).
HALF_ACCUMULATION = "CUDNN_CROSS_CORRELATION, getDataType<Ty>()"
FLOAT_ACCUMULATION = "CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT"
LEFT_OUT = ("__pycache__", "cudnn_rnn*")  # files of Jittor that the adapted copy does not have
# How the adapted copy runs 2-D convolutions (environment variable MCCNET_CONV_API): through
# cuDNN's legacy API, as Jittor does, or through its graph API (cudnn_graph_conv.h), as PyTorch
# does. "graph" is an experiment until measured on a GPU (docs/jittor.md).
CONV_APIS = ("legacy", "graph")
GRAPH_CONV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cudnn_graph_conv.h")
# Jittor's cuDNN convolution ops and the graph operation each becomes.
GRAPH_CONV_OPS = {"cudnn_conv_op.cc": "FORWARD", "cudnn_conv_backward_x_op.cc": "BACKWARD_DATA",
                  "cudnn_conv_backward_w_op.cc": "BACKWARD_FILTER"}
# Their jit_run after its first lines (the backward ops name their gradients x and y there),
# which set up legacy descriptors and find an algorithm, and what replaces it.
JIT_RUN = re.compile(r"(void CudnnConv\w*Op::jit_run\(\) \{\n(?:\s*auto \w+ = \w+;[ \t]*\n)*).*?\n\}\n"
                     r"(?=#endif\n#endif // JIT)", re.DOTALL)
GRAPH_JIT_RUN = """    graph_convolution(CUDNN_BACKEND_OPERATION_CONVOLUTION_{operation}_DESCRIPTOR,
        graph_tensor(x, "@XFORMAT", "abcd", getDataType<Tx>()),
        graph_tensor(w, "@WFORMAT", "oihw", getDataType<Tw>()),
        graph_tensor(y, "@YFORMAT", "abcd", getDataType<Ty>()),
        paddingh, paddingw, strideh, stridew, dilationh, dilationw);
}}
"""
JITTOR_CACHE = jittor_cache_root()
CACHE = os.path.join(JITTOR_CACHE, "mccnet_cuda")  # ours: the CUDA trees and the adapted copies of Jittor
USUAL_NVCC = ("/usr/local/cuda/bin/nvcc", "/usr/bin/nvcc", "/opt/cuda/bin/nvcc")
DRIVER_VERSION = "/proc/driver/nvidia/version"  # its first line names the NVIDIA driver's version
LIBCUDA = "libcuda.so.1"  # the NVIDIA driver's own library (CUDA's driver API), which every CUDA program loads
CUDA_ERROR_NO_DEVICE = 100  # cuInit's answer where the process is given no GPU
# cuDeviceGetAttribute's numbers for a GPU's compute capability (major, minor).
COMPUTE_CAPABILITY = (75, 76)
JTCUDA = os.path.join(JITTOR_CACHE, "jtcuda")  # Jittor's own CUDA 12.2 + cuDNN 8
NO_TOOLKIT = "no CUDA toolkit (nvcc and the CUDA runtime beside it)"
OTHER_TOOLKITS = ("install a CUDA 12 or 13 toolkit, or run `python -m jittor_utils.install_cuda` "
                  "(Jittor's CUDA 12.2 and cuDNN 8, downloaded into Jittor's cache)")
TOOLKIT_ADVICE = (f"`make setup` installs CUDA 13 from pip where the GPU's driver runs it ({PIP_TOOLKIT_DRIVER} "
                  f"or newer); otherwise {OTHER_TOOLKITS}")

# A cuDNN installation: its header and library folders, its (major, minor, patch) version,
# and whether Jittor would find it on its own.
Cudnn = namedtuple("Cudnn", "include lib version found_by_jittor")


def find_nvcc():
    """The nvcc of the toolkit for Jittor's CUDA build, or None: the user's `nvcc_path`; else the
    first toolkit that has all Jittor needs among Jittor's own CUDA (`python -m
    jittor_utils.install_cuda` puts one in Jittor's cache), the PATH's, the usual places and
    pip's (`make setup`), in Jittor's order; else the first toolkit found, to say what it lacks."""
    if os.environ.get("nvcc_path"):
        return os.environ["nvcc_path"]
    candidates = sorted(glob.glob(os.path.join(JTCUDA, "*", "bin", "nvcc")))[-1:] + [
        shutil.which("nvcc"), *USUAL_NVCC, pip_toolkit_nvcc()]
    found = [c for c in candidates if c and os.path.isfile(c)]
    return next((c for c in found if toolkit_problem(c) is None), found[0] if found else None)


def toolkit_home(nvcc):
    """The CUDA toolkit folder that holds `nvcc` (symbolic links followed, as Jittor does)."""
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def library_folders(home):
    """Where the toolkit in `home` keeps its libraries: lib64, lib (pip's CUDA), targets/<platform>/lib."""
    targets = glob.glob(os.path.join(home, "targets", "*", "lib"))
    return [os.path.join(home, "lib64"), os.path.join(home, "lib")] + targets


def _found(folders, pattern):
    return any(glob.glob(os.path.join(folder, pattern)) for folder in folders)


def cuda_runtime_present(nvcc):
    """Jittor loads libcudart from the CUDA tree that holds nvcc: is it there?"""
    return _found(library_folders(toolkit_home(nvcc)), "libcudart.so*")


def libraries_lacking(nvcc):
    """The names of the libraries in JITTOR_LIBRARIES that Jittor would not find for the toolkit of `nvcc`."""
    home = toolkit_home(nvcc)
    includes = [os.path.join(home, "include")] + glob.glob(os.path.join(home, "targets", "*", "include"))
    includes += [include for include, _ in SYSTEM_FOLDERS]
    libraries = library_folders(home) + [lib for _, lib in SYSTEM_FOLDERS]
    return [name for library, name in JITTOR_LIBRARIES.items()
            if not (_found(includes, f"{library}.h") and _found(libraries, f"lib{library}.so*"))]


def toolkit_problem(nvcc):
    """None when the toolkit of `nvcc` has all Jittor's CUDA build needs besides cuDNN, else what it lacks."""
    if not nvcc or not cuda_runtime_present(nvcc):
        return NO_TOOLKIT
    lacking = libraries_lacking(nvcc)
    if lacking:
        names = ", ".join(lacking[:-1]) + " and " + lacking[-1] if len(lacking) > 1 else lacking[0]
        return "the CUDA {}.{} toolkit in {} lacks {}, which Jittor's CUDA build loads".format(
            *nvcc_version(nvcc), toolkit_home(nvcc), names)
    return None


def gpu_present():
    """Whether the machine has an NVIDIA GPU (its device files), whichever of them this process may use."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def visible_gpus():
    """The compute capabilities ("9.0") of the GPUs that CUDA gives this process, [] for none, or None where the
    driver cannot say (its library absent or failing).

    Asked of the driver's library, which applies CUDA_VISIBLE_DEVICES and a job's device allocation (Slurm
    without --gres): the machine's GPUs in /dev are not all this process's, and a CUDA build of Jittor sees
    only these. Nothing is compiled or allocated: cuInit creates no context on a GPU.
    """
    try:
        cuda = ctypes.CDLL(LIBCUDA)
    except OSError:
        return None
    status = cuda.cuInit(0)
    if status == CUDA_ERROR_NO_DEVICE:
        return []
    count = ctypes.c_int(0)
    if status != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return None
    capabilities = []
    for index in range(count.value):
        device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        if cuda.cuDeviceGet(ctypes.byref(device), index) != 0 or any(
                cuda.cuDeviceGetAttribute(ctypes.byref(number), attribute, device) != 0
                for number, attribute in zip((major, minor), COMPUTE_CAPABILITY)):
            return None
        capabilities.append(f"{major.value}.{minor.value}")
    return capabilities


def driver_version():
    """The major version of the loaded NVIDIA driver (580 for 580.95.05), 0 when unknown."""
    try:
        with open(DRIVER_VERSION) as f:
            match = re.search(r"\s(\d+)\.\d+(\.\d+)?\s", f.readline())
    except OSError:
        return 0
    return int(match[1]) if match else 0


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


def _pip_folder(name):
    """The folder of the package `name` that pip installed, or None."""
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        return None
    return list(spec.submodule_search_locations)[0] if spec and spec.submodule_search_locations else None


def pip_cudnn_folder():
    """The folder of the cuDNN that pip installed (package nvidia-cudnn-cu*), or None."""
    return _pip_folder("nvidia.cudnn")


def pip_nccl_folder():
    """The folder of the NCCL that pip installed (package nvidia-nccl-cu*), or None."""
    folder = _pip_folder("nvidia.nccl")
    return folder if folder and os.path.exists(os.path.join(folder, "include", "nccl.h")) else None


def pip_toolkit_nvcc():
    """The nvcc of the CUDA 13 that pip installed (PIP_TOOLKIT: nvidia/cu13 in site-packages), or None."""
    folder = _pip_folder("nvidia.cu13")
    return os.path.join(folder, "bin", "nvcc") if folder else None


def find_cudnn(nvcc):
    """The cuDNN that Jittor's CUDA build will use: pip's first, else one where Jittor looks; or None."""
    pip_folder = pip_cudnn_folder()
    if pip_folder:
        include, lib = os.path.join(pip_folder, "include"), os.path.join(pip_folder, "lib")
        if cudnn_version(include):
            return Cudnn(include, lib, cudnn_version(include), False)
    home = toolkit_home(nvcc)
    for include, lib in [(os.path.join(home, "include"), os.path.join(home, "lib64"))] + SYSTEM_FOLDERS:
        if cudnn_version(include) and glob.glob(os.path.join(lib, "libcudnn.so*")):
            return Cudnn(include, lib, cudnn_version(include), True)
    return None


def cuda_root(nvcc, cudnn, nccl=None):
    """A CUDA tree (made once, in Jittor's cache) where Jittor finds the toolkit of `nvcc`, `cudnn`
    and the NCCL in the folder `nccl` (pip's), if any.

    Its bin/nvcc runs the toolkit's (Jittor takes the tree from nvcc's real path, so it must be
    a file, not a link); include/ and lib64/ hold links to the toolkit's entries (lib/'s for
    pip's CUDA), to cuDNN's (cuDNN's first: it replaces any other cuDNN in the toolkit) and to
    NCCL's; every other entry links to the toolkit's. Libraries are also linked under their
    unversioned names (what Jittor loads), cuDNN 9's also under the cuDNN 8 names.
    """
    home = toolkit_home(nvcc)
    version = ".".join(map(str, cudnn.version))
    key = hashlib.sha256(f"{home}\n{cudnn.include}\n{cudnn.lib}\n{nccl}".encode()).hexdigest()[:12]
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
        _link_library(library, os.path.join(building, "lib64"))
    if cudnn.version[0] >= 9:
        for old_name, library in CUDNN8_NAMES.items():
            _link(os.path.join(cudnn.lib, library), os.path.join(building, "lib64"), old_name)
    if nccl:
        for entry in os.listdir(os.path.join(nccl, "include")):
            _link(os.path.join(nccl, "include", entry), os.path.join(building, "include"))
        for library in glob.glob(os.path.join(nccl, "lib", "libnccl*.so*")):
            _link_library(library, os.path.join(building, "lib64"))
    libraries = "lib64" if os.path.isdir(os.path.join(home, "lib64")) else "lib"  # pip's CUDA has lib/
    for entry in os.listdir(home):
        if entry in ("include", libraries):
            tree_folder = os.path.join(building, "include" if entry == "include" else "lib64")
            for name in os.listdir(os.path.join(home, entry)):
                if not name.startswith(("cudnn", "libcudnn")):
                    _link_library(os.path.join(home, entry, name), tree_folder)
        elif entry != "bin":
            _link(os.path.join(home, entry), building)
    with open(os.path.join(building, "bin", "nvcc"), "w") as f:
        f.write(f"#!/bin/sh\nexec {shlex.quote(os.path.realpath(nvcc))} \"$@\"\n")
    os.chmod(os.path.join(building, "bin", "nvcc"), 0o755)
    return _publish(building, root)


def adapted_jittor(conv_api="legacy"):
    """A folder (made once, in Jittor's cache) holding a copy of the installed Jittor adapted as above,
    its convolutions on cuDNN's `conv_api` (one of CONV_APIS)."""
    source = str(importlib.metadata.distribution("jittor").locate_file("jittor"))
    graph_conv = ""
    if conv_api == "graph":
        with open(GRAPH_CONV) as f:
            graph_conv = f.read()
    # Named by what it is made of, so that a changed adaptation makes a new copy.
    recipe = (HALF_ACCUMULATION, FLOAT_ACCUMULATION, LEFT_OUT) + ((GRAPH_JIT_RUN, graph_conv) if graph_conv else ())
    folder = os.path.join(CACHE, "jittor-{}-adapted-{}{}".format(
        importlib.metadata.version("jittor"), hashlib.sha256(repr(recipe).encode()).hexdigest()[:8],
        "-graph" if graph_conv else ""))
    if os.path.isdir(folder):
        return folder
    os.makedirs(CACHE, exist_ok=True)
    building = tempfile.mkdtemp(dir=CACHE, prefix=".building-")
    copy = os.path.join(building, "jittor")
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(*LEFT_OUT))
    cudnn = os.path.join(copy, "extern", "cuda", "cudnn")
    for path in glob.glob(os.path.join(cudnn, "ops", "cudnn_conv*_op.cc")):
        with open(path) as f:
            text = f.read().replace(HALF_ACCUMULATION, FLOAT_ACCUMULATION)
        if graph_conv and os.path.basename(path) in GRAPH_CONV_OPS:
            text = _graph_op(text, GRAPH_CONV_OPS[os.path.basename(path)])
        with open(path, "w") as f:
            f.write(text)
    if graph_conv:
        with open(os.path.join(cudnn, "inc", os.path.basename(GRAPH_CONV)), "w") as f:
            f.write(graph_conv)
    return _publish(building, folder)


def _graph_op(text, operation):
    """The source of a Jittor cuDNN convolution op with its jit_run replaced by a graph `operation`."""
    text, replaced = JIT_RUN.subn(lambda match: match.group(1) + GRAPH_JIT_RUN.format(operation=operation), text)
    if replaced != 1:
        raise RuntimeError(f"this Jittor's convolution ops are not the ones {os.path.basename(GRAPH_CONV)} replaces")
    include = '#include "cudnn_wrapper.h"\n'
    return text.replace(include, include + f'#include "{os.path.basename(GRAPH_CONV)}"\n', 1)


def _link(target, folder, name=None):
    link = os.path.join(folder, name or os.path.basename(target))
    if not os.path.lexists(link):
        os.symlink(target, link)


def _link_library(target, folder):
    """Link `target` into `folder`; a shared library also under its unversioned name (what Jittor
    loads; pip's CUDA and cuDNN have only versioned names)."""
    _link(target, folder)
    unversioned = re.sub(r"^(lib.*\.so)\..*$", r"\1", os.path.basename(target))
    _link(target, folder, unversioned)


def _publish(building, final):
    """Move a finished folder to its final name; another process (an MPI rank) may have done it first."""
    try:
        os.rename(building, final)
    except OSError:
        shutil.rmtree(building)
    return final


def chosen_conv_api():
    """The cuDNN API chosen for Jittor's convolutions on a GPU (environment variable MCCNET_CONV_API)."""
    return os.environ.get("MCCNET_CONV_API", CONV_APIS[0])


def cuda_build_environment(nvcc):
    """(The environment for Jittor's CUDA build with the toolkit of `nvcc`, None) or (None, why not).

    Its own Jittor cache; cuTT and CUTLASS off (downloads); CUDA 13's flags; cuDNN in a CUDA tree
    of ours where Jittor would not find it by itself; pip's NCCL there too, else Jittor's NCCL off;
    the adapted copy of Jittor first on PYTHONPATH.
    """
    problem = toolkit_problem(nvcc)
    if problem:
        return None, f"{problem}: {TOOLKIT_ADVICE}"
    major, minor = nvcc_version(nvcc)
    cudnn = find_cudnn(nvcc)
    if cudnn is None:
        how = (f"`make setup` on this machine installs it (or `make setup CUDA={major}` where the package index is "
               "reachable)" if major in SETUP_CUDA_MAJORS else OTHER_TOOLKITS)
        return None, f"no cuDNN found for CUDA {major}.{minor}: {how}"
    conv_api = chosen_conv_api()
    if conv_api not in CONV_APIS:
        return None, f"MCCNET_CONV_API must be one of {', '.join(CONV_APIS)}, not {conv_api!r}"
    # A cache of its own for each adaptation: Jittor would rebuild its core at every switch.
    cache_name = f"cuda{major}.{minor}" + ("-graph" if conv_api == "graph" else "")
    environment = {"nvcc_path": nvcc, "cache_name": cache_name, "use_cutt": "0", "use_cutlass": "0"}
    if major >= 13:
        environment["cc_flags"] = CUDA13_FLAGS
    nccl = pip_nccl_folder()
    if nccl or not cudnn.found_by_jittor or cudnn.version[0] >= 9:
        root = cuda_root(nvcc, cudnn, nccl)
        environment["nvcc_path"] = os.path.join(root, "bin", "nvcc")
    if nccl:
        environment.update(nccl_include_path=os.path.join(root, "include"), nccl_lib_path=os.path.join(root, "lib64"))
    else:
        environment["use_nccl"] = "0"
    paths = [adapted_jittor(conv_api)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return environment, None


def requirements_files(cuda=None):
    """The requirements files with what this machine's GPU needs, [] where nothing (saying why on stderr).

    cuDNN for the toolkit Jittor will use; where no toolkit has all Jittor needs and the driver
    runs CUDA 13, also CUDA 13 itself from pip (kept at its pin once it is the one in use).
    With `cuda` (12 or 13: `make setup CUDA=13`), what GPU machines with that CUDA need, whether
    this one has a GPU or not: a cluster's login node, which reaches the package index where its
    GPU nodes may not. There CUDA 13 itself comes too, unless a toolkit here has all Jittor needs.
    """
    if cuda is not None:
        nvcc = find_nvcc()
        complete = toolkit_problem(nvcc) is None and nvcc_version(nvcc)[0] == cuda and nvcc != pip_toolkit_nvcc()
        return [f"requirements-cuda{cuda}.txt"] + ([PIP_TOOLKIT] if cuda == 13 and not complete else [])
    if not gpu_present():
        return []
    nvcc = find_nvcc()
    problem = toolkit_problem(nvcc)
    if problem is None:
        major, minor = nvcc_version(nvcc)
        if major not in SETUP_CUDA_MAJORS:
            print(f"CUDA {major}.{minor}: no cuDNN is installed for it (only for CUDA "
                  f"{' and '.join(map(str, SETUP_CUDA_MAJORS))}); Jittor looks for its own", file=sys.stderr)
            return []
        return [f"requirements-cuda{major}.txt"] + ([PIP_TOOLKIT] if nvcc == pip_toolkit_nvcc() else [])
    driver = driver_version()
    if driver >= PIP_TOOLKIT_DRIVER:
        return ["requirements-cuda13.txt", PIP_TOOLKIT]
    print(f"A GPU but {problem}, and its driver ({driver or 'version unknown'}) is older than the "
          f"{PIP_TOOLKIT_DRIVER} that CUDA 13 from pip needs: {OTHER_TOOLKITS}", file=sys.stderr)
    return []


def main(argv=None):
    parser = ArgumentParser(description="Print the requirements files with what Jittor's CUDA build needs on this "
                                        "machine, one per line (what `make setup` installs); nothing without a GPU.")
    parser.add_argument("--cuda", type=int, choices=SETUP_CUDA_MAJORS,
                        help="set up for GPU machines with this CUDA major version instead, from this machine, which "
                             "may have no GPU (a cluster's login node): `make setup CUDA=13` passes it")
    for requirements in requirements_files(parser.parse_args(argv).cuda):
        print(requirements)


if __name__ == "__main__":
    run(main)
