"""Jittor start-up. Import this module before anything imports jittor.

Jittor compiles its operators at their first use, with g++ against the running Python's
headers: where either is missing, one line says what to install (Jittor's import would end in
a traceback), and in a virtual environment made from a Python of pyenv, uv or conda, Jittor is
given that Python's python3.X-config, which it would not find. Where those flags changed since
Jittor's last start, its import exits, asking for a rerun: the command starts again. From a
virtual environment at a path with a space, which Jittor cannot compile from, the process starts
again from a link to it.

Jittor decides at import time whether it is a CUDA build: it finds `nvcc` on the PATH and
then loads the CUDA runtime next to it. Here we look first:
- no GPU: nvcc is hidden from Jittor (the `nvcc_path` environment variable, empty), a CPU
  build;
- a GPU, but none that CUDA gives this process (CUDA_VISIBLE_DEVICES, a job without a GPU
  allocated; `cuda_setup.visible_gpus`), or no CUDA toolkit (nvcc and the CUDA runtime beside
  it): the same, and `use_device` says why (one line for --use_cuda auto, the error for 1,
  nothing for 0);
- otherwise Jittor gets what its CUDA build needs on today's toolkits (`cuda_setup.py`:
  CUDA 13 flags, cuDNN and NCCL from pip, cuDNN 9) and is first imported in a child process
  (outside the MPI job under mpirun): if that fails (a compile error, an old driver: Jittor
  then aborts the process) the CPU is used and `use_device` says why. The verdict is kept in
  Jittor's cache for that set-up, driver, Jittor and the GPUs this process sees (the newest
  VERDICTS_KEPT of them: the nodes of a cluster differ); a failure of the moment (a GPU busy
  or out of memory, the check killed or too slow) is not kept, and the next start checks again.
CPU and CUDA builds get separate Jittor caches (`cache_name`), so that switching between
them does not recompile. A user can force either way by setting `nvcc_path` before
starting Python.

oneDNN, which makes Jittor's CPU convolutions as fast as PyTorch's, comes from the
`jittor-offline` package (requirements.txt): nothing here needs the network. Its large
temporary blocks are reused instead of being mapped afresh at every call
(`keep_freed_memory_for_reuse`). Under mpirun each rank runs on its share of the node's CPUs
(`share_the_cpus_among_the_ranks`); several processes started otherwise are told that
they run apart (`warn_of_processes_that_run_apart`). The memory a process may use
(`memory_of_this_process`) is what the scripts check a pass on the CPU against.
"""
import contextlib
import ctypes
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import cuda_setup
from cli import UserError, one_write_a_line

PROBE_SECONDS = 1800  # the first CUDA build compiles Jittor's core: minutes
# What the child process runs: Jittor's CUDA build, and one convolution on the GPU (cuDNN's).
PROBE = """import jittor as jt
assert jt.compiler.nvcc_path, "no CUDA in this build"
assert jt.has_cuda, "CUDA sees no GPU (cudaErrorNoDevice)"
jt.flags.use_cuda = 1
y = jt.nn.conv2d(jt.ones((1, 3, 8, 8)), jt.ones((2, 3, 3, 3)), padding=1)
assert y[0, 0, 4, 4].item() == 27, "a test convolution on the GPU gave a wrong value"
print("CUDA works")
"""
PROBE_PASSED = "CUDA works"
PROBE_VERDICT = os.path.join(cuda_setup.JITTOR_CACHE, "mccnet_cuda_probe.json")
VERDICTS_KEPT = 8  # kinds of GPU, drivers and set-ups whose verdicts are remembered at once
# Failures of the moment, not of the build or the driver: a GPU that another process holds (exclusive compute
# mode), memory taken by others, a compile worker killed for memory (Jittor's "Maybe out of memory").
MOMENTARY_FAILURE = re.compile(r"cudaErrorNoDevice|cudaErrorDevicesUnavailable|cudaErrorMemoryAllocation|"
                               r"CUDNN_STATUS_ALLOC_FAILED|out of memory")
MPI_LAUNCHER_PREFIXES = ("OMPI_", "PMIX_")  # OpenMPI's mpirun and its PMIx server
# How launchers other than OpenMPI's mpirun tell a process that it is one of several: (the variable of their
# count, that of the process's number, the launcher, where to call mpirun instead) for Slurm's srun and the PMI
# of MPICH's and Intel MPI's.
OTHER_LAUNCHERS = (("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "srun", "from the batch script, in the allocation"),
                   ("PMI_SIZE", "PMI_RANK", "an MPI launcher other than OpenMPI's mpirun", "OpenMPI's"))
# Where Jittor itself looks for python3.X-config besides the running executable's folder.
SYSTEM_CONFIG_FOLDERS = ("/usr/bin", "/usr/local/bin")
RESTARTED = "MCCNET_JITTOR_RESTARTED"  # set in a process that import_jittor started again
# mallopt(3) parameters of glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
# The characters of a path that Jittor may write unquoted into a shell command (a shell word with no quoting).
SHELL_SAFE_PATH = re.compile(r"[\w@%+=:,./-]+")
# Links to the Python environments whose paths have other characters, for Jittor to compile from: one each.
ENVIRONMENT_LINKS = os.path.join(cuda_setup.JITTOR_CACHE, "mccnet_environments")
# Jittor's error where the GPU's memory is short: its allocator's (mem/allocator/cuda_device_allocator.cc, after it
# has freed its cache and tried again), or CUDA's, cuDNN's or cuBLAS's where their own allocations fail.
GPU_MEMORY_SHORT = re.compile(r"Unable to alloc cuda device memory|cudaErrorMemoryAllocation|CUDNN_STATUS_ALLOC_FAILED|"
                              r"CUBLAS_STATUS_ALLOC_FAILED")
JITTOR_RECOMPILES = "Jittor's compile flags changed since its last start: it recompiles itself (minutes), then goes on"
cuda_problem = None  # where CUDA was tried (a GPU, or nvcc_path set) and is not used: why, as a sentence


def _probe_key(environment, gpus):
    driver = ""
    if os.path.exists(cuda_setup.DRIVER_VERSION):
        with open(cuda_setup.DRIVER_VERSION) as f:
            driver = f.readline().strip()
    return dict(environment, driver=driver, gpus=gpus, jittor=importlib.metadata.version("jittor"))


def cuda_build_problem(environment, gpus):
    """None if Jittor's CUDA build with `environment` runs a convolution (tried in a child process), else why not.
    `gpus`: what `cuda_setup.visible_gpus` says, part of the verdict's key."""
    key = _probe_key(environment, gpus)
    for verdict in kept_verdicts():
        if verdict["key"] == key:
            return verdict["problem"]
    if first_rank_of_its_node():
        print("Checking that Jittor's CUDA build works here (the first time it compiles: minutes)...",
              file=sys.stderr, flush=True)
    child = dict(probe_environment(), **environment)
    for _ in range(3):  # after a change of flags Jittor rebuilds its compiler, exits 0 and wants another run
        try:
            result = subprocess.run([sys.executable, "-c", PROBE], env=child, capture_output=True, text=True,
                                    timeout=PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            return f"importing it took more than {PROBE_SECONDS} s"
        if result.returncode != 0 or PROBE_PASSED in result.stdout:
            break
    problem, lasting = _verdict(result)
    if lasting:
        keep_verdict(key, problem)
    return problem


def kept_verdicts():
    """The verdicts kept in PROBE_VERDICT, newest first: a list of {"key": …, "problem": None or why}."""
    try:
        with open(PROBE_VERDICT) as f:
            verdicts = json.load(f)
        return [v for v in verdicts if isinstance(v, dict) and {"key", "problem"} <= v.keys()]
    except (OSError, ValueError, TypeError):
        return []


def keep_verdict(key, problem):
    """Keep a verdict with the newest others, VERDICTS_KEPT in all: the nodes of several kinds of GPU (or drivers)
    that share a home folder each find their own, rather than checking again whenever a job lands on another kind.
    The file is read again here, after the check's minutes, to keep what other processes wrote meanwhile."""
    others = [v for v in kept_verdicts() if v["key"] != key]
    verdicts = [{"key": key, "problem": problem}] + others[:VERDICTS_KEPT - 1]
    os.makedirs(os.path.dirname(PROBE_VERDICT), exist_ok=True)
    with open(f"{PROBE_VERDICT}.{os.getpid()}", "w") as f:  # then renamed: MPI ranks may probe at once
        json.dump(verdicts, f)
    os.replace(f"{PROBE_VERDICT}.{os.getpid()}", PROBE_VERDICT)


def probe_environment():
    """Our environment without the variables by which `mpirun` tells a process its place in the job: under
    mpirun, a probe with them would take its rank's place in the job, and the rank itself would then fail
    to start MPI (OpenMPI: "ompi_rte_init failed")."""
    return {k: v for k, v in os.environ.items() if not k.startswith(MPI_LAUNCHER_PREFIXES)}


def _verdict(result):
    """(None, or why the check failed; whether that holds until the set-up changes). A failure of the moment
    (MOMENTARY_FAILURE, or the check ended from outside: the OOM killer's SIGKILL, a `kill`, where Jittor itself
    aborts on a CUDA error) is checked again at the next start."""
    if PROBE_PASSED in result.stdout:
        return None, True
    if result.returncode < 0 and result.returncode != -signal.SIGABRT:
        return f"its check was killed ({signal.Signals(-result.returncode).name})", False
    return _reason(result.stderr), not MOMENTARY_FAILURE.search(result.stderr)


def _reason(stderr):
    """The telling line of a failed Jittor import: a CUDA error code, else the last error line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", stderr)
    code = re.search(r"cuda\w*Error\w*|CUDNN_STATUS_\w+", text)
    if code:
        return code.group(0)
    lines = ([line.strip() for line in text.splitlines() if "rror" in line] or text.strip().splitlines()
             or ["Jittor kept exiting without an error message"])
    return lines[-1][:200]


def keep_compile_workers_out_of_terminal_signals():
    """Jittor compiles its core in a pool of worker processes (multiprocessing), which lives as
    long as the main process. A Ctrl-C or a `kill` of the whole process group killed them too, and
    the pool's own thread forked replacements while the main process exited: one outlived it,
    waiting for work forever and holding the terminal's output open. In a session of their own the
    workers get no terminal signal, and they die with the main process all the same (Jittor's
    worker set-up asks the kernel to kill them when it exits). They also ignore SIGUSR1, which asks
    train.py to stop after a checkpoint and which Slurm sends to every process of a job step: it
    would kill them, and Jittor ends the main process when one of its children dies.
    """
    import jittor_utils
    set_up_worker = jittor_utils.pool_initializer

    def pool_initializer():
        os.setsid()
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        set_up_worker()

    jittor_utils.pool_initializer = pool_initializer


def leave_pytorch_out():
    """Keep Jittor from importing PyTorch at its start, where PyTorch is installed (as after `make test`).

    Jittor does that outside mpirun (`FIX_TORCH_ERROR` in its compile_extern.py), against a clash of the two
    that PyTorch 1.3 had when imported second; PyTorch 2.13 imported after Jittor runs (bench.py). No script here
    uses PyTorch. It cost every start 0.9 s and 180 MB, and PyTorch's import sets OpenMP's thread count, over
    OMP_NUM_THREADS (docs/history.md, 2026-12-07). A process that wants PyTorch imports it itself (the tests,
    bench.py)."""
    os.environ.setdefault("FIX_TORCH_ERROR", "0")


@contextlib.contextmanager
def pytorch_hidden():
    """Imports within see PyTorch as not installed, unless it is imported already: tensorboardX's package imports
    it, to accept its tensors (train.py gives it numpy arrays). Under mpirun that import, before Jittor's, sized
    OpenMP's threads by OpenMPI's binding of the rank to one core: a training step on one of two cores."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # `import torch` then raises ImportError
    try:
        yield
    finally:
        del sys.modules["torch"]


def keep_freed_memory_for_reuse():
    """Have glibc keep freed memory in the process instead of handing it back to the system.

    oneDNN, under Jittor's CPU convolutions, allocates its reordered copies of inputs, weights
    and outputs with malloc at every call. glibc serves each block above 32 MB with a fresh
    mapping and unmaps it when freed, so every call faulted in and zeroed new pages again: a large
    share of a training step went to the kernel. With glibc's heap alone serving every block and
    never shrunk, that time is saved, for somewhat more peak memory (docs/history.md, 2026-11-29).
    Elsewhere than glibc (no libc.so.6) nothing changes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, -1)  # -1: never give the top of the heap back


def warn_of_processes_that_run_apart():
    """Jittor joins several processes into one job only under OpenMPI's mpirun (OMPI_COMM_WORLD_SIZE). Started by
    srun alone or by MPICH's mpiexec, each runs alone: with the same flags, N copies of one training run on as many
    GPUs, writing the same files. That is also how a wrapper script runs one job per input or per learning rate,
    so it is said (by the first process), not refused."""
    if "OMPI_COMM_WORLD_SIZE" in os.environ:
        return
    for count, number, launcher, instead in OTHER_LAUNCHERS:
        processes = os.environ.get(count, "")
        if processes.isdigit() and int(processes) > 1 and os.environ.get(number, "0") == "0":
            print(f"warning: {launcher} started {processes} processes ({count}={processes}), and Jittor joins "
                  "processes into one job only under OpenMPI's mpirun: each runs alone. For one job on several GPUs "
                  f"run `mpirun -np {processes} python ...` ({instead})", file=sys.stderr)


def share_the_cpus_among_the_ranks():
    """Under mpirun, bind this rank to an equal share of the CPUs that the job has on this node.

    By default OpenMPI binds each rank to one core where it starts at most two ranks, and to a
    whole socket above that. The rank's OpenMP threads (oneDNN's) and its data-loading workers,
    which inherit the binding, then shared one core whatever the machine has (`mpirun -np 1`: a
    512×512 stylization on 2 cores took 2.9 s against 1.5 s), or every rank ran as many threads as
    the socket has cores. A binding that the user asked for (`mpirun --bind-to …`) is kept. The
    job's CPUs are those of the launcher (mpirun, or OpenMPI's daemon on another node).
    """
    local_rank, local_size = (os.environ.get(f"OMPI_COMM_WORLD_LOCAL_{name}") for name in ("RANK", "SIZE"))
    if local_rank is None or local_size is None or "OMPI_MCA_hwloc_base_binding_policy" in os.environ:
        return
    try:
        cpus = os.sched_getaffinity(os.getppid())
    except OSError:  # the launcher is not ours to inspect
        return
    share = cpu_share(cpus, int(local_rank), int(local_size), cpu_place)
    if share:  # with more ranks than CPUs, OpenMPI's binding stays
        os.sched_setaffinity(0, share)


def cpu_share(cpus, local_rank, local_size, place):
    """The CPUs of rank `local_rank` of `local_size`: an equal share of `cpus` taken in the order of `place` (socket,
    core), so that a share is whole cores of as few sockets as can be. Linux numbers the second threads of the
    cores after all the first ones: in number order, one rank of two got every core's first thread and the other
    every core's second, both spread over all the sockets."""
    ordered = sorted(cpus, key=place)
    size = len(ordered) // local_size
    return ordered[local_rank * size:(local_rank + 1) * size]


def cpu_place(cpu):
    """(socket, core within it, number) of a CPU, from Linux's sysfs; (0, number, number) where it does not say."""
    folder = f"/sys/devices/system/cpu/cpu{cpu}/topology"
    try:
        with open(os.path.join(folder, "physical_package_id")) as package, \
                open(os.path.join(folder, "core_id")) as core:
            return int(package.read()), int(core.read()), cpu
    except (OSError, ValueError):
        return 0, cpu, cpu


def memory_limit(proc_cgroup="/proc/self/cgroup", cgroups="/sys/fs/cgroup"):
    """The bytes of memory this process may use: the machine's, or less where its control group, or one above it,
    has a limit (a container's --memory, a Slurm job's --mem; cgroup v2's memory.max, v1's
    memory.limit_in_bytes). A container that sees its own group as the root finds it at the top."""
    limits = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    try:
        with open(proc_cgroup) as f:
            groups = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return limits[0]
    for _, controllers, path in groups:
        if controllers == "":
            folder, name = cgroups, "memory.max"
        elif "memory" in controllers.split(","):
            folder, name = os.path.join(cgroups, "memory"), "memory.limit_in_bytes"
        else:
            continue
        for group in group_and_those_above(path):
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(folder + group, name)) as f:
                    limits.append(int(f.read()))  # v2's "max", no limit, is not a number
    return min(limits)


def group_and_those_above(path):
    """A control group's path and those of the groups above it, to the root, "/"."""
    while path not in ("/", ""):
        yield path
        path = os.path.dirname(path)
    yield "/"


def memory_of_this_process():
    """(Bytes, in words) of the memory this process may use: `memory_limit`, shared equally among the mpirun ranks
    on its node, which work at once."""
    ranks = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1"))
    available = memory_limit() / ranks
    shared = f" (1/{ranks} of what this node gives, for its {ranks} ranks)" if ranks > 1 else ""
    return available, f"{available / 1e9:.1f} GB{shared}"


def jittor_cache_is_cold():
    """True when Jittor has not compiled its core yet for this machine and Python."""
    import jittor_utils
    return not glob.glob(os.path.join(jittor_utils.cache_path, "jittor_core*.so"))


def python_config():
    """The python3.X-config whose headers Jittor will compile against, or None where there is none.

    Jittor looks at `python_config_path`, beside the running executable, in /usr/bin and in
    /usr/local/bin: in a virtual environment made from a Python of pyenv, uv or conda it misses
    that Python's own, in the base installation's bin/, which is added last. Where Jittor finds one,
    the same one is returned: another would change Jittor's compile flags, and Jittor would then
    recompile itself (minutes, see `import_jittor`).
    """
    name = f"python{sys.version_info.major}.{sys.version_info.minor}-config"
    folder = os.path.dirname(sys.executable)
    jittors = [os.environ.get("python_config_path"), os.path.join(folder, name), f"{sys.executable}-config"]
    jittors += [os.path.join(system, name) for system in SYSTEM_CONFIG_FOLDERS]
    jittors += [os.path.join(folder, "python3-config")]
    base = os.path.join(sys.base_prefix, "bin", name)
    return next((path for path in jittors + [base] if path and os.path.isfile(path)), None)


def check_build_tools():
    """Jittor compiles its operators at their first use, with g++ against the running Python's headers:
    without either its import ends in a traceback. One line instead, saying what to install."""
    if not (os.environ.get("cc_path") or shutil.which("g++")):
        raise SystemExit("error: Jittor compiles its operators with g++, which is not installed here: install it "
                         "(Debian/Ubuntu: apt-get install g++), or set cc_path to a C++ compiler")
    config = python_config()
    if config is None:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise SystemExit(f"error: Jittor compiles against Python {version}'s headers, and python{version}-config "
                         f"is not installed: install them (Debian/Ubuntu: apt-get install python{version}-dev), "
                         "or set python_config_path to that file")
    os.environ["python_config_path"] = config


def check_that_jittor_can_make_its_folders():
    """Jittor keeps its settings in ~/.cache/jittor and what it compiles in its cache folder (the same one, or
    under JITTOR_HOME), and makes them at its import: where it cannot (a container run as another user, whose home
    is the unwritable /), its import ended in a traceback (PermissionError). One line instead."""
    settings = os.path.join(os.path.expanduser("~"), ".cache", "jittor")
    for folder, variable in ((settings, "HOME"), (cuda_setup.JITTOR_CACHE, "JITTOR_HOME")):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise SystemExit(f"error: Jittor cannot make its folder {folder} ({error.strerror}): set {variable} to a "
                             "folder you can write (in a container run as another user: -e HOME=/tmp, or a volume "
                             "that keeps what Jittor compiles)")


def run_from_paths_that_jittor_can_compile_from():
    """Jittor 1.3.11 writes some paths unquoted into the shell commands that build it: those of its cache folder
    (when it installs oneDNN), of the Python executable and of its own sources (for every operator). With a space
    or another character the shell reads in them (`My Projects/MCCNet/.venv`, `MCCNet (copy)`), its import or the
    first operator failed, in a traceback. For the cache, one line says what to do. For the others, the process
    starts again from a link to its environment (`sys.prefix`) in Jittor's cache folder: Python then finds the
    environment, and Jittor itself, there."""
    if not SHELL_SAFE_PATH.fullmatch(cuda_setup.JITTOR_CACHE):
        raise SystemExit(f"error: Jittor cannot build itself in its cache folder {cuda_setup.JITTOR_CACHE}, a path "
                         "with a space or a character that the shell reads: set JITTOR_HOME to a folder whose path "
                         "has none (Jittor remembers it)")
    jittor = os.path.dirname(importlib.util.find_spec("jittor").origin)
    unsafe = [path for path in (sys.executable, jittor) if not SHELL_SAFE_PATH.fullmatch(path)]
    if not unsafe:
        return
    cannot = (f"error: Jittor cannot compile its operators from {unsafe[0]}, a path with a space or a character "
              "that the shell reads")
    if any(os.path.relpath(path, sys.prefix).startswith("..") for path in (sys.executable, jittor)):
        raise SystemExit(f"{cannot}: install it in a virtual environment at a path without one")
    environment = os.path.realpath(sys.prefix)
    link = os.path.join(ENVIRONMENT_LINKS, hashlib.sha256(environment.encode()).hexdigest()[:16])
    temporary = f"{link}.{os.getpid()}"  # then renamed: MPI ranks start at once
    try:
        os.makedirs(ENVIRONMENT_LINKS, exist_ok=True)
        os.symlink(environment, temporary)
        os.replace(temporary, link)
    except OSError as error:  # a file system without links
        raise SystemExit(f"{cannot}, and no link to it can be made in {ENVIRONMENT_LINKS} ({error.strerror}): make "
                         "the virtual environment at a path without one")
    python = os.path.join(link, os.path.relpath(sys.executable, sys.prefix))
    os.execv(python, [python] + sys.orig_argv[1:])


def prepare_environment():
    """Before Jittor's import: memory reuse, the CPUs of an mpirun rank, quiet logs, the tools it compiles with,
    a CUDA build only where it works, a word when it will compile."""
    global cuda_problem
    check_that_jittor_can_make_its_folders()
    run_from_paths_that_jittor_can_compile_from()
    one_write_a_line()  # the lines printed here, by every rank under mpirun, come before cli.run's
    warn_of_processes_that_run_apart()
    keep_freed_memory_for_reuse()
    leave_pytorch_out()
    share_the_cpus_among_the_ranks()  # before Jittor loads OpenMP, which sizes its thread pool by the binding
    os.environ.setdefault("log_silent", "1")
    check_build_tools()
    forced = os.environ.get("nvcc_path")
    if forced or ("nvcc_path" not in os.environ and cuda_setup.gpu_present()):
        environment, cuda_problem = working_cuda_build()
        if cuda_problem is None:
            os.environ.update(environment)
            sys.path[:0] = [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p not in sys.path]
    if cuda_problem is not None or not os.environ.get("nvcc_path"):
        os.environ["nvcc_path"] = ""
        os.environ.setdefault("cache_name", "cpu")
    keep_compile_workers_out_of_terminal_signals()
    say_that_jittor_compiles_itself()


def first_rank_of_its_node():
    """True outside mpirun and in the first rank of each node, which alone says what all the node's ranks do at once
    (start on the same cold cache, check the same CUDA build): the line came once per rank."""
    return os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0") == "0"


def say_that_jittor_compiles_itself():
    """One line before a first start's minutes of silence."""
    if first_rank_of_its_node() and jittor_cache_is_cold():
        print("Jittor is compiling itself for this machine (first run only, about 3 minutes on 2 cores)...",
              file=sys.stderr, flush=True)


def working_cuda_build():
    """(The environment of Jittor's CUDA build, None) where that build works for this process, else (None, why not)."""
    gpus = cuda_setup.visible_gpus()
    if gpus == []:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        given = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "the driver gives this process none"
        return None, f"CUDA sees none of this machine's GPUs ({given})"
    environment, problem = cuda_setup.cuda_build_environment(cuda_setup.find_nvcc())
    if environment:
        environment.update({k: os.environ[k] for k in cuda_setup.USER_SETTINGS if k in os.environ})
        problem = cuda_build_problem(environment, gpus)
    return (environment, None) if problem is None else (None, f"Jittor's CUDA build does not work here ({problem})")


def import_jittor():
    """Jittor, imported (after `prepare_environment`).

    Where Jittor's compile flags changed since its last start (another `cc_flags`, other Python
    headers), it rebuilds its compile utilities and calls sys.exit(0), asking for a rerun in a
    message that log_silent hides: the command would end, successfully, having done nothing.
    The process is started again instead, once.
    """
    try:
        import jittor
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
        if os.environ.get(RESTARTED):
            raise SystemExit("error: Jittor rebuilt its compile utilities twice in a row and asks for a rerun; "
                             "run the command again")
        os.environ[RESTARTED] = "1"
        print(JITTOR_RECOMPILES, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os.execv(sys.executable, sys.orig_argv)
    os.environ.pop(RESTARTED, None)  # the processes this one starts may need their own restart
    return jittor


prepare_environment()
jt = import_jittor()
jt.flags.log_silent = 1


def add_device_argument(parser):
    parser.add_argument("--use_cuda", choices=cuda_setup.CUDA_CHOICES, default="auto",
                        help="run on the GPU: auto (default) uses CUDA when Jittor can, "
                             "0 forces the CPU, 1 requires CUDA and fails without it")


def why_no_cuda():
    """Why Jittor has no CUDA here, in a few words (where `jt.has_cuda` is false)."""
    if cuda_problem:
        return cuda_problem
    return "Jittor has no usable CUDA here ({})".format(
        "nvcc_path was set empty" if cuda_setup.gpu_present() else "no GPU")


def use_device(choice):
    """Select CPU or GPU for everything Jittor computes from now on; say why a GPU goes unused."""
    if choice == "auto" and cuda_problem:
        print(f"{cuda_problem}: using the CPU", file=sys.stderr)
    if choice == "1" and not jt.has_cuda:
        raise UserError(f"--use_cuda 1: {why_no_cuda()}; use --use_cuda 0")
    jt.flags.use_cuda = int(choice == "1" or (choice == "auto" and jt.has_cuda))
    if jt.flags.use_cuda and jt.in_mpi and jt.compile_extern.nccl_ops is None and jt.rank == 0:
        print("warning: Jittor has no NCCL here (`make setup` installs it): gradients are averaged through the "
              "host, and every rank uses the first GPU it sees (CUDA_VISIBLE_DEVICES can give each its own)",
              file=sys.stderr)


@contextlib.contextmanager
def gpu_memory_short_as(error):
    """Within: Jittor's error for a GPU short of memory, a fatal log with the failed operator's source, inputs and
    backtrace that ended the script in a traceback, is replaced by `error`, which says in one line what to do.
    (Jittor prints a summary of its memory on stderr before it.)"""
    try:
        yield
    except RuntimeError as jittor_error:
        if not GPU_MEMORY_SHORT.search(str(jittor_error)):
            raise
        raise error from None
