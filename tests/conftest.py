"""Shared fixtures and helpers: seeded oracle weights saved as .pth in the published layout,
the Jittor networks loaded from those files through the public loader, scripts run in this
process as their command line runs them, mpirun, and a small full disk."""
import os
import re
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import cli  # noqa: E402
import cuda_setup  # noqa: E402
import torch_mccnet  # noqa: E402

# The error Jittor 1.3.11 raises where the GPU's memory is short, as its executor.cc and cuda_device_allocator.cc
# write it (a GPU makes it for real in tests/gpu_check.sh, step oom).
JITTOR_GPU_MEMORY_ERROR = (
    "Wrong inputs arguments, Please refer to examples(help(jt.sync)).\n\nTypes of your inputs are:\n self\t= Var,"
    "\n\nThe function declarations are:\n void sync(bool device_sync=false, bool weak_sync=true)\n\nFailed reason:"
    "[f 1207 15:40:02.154320 76 executor.cc:686] \nExecute fused operator(38/112) failed.\n[JIT Source]: "
    "/root/.cache/jittor/jt1.3.11/g++12.2.0/py3.11.7/Linux-6.8.0x5d/IntelRXeonRPlx1c/cu13.0.48_sm_90/jit/"
    "cudnn_conv__Tx_float32__Ty_float32__Tw_float32__XFORMAT_abcd__WFORMAT_oihw__YFORMAT_abcd__JIT_1__JIT_cuda_1"
    "__index_t_int32_hash_e0a1f5b67e3c5d8_op.cc\n[OP TYPE]: cudnn_conv\n[Input]: float32[4,64,2160,3840,], "
    "float32[64,64,3,3,],\n[Output]: float32[4,64,2160,3840,],\n[Async Backtrace]: not found, please set env "
    "JT_SYNC=1, trace_py_var=3\n[Reason]: [f 1207 15:40:02.153998 76 cuda_device_allocator.cc:31] Unable to alloc "
    "cuda device memory for size 8493465600")
WEIGHT_NAMES = ("vgg_normalised.pth", "decoder_iter_160000.pth", "mcc_module_iter_160000.pth")
MPIRUN = shutil.which("mpirun")
needs_mpi = pytest.mark.skipif(MPIRUN is None, reason="OpenMPI is not installed (apt-get install openmpi-bin "
                                                      "libopenmpi-dev); .ci/run installs it")


def pytest_addoption(parser):
    parser.addoption("--use_cuda", choices=cuda_setup.CUDA_CHOICES, default="0",
                     help="where Jittor runs in the tests (the PyTorch oracle stays on the CPU); "
                          "1 checks the CUDA path on a GPU machine (tests/gpu_check.sh)")


def pytest_configure(config):
    """Jittor's start-up (backend), once the options are known and before any test module imports Jittor.

    With --use_cuda 0 (the default) Jittor is a CPU build, as if the user had set nvcc_path
    empty: here and in every script the tests start, in this process (whose `--use_cuda auto`
    would otherwise move the rest of the test run to the GPU) or as a child. The tolerances are
    the CPU's (TF32 on the GPU exceeds them); gpu_check.sh checks the GPU. That holds where the
    user's environment names a CUDA toolkit too (Jittor's users often export nvcc_path), which
    on a machine without a GPU would add the line saying why CUDA is not used to every run.
    """
    if config.getoption("--use_cuda") == "0":
        os.environ.update(nvcc_path="", cache_name="cpu")  # a CPU build, in a cache of its own
    # The tests run as one process, whatever started them (`make test` in a shell that srun gave several tasks):
    # the warning of processes that run apart (backend.OTHER_LAUNCHERS) would be a line more in every script's.
    for launcher_variable in ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "PMI_SIZE", "PMI_RANK"):
        os.environ.pop(launcher_variable, None)
    import backend  # noqa: F401  (must precede every import of jittor)


@pytest.fixture(scope="session", autouse=True)
def jittor_device(request):
    import backend
    backend.use_device(request.config.getoption("--use_cuda"))


def relative_error(actual, expected):
    """max |actual − expected| / max |expected|: the error against the value's scale."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-300))


def assert_close(actual, expected, rel, what):
    error = relative_error(actual, expected)
    assert error <= rel, f"{what}: relative error {error:.3g} > {rel:g}"
    return error


@pytest.fixture(scope="session")
def oracle():
    """The PyTorch reference networks (vgg, decoder, mcc) with seeded random weights."""
    torch.set_num_threads(2)
    return torch_mccnet.seeded_weights(seed=0)


def save_weight_files(models, folder):
    """The weights of (vgg, decoder, mcc) written by torch.save in `folder` under the published file names."""
    paths = [os.path.join(folder, name) for name in WEIGHT_NAMES]
    for module, path in zip(models, paths):
        torch.save(module.state_dict(), path)
    return paths


@pytest.fixture(scope="session")
def weight_files(oracle, tmp_path_factory):
    """The oracle's weights written by torch.save under the published file names."""
    return save_weight_files(oracle, tmp_path_factory.mktemp("experiments"))


def load_jittor_models(weight_files):
    import net
    return net.load_models(*weight_files)


@pytest.fixture(scope="session")
def jittor_models(weight_files):
    """Our Jittor networks, loaded from the oracle's .pth files (not to be modified)."""
    return load_jittor_models(weight_files)


@pytest.fixture
def images():
    """Seeded random images in [0, 1]: make(n, h, w) → float32 array (n, 3, h, w)."""
    rng = np.random.default_rng(1234)
    return lambda n, h, w: rng.random((n, 3, h, w), dtype=np.float32)


PROGRESS_BAR = re.compile(r"[^\r\n]*?\[\d\d:\d\d[^\]\r\n]*\]")  # tqdm's "…| 3/12 [00:01<00:04, 2.1it/s]"


def user_lines(text):
    """What a script printed for its user: Jittor's compile progress and tqdm's progress bars left out."""
    return [line for line in PROGRESS_BAR.sub("\n", text.replace("\r", "\n")).splitlines()
            if line.strip() and "Compiling" not in line]


@pytest.fixture
def run_main(capsys):
    """Run a script's `main` in this process as its command line does (through `cli.run`).

    Returns (exit code, the lines it printed on stderr for its user).
    """
    def run(module, *argv):
        capsys.readouterr()
        try:
            cli.run(module.main, [str(a) for a in argv], workers=module.__name__ == "train")
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        return code, user_lines(capsys.readouterr().err)
    return run


def run_script(script, *argv, **kwargs):
    """Run a script in a child interpreter (the exit-code contract as the shell sees it)."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, argv)],
                          capture_output=True, text=True, cwd=REPO, **kwargs)


# Runs a command and prints the peak resident size of that command's process, in bytes. (The command's own
# ru_maxrss would start at that of the process it was forked from: run from this small one, not from the tests'.)
PEAK_OF_A_CHILD = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")


def peak_memory_of_script(script, *argv):
    """The peak resident size in bytes of `python script argv…` run in a process of its own."""
    result = subprocess.run([sys.executable, "-c", PEAK_OF_A_CHILD, sys.executable, os.path.join(REPO, script),
                             *map(str, argv)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def mpirun(ranks, script, *argv, timeout=300, **kwargs):
    """Run `python script argv…` on `ranks` OpenMPI processes on this machine; a test failure after `timeout` s."""
    return mpirun_each([[script, *argv]] * ranks, timeout, **kwargs)


def mpirun_each(commands, timeout=300, **kwargs):
    """Run one OpenMPI process per command, `python command…` (mpirun's `-np 1 … : -np 1 …` form, where ranks
    differ as the nodes of a cluster may); a test failure after `timeout` s.

    A job that runs past it gets SIGTERM, on which mpirun ends its ranks. SIGKILL (subprocess.run's timeout)
    would leave the ranks running, and Jittor's SIGCHLD handler would end the whole test session, silently.
    """
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    ranks = [[":", "-np", "1", sys.executable, *map(str, command)] for command in commands]
    job = subprocess.Popen([MPIRUN, *root, "--oversubscribe", *sum(ranks, [])[1:]], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=REPO, **kwargs)
    try:
        stdout, stderr = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        job.terminate()
        stderr = job.communicate()[1]
        pytest.fail(f"mpirun {commands[0][0]} ran past {timeout} s (a hang?); its stderr ends: {stderr[-2000:]}")
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a 64 kB filesystem: what a disk that fills up mid-write looks like (ENOSPC)."""
    folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk is simulated with a small tmpfs, which needs root: {cli.one_line(mounted.stderr)}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)
