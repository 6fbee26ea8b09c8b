"""Jittor start-up: CPU build where CUDA cannot work, CUDA 13 builds, the fallback, device choice, quiet logging."""
import glob
import os
import platform
import re
import shutil
import subprocess
import sys

import jittor as jt
import numpy as np
import pytest
from PIL import Image

import backend
import bench
import cuda_setup
from cli import UserError
from conftest import REPO, mpirun, needs_mpi, run_script
from test_cuda_setup import CUDNN9_LIBRARIES, PIP_CUDA13_LIBRARIES, fake_cudnn, write


def test_cpu_machine_gets_a_cpu_build():
    if cuda_setup.gpu_present():
        pytest.skip("this machine has a GPU: the CPU-only path is not the one taken here")
    assert os.environ["nvcc_path"] == ""
    assert not jt.has_cuda


def test_use_cuda_1_without_cuda_is_a_clear_error():
    if jt.has_cuda:
        pytest.skip("this machine has CUDA, so --use_cuda 1 is valid here")
    why = "nvcc_path was set empty" if cuda_setup.gpu_present() else "no GPU"  # the tests' CPU build (conftest)
    with pytest.raises(UserError, match=rf"--use_cuda 1: Jittor has no usable CUDA here \({why}\); use --use_cuda 0"):
        backend.use_device("1")


@pytest.mark.parametrize("argv,expected", [
    (["--device", "cuda"], "--device cuda: Jittor has no usable CUDA here ({why})"),
    (["--repeat", "0"], "--repeat 0: must be at least 1"),
])
def test_bench_refuses_in_one_line(run_main, argv, expected):
    if jt.has_cuda and "cuda" in argv:
        pytest.skip("this machine has CUDA, so --device cuda is valid here")
    why = "nvcc_path was set empty" if cuda_setup.gpu_present() else "no GPU"  # the tests' CPU build (conftest)
    assert run_main(bench, *argv) == (1, ["error: " + expected.format(why=why)])


FREE_AND_ALLOCATE_AGAIN = """import resource, sys
if sys.argv[1] == "backend":
    import backend
import numpy as np
def allocate_and_free():
    np.ones(64 * 1024 * 1024 // 8)  # 64 MB, freed at once: above the largest block glibc would map on its own
allocate_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
allocate_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_freed_memory_is_reused_without_faulting_pages_in_again():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the setting is glibc's malloc's; other C libraries keep their own behaviour")
    faults = {kind: int(subprocess.run([sys.executable, "-c", FREE_AND_ALLOCATE_AGAIN, kind], cwd=REPO, text=True,
                                       capture_output=True, check=True).stdout) for kind in ("numpy alone", "backend")}
    assert faults["numpy alone"] > 100 and faults["backend"] < 10, faults


def test_auto_and_0_select_the_cpu_here():
    for choice in ("auto", "0"):
        backend.use_device(choice)
        assert jt.flags.use_cuda == int(choice == "auto" and jt.has_cuda)


def test_import_is_quiet_and_needs_no_network():
    # A clean interpreter: importing our network prints nothing on stdout and no
    # Jittor info lines on stderr (the cache is warm: the tests already compiled it; on a GPU
    # machine, the CPU build that conftest chose).
    left_out = ("log_silent",) if cuda_setup.gpu_present() else ("nvcc_path", "log_silent")
    env = {k: v for k, v in os.environ.items() if k not in left_out}
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-c", "import net, jittor; print(jittor.has_cuda)"],
                            cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("False", "True")
    assert "[i " not in result.stderr and "Traceback" not in result.stderr


def test_without_gpp_one_line_says_what_to_install():
    env = {k: v for k, v in os.environ.items() if k != "cc_path"}
    env["PATH"] = os.path.dirname(sys.executable)  # the venv's programs: python, pip, no compiler
    result = subprocess.run([sys.executable, "-c", "import test_video"], cwd=REPO, env=env, capture_output=True,
                            text=True)
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        "error: Jittor compiles its operators with g++, which is not installed here: install it "
        "(Debian/Ubuntu: apt-get install g++), or set cc_path to a C++ compiler"])


# A stand-in for Jittor where its compile flags changed: the first import (or every one) ends as Jittor's does
# after rebuilding its compile utilities, with sys.exit(0); a later one succeeds.
JITTOR_ASKING_FOR_A_RERUN = """import os, sys
if os.environ.get("ALWAYS") or not os.path.exists(os.environ["MARKER"]):
    open(os.environ["MARKER"], "a").close()
    sys.exit(0)
class flags:
    pass
"""


@pytest.mark.parametrize("always", [False, True], ids=["once", "every time"])
def test_when_jittor_asks_for_a_rerun_the_command_is_started_again(tmp_path, always):
    """Jittor exits with status 0 where its compile flags changed (another cc_flags, other Python headers):
    the command would end, successfully, having done nothing. It starts again (once: then an error)."""
    write(str(tmp_path / "jittor" / "__init__.py"), JITTOR_ASKING_FOR_A_RERUN)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", MARKER=str(tmp_path / "marker"),
               ALWAYS="1" if always else "")
    result = subprocess.run([sys.executable, "-c", "import backend; print('started', backend.jt.flags.log_silent)"],
                            cwd=REPO, env=env, capture_output=True, text=True)
    if always:
        assert (result.returncode, result.stdout, result.stderr.splitlines()) == (1, "", [
            backend.JITTOR_RECOMPILES,
            "error: Jittor rebuilt its compile utilities twice in a row and asks for a rerun; run the command again"])
    else:
        assert (result.returncode, result.stdout, result.stderr.splitlines()) == (0, "started 1\n",
                                                                                  [backend.JITTOR_RECOMPILES])


def test_a_virtual_environment_at_a_path_with_a_space_stylizes_as_any_other(weight_files, tmp_path):
    """Jittor writes the paths of Python and of its own sources unquoted into the commands that compile its
    operators: from a .venv in `My Projects (copy)` the first operator failed, in a traceback. The process
    starts again from a link in Jittor's cache, and computes what it computes from anywhere else. The first run
    on a machine compiles Jittor's core for that link (minutes)."""
    venv = tmp_path / "My Projects (copy)" / ".venv"
    venv.parent.mkdir()
    venv.symlink_to(os.path.realpath(sys.prefix), target_is_directory=True)
    vgg, decoder, mcc = weight_files
    outputs = []
    for python in (sys.executable, str(venv / os.path.relpath(sys.executable, sys.prefix))):
        output = tmp_path / f"output {len(outputs)}"
        result = subprocess.run([python, "test_video.py", "--vgg_path", vgg, "--decoder_path", decoder,
                                 "--transform_path", mcc, "--content", "input/content/chelsea.jpg", "--style",
                                 "input/style/strokes.jpg", "--content_size", "64", "--save_ext", ".png",
                                 "--output", output], cwd=REPO, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(np.asarray(Image.open(output / "chelsea_stylized_strokes.png")))
    assert np.array_equal(*outputs)


@pytest.mark.parametrize("variable", ["HOME", "JITTOR_HOME"])
def test_a_jittor_folder_that_cannot_be_made_is_one_line(tmp_path, variable):
    """Jittor makes ~/.cache/jittor (its settings) and its cache folder at its import: where it cannot (a container
    run as another user, whose home is /), its import ended in a traceback."""
    (tmp_path / "a file").touch()
    env = {k: v for k, v in os.environ.items() if k != "JITTOR_HOME"}
    env[variable] = str(tmp_path / "a file" / "home")  # a folder below a file: never made, by root either
    result = subprocess.run([sys.executable, "test_video.py", "--help"], cwd=REPO, env=env, capture_output=True,
                            text=True)
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        f"error: Jittor cannot make its folder {env[variable]}/.cache/jittor (Not a directory): set {variable} to a "
        "folder you can write (in a container run as another user: -e HOME=/tmp, or a volume that keeps what "
        "Jittor compiles)"])


def test_a_home_folder_whose_path_has_a_space_is_one_line(tmp_path):
    """Jittor's cache, in the home folder, at a path with a space: its import failed at `cd` (installing oneDNN)."""
    env = {k: v for k, v in os.environ.items() if k != "JITTOR_HOME"}
    home = tmp_path / "Jane Doe"
    result = subprocess.run([sys.executable, "test_video.py", "--help"], cwd=REPO, env=dict(env, HOME=str(home)),
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        f"error: Jittor cannot build itself in its cache folder {home}/.cache/jittor, a path with a space or a "
        "character that the shell reads: set JITTOR_HOME to a folder whose path has none (Jittor remembers it)"])


def test_a_jittor_outside_the_environment_at_a_path_with_a_space_is_one_line(tmp_path):
    """A Jittor installed elsewhere than in the running environment (PYTHONPATH, the user's site-packages) at a path
    with a space: a link to the environment would not move it, so one line says what to do."""
    jittor = tmp_path / "my packages" / "jittor"
    write(str(jittor / "__init__.py"), "")
    result = subprocess.run([sys.executable, "test_video.py", "--help"], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(jittor.parent)), capture_output=True, text=True)
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        f"error: Jittor cannot compile its operators from {jittor}, a path with a space or a character that the "
        "shell reads: install it in a virtual environment at a path without one"])


def test_an_environment_at_a_path_with_a_space_without_a_link_is_one_line(tmp_path):
    """Where the link to the environment cannot be made (a Jittor cache on a file system without links; here a
    file where its folder would be), one line says what to do."""
    venv = tmp_path / "My Projects" / ".venv"
    venv.parent.mkdir()
    venv.symlink_to(os.path.realpath(sys.prefix), target_is_directory=True)
    python = venv / os.path.relpath(sys.executable, sys.prefix)
    home = tmp_path / "home"
    write(str(home / ".cache" / "jittor" / "mccnet_environments"), "")
    env = {k: v for k, v in os.environ.items() if k != "JITTOR_HOME"}
    result = subprocess.run([python, "test_video.py", "--help"], cwd=REPO, env=dict(env, HOME=str(home)),
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        f"error: Jittor cannot compile its operators from {python}, a path with a space or a character that the "
        f"shell reads, and no link to it can be made in {home}/.cache/jittor/mccnet_environments (File exists): make "
        "the virtual environment at a path without one"])


def a_python_made_of(monkeypatch, folder, base, system):
    """This process's Python, as backend sees it, made a venv in `folder` from a Python in `base`; `system`:
    the folders besides the executable's where Jittor looks for python3.X-config."""
    monkeypatch.delenv("python_config_path", raising=False)
    monkeypatch.setattr(sys, "executable", str(folder / "bin" / "python"))
    monkeypatch.setattr(sys, "base_prefix", str(base))
    monkeypatch.setattr(backend, "SYSTEM_CONFIG_FOLDERS", tuple(map(str, system)))


def test_without_python_headers_one_line_says_what_to_install(monkeypatch, tmp_path):
    a_python_made_of(monkeypatch, tmp_path / "venv", tmp_path / "base", [tmp_path / "usr" / "bin"])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(SystemExit, match=rf"^error: Jittor compiles against Python {version}'s headers, and "
                                         rf"python{version}-config is not installed: install them \(Debian/Ubuntu: "
                                         rf"apt-get install python{version}-dev\), or set python_config_path"):
        backend.check_build_tools()


def test_jittor_gets_the_python_config_of_the_python_the_venv_was_made_from(monkeypatch, tmp_path):
    """In a venv made from pyenv's, uv's or conda's Python, Jittor found no python3.X-config (a traceback):
    that Python's own is given to it. One that Jittor finds is kept (another would change its flags)."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}-config"
    base, system = tmp_path / "pyenv" / "versions" / "3.x", tmp_path / "usr" / "bin"
    a_python_made_of(monkeypatch, tmp_path / "venv", base, [system])
    write(str(base / "bin" / name))
    backend.check_build_tools()
    assert os.environ["python_config_path"] == str(base / "bin" / name)
    monkeypatch.delenv("python_config_path")
    write(str(system / name))
    backend.check_build_tools()
    assert os.environ["python_config_path"] == str(system / name)


CUDA_TOOLKIT = "/usr/local/cuda/bin/nvcc"


def stand_in_pip_cuda13(site):
    """CUDA 13 laid out as pip installs it (nvidia/cu13 in `site`), made of the local toolkit: a
    script running its nvcc (which then compiles with its own headers), links to its headers and
    runtime under pip's names; the libraries that Jittor loads after its core has started, and
    cuDNN 9, as stand-ins (empty files: without a GPU the core cannot start)."""
    folder = os.path.join(site, "nvidia", "cu13")
    home = cuda_setup.toolkit_home(CUDA_TOOLKIT)
    for entry in ("bin", "include", "lib"):
        os.makedirs(os.path.join(folder, entry), exist_ok=True)
    nvcc = os.path.join(folder, "bin", "nvcc")
    with open(nvcc, "w") as f:
        f.write(f"#!/bin/sh\nexec {os.path.realpath(CUDA_TOOLKIT)} \"$@\"\n")
    os.chmod(nvcc, 0o755)
    for name in os.listdir(os.path.join(home, "include")):
        if not os.path.lexists(os.path.join(folder, "include", name)):
            os.symlink(os.path.join(home, "include", name), os.path.join(folder, "include", name))
    for name in glob.glob(os.path.join(home, "lib64", "libcudart.so.*")):
        if not os.path.lexists(os.path.join(folder, "lib", os.path.basename(name))):
            os.symlink(name, os.path.join(folder, "lib", os.path.basename(name)))
    for name in [name for name in PIP_CUDA13_LIBRARIES if not name.startswith("libcudart")]:
        write(os.path.join(folder, "lib", name))
    for name in cuda_setup.JITTOR_LIBRARIES:
        write(os.path.join(folder, "include", f"{name}.h"))
    cudnn = os.path.join(site, "nvidia", "cudnn")
    fake_cudnn(os.path.join(cudnn, "include"), os.path.join(cudnn, "lib"), 9, CUDNN9_LIBRARIES)
    return nvcc


@pytest.mark.skipif(not os.path.exists(CUDA_TOOLKIT),
                    reason=f"no CUDA toolkit at {CUDA_TOOLKIT}: Jittor's CUDA build cannot be compiled on this machine")
@pytest.mark.skipif(cuda_setup.gpu_present(), reason="this machine has a GPU: its CUDA path is checked for real "
                                                     "(tests/gpu_check.sh)")
def test_cuda_build_compiles_with_our_set_up_and_a_failing_cuda_falls_back(weight_files, tmp_path):
    """Jittor's CUDA build with CUDA 13 and cuDNN 9 from pip, set up as on a GPU machine (no GPU here).

    The pip packages are stand-ins made of the local CUDA 13 toolkit (stand_in_pip_cuda13);
    cuda_setup joins them in its CUDA tree, and Jittor is imported from its adapted copy.
    Jittor's core must compile with our flags and fail only when it starts the CUDA runtime
    (cudaErrorInsufficientDriver): a compile error would be another reason. That failure, on
    a machine where CUDA is asked for, is one line and the CPU (--use_cuda auto) or one error
    (--use_cuda 1).
    """
    if os.path.exists(backend.PROBE_VERDICT):
        os.unlink(backend.PROBE_VERDICT)  # probe again: the compiled build itself stays in Jittor's cache
    # In Jittor's cache, to stay the same from run to run: Jittor recompiles its core when the tree changes.
    site = os.path.join(cuda_setup.CACHE, "stand-in-site")
    nvcc = stand_in_pip_cuda13(site)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)).save(image)
    vgg, decoder, mcc = weight_files
    argv = ["--vgg_path", vgg, "--decoder_path", decoder, "--transform_path", mcc, "--content", image,
            "--style", image, "--output", tmp_path, "--content_size", "0"]
    # What a GPU machine with a broken driver looks like; none of the choices backend made for this process.
    env = {k: v for k, v in os.environ.items() if k not in cuda_setup.USER_SETTINGS}
    env.update(nvcc_path=nvcc, PYTHONPATH=site)
    auto = run_script("test_video.py", *argv, env=env, timeout=2400)
    required = run_script("test_video.py", *argv, "--use_cuda", "1", env=env, timeout=600)
    lines = [line for line in auto.stderr.splitlines() if line.startswith("Jittor's CUDA build")]
    assert auto.returncode == 0, auto.stderr[-2000:]
    assert lines == ["Jittor's CUDA build does not work here (cudaErrorInsufficientDriver): using the CPU"]
    assert (tmp_path / "photo_stylized_photo.jpg").exists()
    assert required.returncode == 1
    assert required.stderr.strip().splitlines()[-1] == (
        "error: --use_cuda 1: Jittor's CUDA build does not work here (cudaErrorInsufficientDriver); use --use_cuda 0")


def real_cudnn_9_include():
    """The header folder of a real cuDNN 9 (pip's or the system's) beside a toolkit, or None."""
    nvcc = cuda_setup.find_nvcc()
    cudnn = nvcc and cuda_setup.find_cudnn(nvcc)
    if cudnn and os.path.getsize(os.path.join(cudnn.include, "cudnn.h")) and cudnn.version[0] >= 9:
        return cudnn.include
    return None


NEEDS_CUDNN_9 = pytest.mark.skipif(
    not real_cudnn_9_include(), reason="needs a CUDA toolkit and cuDNN 9's headers, which `make setup` installs on "
    "GPU machines (pip's nvidia-cudnn-cu13); the CPU machines have neither")


@NEEDS_CUDNN_9
def test_graph_api_convolutions_compile_against_cudnn_9(tmp_path):
    """The three ops of the graph-API copy, compiled by nvcc as Jittor compiles them: once as the op
    library, and once per data type as its JIT code (Jittor's formats and types substituted)."""
    copy = os.path.join(cuda_setup.adapted_jittor("graph"), "jittor")
    nvcc = cuda_setup.find_nvcc()
    folders = (["src"], ["extern", "cuda", "inc"], ["extern", "cuda", "cudnn", "inc"],
               ["extern", "cuda", "cudnn", "ops"])
    includes = [os.path.join(copy, *folder) for folder in folders]
    command = [nvcc, "-x", "cu", "-std=c++17", "-c", "-DHAS_CUDA", "-include", "helper_string.h",
               *cuda_setup.CUDA13_FLAGS.split(), *(f"-I{folder}" for folder in includes + [real_cudnn_9_include()])]
    builds = {"op library": [], "float32 JIT": ["-DJIT", "-DJIT_cuda", "-DTx=float", "-DTw=float", "-DTy=float"],
              "float16 JIT": ["-DJIT", "-DJIT_cuda", "-DTx=half1", "-DTw=half1", "-DTy=half1"]}
    compiles = {}
    for name in cuda_setup.GRAPH_CONV_OPS:
        with open(os.path.join(copy, "extern", "cuda", "cudnn", "ops", name)) as f:
            source = f.read()
        for macro, layout in (("@XFORMAT", "abcd"), ("@WFORMAT", "oihw"), ("@YFORMAT", "abcd")):
            source = source.replace(macro, layout)
        write(str(tmp_path / name), source)
        for build, flags in builds.items():
            compiles[name, build] = subprocess.Popen(
                command + flags + ["-o", str(tmp_path / f"{name}.{len(compiles)}.o"), str(tmp_path / name)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for (name, build), process in compiles.items():
        output = process.communicate()[0]
        assert process.returncode == 0, f"{name}, {build}:\n{output}"


@NEEDS_CUDNN_9
def test_graph_api_convolutions_choose_and_keep_plans_as_intended(tmp_path):
    """cudnn_graph_conv.h against a mock of cuDNN (tests/cudnn_graph_mock): the calls as cuDNN's
    documentation asks, the fastest allowed engine, the plan cache, the workspace limit, the fallback."""
    mock = os.path.join(REPO, "tests", "cudnn_graph_mock")
    program = str(tmp_path / "mock_cudnn")
    # nvcc: it adds its toolkit's headers (cuda_runtime.h) and compiles the host code with g++;
    # not linked with CUDA's runtime, whose event functions the mock replaces.
    subprocess.run([cuda_setup.find_nvcc(), "-std=c++17", "-O0", "-cudart", "none", f"-I{mock}", f"-I{REPO}",
                    f"-I{real_cudnn_9_include()}", os.path.join(mock, "mock_cudnn.cc"), "-o", program], check=True)
    result = subprocess.run([program], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all scenarios passed" in result.stdout


@needs_mpi
def test_under_mpirun_the_cuda_check_stays_out_of_the_mpi_job(tmp_path):
    """Each rank checks Jittor's CUDA build in a child process before it imports Jittor (which starts
    MPI). A child with mpirun's variables took its rank's place in the job, and the rank's own start
    of MPI then failed ("ompi_rte_init failed"): the child gets none of them. Each rank checks (or takes the verdict
    that the other has just kept); the first alone says so."""
    verdict = None
    if os.path.exists(backend.PROBE_VERDICT):  # this machine's own, put back afterwards
        with open(backend.PROBE_VERDICT) as f:
            verdict = f.read()
        os.unlink(backend.PROBE_VERDICT)  # a verdict kept from an earlier run would spare the check
    env = {k: v for k, v in os.environ.items() if k != "nvcc_path"}  # as a user's: backend chooses
    checked = False
    try:
        result = mpirun(2, os.path.join(REPO, "tests", "mpi_probe.py"), tmp_path, env=env)
        checked = os.path.exists(backend.PROBE_VERDICT)  # a rank has checked, and kept its verdict
    finally:
        if verdict is not None:
            write(backend.PROBE_VERDICT, verdict)
        elif checked:
            os.unlink(backend.PROBE_VERDICT)
    assert result.returncode == 0, result.stderr[-3000:]
    # Rank 0 says it, unless rank 1 had kept its verdict before rank 0 looked: never twice.
    assert checked and result.stderr.count("Checking that Jittor's CUDA build works here") <= 1, result.stderr[-3000:]
    for rank in (0, 1):
        report = (tmp_path / f"rank{rank}.txt").read_text()
        assert report == (f"rank {rank} of 2: sum 3.0; CUDA: Jittor's CUDA build does not work here (AssertionError: "
                          "no CUDA in this build)")


# Its line in one write: mpirun passes on each write as it comes, and print's pieces of two ranks could mix.
RANK_CPUS = """import os, backend
cpus = " ".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
os.write(1, f"{os.environ['OMPI_COMM_WORLD_RANK']} {cpus}\\n".encode())
"""


def cpus_of_the_ranks(ranks, **kwargs):
    """{rank: its CPUs} of an mpirun job of `ranks` processes that import backend."""
    result = mpirun(ranks, "-c", RANK_CPUS, **kwargs)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == ranks, (result.stdout, result.stderr[-3000:])
    return {int(line.split()[0]): [int(cpu) for cpu in line.split()[1:]] for line in result.stdout.splitlines()}


@needs_mpi
def test_under_mpirun_each_rank_gets_its_share_of_the_cpus():
    """OpenMPI binds a rank to one core where it starts at most two ranks: oneDNN's threads and the data workers
    of `mpirun -np 1` ran on one core (a 512×512 stylization on 2 cores: 2.9 s against 1.5 s)."""
    cpus = sorted(os.sched_getaffinity(0))
    assert cpus_of_the_ranks(1) == {0: cpus}
    if len(cpus) >= 2:
        halves = {rank: sorted(backend.cpu_share(cpus, rank, 2, backend.cpu_place)) for rank in (0, 1)}
        assert len(halves[0]) == len(halves[1]) == len(cpus) // 2 and not set(halves[0]) & set(halves[1])
        assert cpus_of_the_ranks(2) == halves
        bound = cpus_of_the_ranks(1, env=dict(os.environ, OMPI_MCA_hwloc_base_binding_policy="core"))
        assert len(bound[0]) == 1  # the user's own `mpirun --bind-to core` is kept


# The scripts' modules imported as a script imports them; then whether PyTorch was loaded, OpenMP's thread count (that
# of the libgomp that Jittor's operators run on) and this process's CPUs.
THREADS_OF_THE_SCRIPTS = """import ctypes, os, sys
import train, test_video, evaluate
threads = ctypes.CDLL("libgomp.so.1").omp_get_max_threads()
loaded = "torch" in sys.modules
import torch  # still importable: train.py hides PyTorch from tensorboardX only while importing it
rank, cpus = os.environ.get("OMPI_COMM_WORLD_RANK", 0), len(os.sched_getaffinity(0))
os.write(1, f"{rank} {loaded} {threads} {cpus}\\n".encode())
"""


def test_the_scripts_start_without_pytorch_and_keep_omp_num_threads():
    """PyTorch is installed here, as in a user's environment after `make test`. Jittor imported it at every start
    (0.9 s, 180 MB) and tensorboardX did in train.py, and PyTorch's import set OpenMP's thread count over
    OMP_NUM_THREADS."""
    result = subprocess.run([sys.executable, "-c", THREADS_OF_THE_SCRIPTS], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[1:3] == ["False", "3"]


@needs_mpi
@pytest.mark.parametrize("ranks", [1, 2])
def test_under_mpirun_a_rank_runs_as_many_threads_as_it_has_cpus(ranks):
    """PyTorch's import (tensorboardX's, in train.py) set OpenMP's threads by OpenMPI's binding of the rank to one
    core, before `backend` gave the rank its share of the CPUs: a training step of `mpirun -np 1` on 2 cores took
    2.28 s against 1.24 s."""
    without_a_thread_count = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    result = mpirun(ranks, "-c", THREADS_OF_THE_SCRIPTS, env=without_a_thread_count)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = sorted(result.stdout.splitlines())
    assert len(lines) == ranks
    for line in lines:
        _, loaded, threads, cpus = line.split()
        assert loaded == "False" and threads == cpus, line


def test_a_rank_gets_whole_cores_of_one_socket():
    """Linux numbers the cores' first threads before their second ones: on 2 sockets × 2 cores × 2 threads,
    CPUs 0–3 are the first threads (0, 1 on socket 0) and 4–7 their siblings in the same order."""
    place = {cpu: (cpu % 4 // 2, cpu % 2, cpu) for cpu in range(8)}.get
    assert backend.cpu_share(range(8), 0, 2, place) == [0, 4, 1, 5]  # socket 0, both threads of its 2 cores
    assert backend.cpu_share(range(8), 1, 2, place) == [2, 6, 3, 7]
    assert backend.cpu_share(range(8), 3, 4, place) == [3, 7]  # one core each
    assert backend.cpu_share(range(8), 2, 3, place) == [2, 6]  # 2 CPUs each: 3 and 7 stay unused
    assert backend.cpu_share({5}, 0, 1, backend.cpu_place) == [5]


def test_the_networks_import_where_stderr_is_no_file_stream():
    """A notebook's stderr (ipykernel's OutStream, here a StringIO) has no `reconfigure`: `import net` must work."""
    script = "import io, sys\nsys.stderr = io.StringIO()\nimport net\nprint(len(net.decoder))\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert (result.returncode, result.stdout.strip()) == (0, "29"), result.stdout + result.stderr[-2000:]


def real_nccl_include():
    """The header folder of pip's NCCL where a toolkit and OpenMPI's compiler are there too, or None."""
    nccl = cuda_setup.pip_nccl_folder()
    if nccl and cuda_setup.find_nvcc() and shutil.which("mpicc"):
        return os.path.join(nccl, "include")
    return None


@pytest.mark.skipif(not real_nccl_include(), reason="needs a CUDA toolkit, OpenMPI and NCCL's headers, which "
                    "`make setup` installs on GPU machines (pip's nvidia-nccl-cu13); the CPU machines lack NCCL")
def test_jittors_nccl_ops_compile_against_pip_nccl(tmp_path):
    """Jittor's NCCL ops (what averages gradients on the GPUs under mpirun), compiled by nvcc as Jittor
    compiles them against the NCCL that `make setup` installs: the op library, and each collective's
    float32 JIT code (Jittor's type substitution done here)."""
    copy = os.path.join(cuda_setup.adapted_jittor(), "jittor")
    nccl = os.path.join(copy, "extern", "cuda", "nccl")
    folders = (["src"], ["extern", "cuda", "inc"], ["extern", "mpi", "inc"], ["extern", "cuda", "nccl", "inc"])
    includes = [os.path.join(copy, *folder) for folder in folders]
    mpi_flags = subprocess.run(["mpicc", "--showme:compile"], capture_output=True, text=True, check=True).stdout
    command = [cuda_setup.find_nvcc(), "-x", "cu", "-std=c++17", "-c", "-DHAS_CUDA", "-include", "helper_string.h",
               *cuda_setup.CUDA13_FLAGS.split(), *mpi_flags.split(),
               *(f"-I{folder}" for folder in includes + [real_nccl_include()])]
    sources = {os.path.join(nccl, "src", "nccl_wrapper.cc"): []}
    for path in glob.glob(os.path.join(nccl, "ops", "nccl_*_op.cc")):
        sources[path] = []
        with open(path) as f:
            text = f.read()
        if "@T_NCCL" in text:
            jit = str(tmp_path / os.path.basename(path))
            write(jit, re.sub(r"@define\(T_NCCL,(\n\s*@if\(.*\))+\n\s*\)", "", text).replace("@T_NCCL", "ncclFloat"))
            sources[jit] = ["-DJIT", "-DJIT_cuda", "-DTx=float", f"-I{os.path.join(nccl, 'ops')}"]
    assert len(sources) == 10  # the wrapper, 5 ops, the JIT code of 4 collectives
    compiles = {path: subprocess.Popen(command + flags + ["-o", str(tmp_path / f"{i}.o"), path], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
                for i, (path, flags) in enumerate(sources.items())}
    for path, process in compiles.items():
        output = process.communicate()[0]
        assert process.returncode == 0, f"{path}:\n{output}"


def test_a_toolkit_without_jittors_libraries_is_not_tried_and_the_device_choice_says_so(tmp_path):
    if not os.path.exists(CUDA_TOOLKIT) or cuda_setup.gpu_present():
        pytest.skip(f"needs the CUDA toolkit at {CUDA_TOOLKIT} and no GPU")
    if cuda_setup.libraries_lacking(CUDA_TOOLKIT) != list(cuda_setup.JITTOR_LIBRARIES.values()):
        pytest.skip(f"the toolkit at {CUDA_TOOLKIT} has some of Jittor's libraries: this test needs one with none")
    env = {k: v for k, v in os.environ.items() if k not in cuda_setup.USER_SETTINGS}
    env.update(nvcc_path=CUDA_TOOLKIT, PYTHONPATH=str(tmp_path))
    why = ("Jittor's CUDA build does not work here (the CUDA 13.0 toolkit in {} lacks cuBLAS, cuRAND, cuFFT and "
           "cuSPARSE, which Jittor's CUDA build loads: {})").format(cuda_setup.toolkit_home(CUDA_TOOLKIT),
                                                                    cuda_setup.TOOLKIT_ADVICE)
    expected = {"auto": [f"{why}: using the CPU"], "0": [], "1": [f"--use_cuda 1: {why}; use --use_cuda 0"]}
    for choice, lines in expected.items():
        script = ("import sys, backend, jittor\nprint(jittor.has_cuda)\ntry:\n"
                  f"    backend.use_device({choice!r})\nexcept backend.UserError as error:\n    sys.exit(str(error))")
        result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.stdout == "False\n"
        assert result.stderr.splitlines() == lines, choice


# The four calls of CUDA's driver API that cuda_setup.visible_gpus makes, answering as the environment says:
# FAKE_CUINIT, cuInit's status (0 unless set); FAKE_GPUS, the compute capabilities of the GPUs given to the
# process, as comma-separated numbers (90: 9.0).
FAKE_LIBCUDA = r"""
#include <stdlib.h>
extern "C" {
static int capability(int index) {
    const char* text = getenv("FAKE_GPUS");
    for (int i = 0; text && *text; i++) {
        char* end;
        long value = strtol(text, &end, 10);
        if (i == index) return (int)value;
        text = *end ? end + 1 : end;
    }
    return -1;
}
int cuInit(unsigned int flags) { return getenv("FAKE_CUINIT") ? atoi(getenv("FAKE_CUINIT")) : 0; }
int cuDeviceGetCount(int* count) { *count = 0; while (capability(*count) >= 0) ++*count; return 0; }
int cuDeviceGet(int* device, int ordinal) { *device = ordinal; return 0; }
int cuDeviceGetAttribute(int* value, int attribute, int device) {
    if (capability(device) < 0 || (attribute != 75 && attribute != 76)) return 1;
    *value = attribute == 75 ? capability(device) / 10 : capability(device) % 10;
    return 0;
}
}
"""


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory):
    folder = tmp_path_factory.mktemp("driver")
    (folder / "fake_libcuda.cc").write_text(FAKE_LIBCUDA)
    library = folder / "libcuda.so.1"
    subprocess.run(["g++", "-shared", "-fPIC", "-o", library, folder / "fake_libcuda.cc"], check=True)
    return str(library)


@pytest.mark.parametrize("cuinit,gpus,expected", [
    ("0", "90,86", ["9.0", "8.6"]),
    ("0", "", []),  # CUDA_VISIBLE_DEVICES naming no GPU of the machine
    ("100", "", []),  # CUDA_ERROR_NO_DEVICE: a job given no GPU, CUDA_VISIBLE_DEVICES=""
    ("999", "90", None),  # the driver fails: let Jittor's own check say why
])
def test_the_driver_says_which_gpus_this_process_is_given(fake_libcuda, monkeypatch, cuinit, gpus, expected):
    monkeypatch.setattr(cuda_setup, "LIBCUDA", fake_libcuda)
    monkeypatch.setenv("FAKE_CUINIT", cuinit)
    monkeypatch.setenv("FAKE_GPUS", gpus)
    assert cuda_setup.visible_gpus() == expected


def test_without_the_drivers_library_the_driver_cannot_say(monkeypatch, tmp_path):
    monkeypatch.setattr(cuda_setup, "LIBCUDA", str(tmp_path / "libcuda.so.1"))
    assert cuda_setup.visible_gpus() is None


# A start as on a GPU machine whose driver gives this process no GPU; Jittor's CUDA build must not even be tried.
NO_GPU_GIVEN = """import os, sys
sys.path.insert(0, os.getcwd())
import cuda_setup
cuda_setup.gpu_present = lambda: True
cuda_setup.LIBCUDA = sys.argv[1]
def tried(nvcc):
    raise AssertionError("Jittor's CUDA build was tried")
cuda_setup.cuda_build_environment = tried
import backend, jittor
from cli import UserError
print(repr(os.environ["nvcc_path"]), jittor.has_cuda)
backend.use_device("auto")
try:
    backend.use_device("1")
except UserError as error:
    print(error)
"""


@pytest.mark.parametrize("visible,given", [("", "CUDA_VISIBLE_DEVICES=''"),
                                           (None, "the driver gives this process none")])
def test_a_machine_whose_gpus_this_process_is_not_given_runs_on_the_cpu_and_says_why(fake_libcuda, visible, given):
    """A Slurm job without --gres on a GPU node, or CUDA_VISIBLE_DEVICES="". A check of Jittor's CUDA build there
    would fail for want of a GPU, and its verdict, kept in a home folder that the nodes share, would keep later
    jobs that have GPUs on the CPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("nvcc_path", "CUDA_VISIBLE_DEVICES")}
    env.update(FAKE_CUINIT="100", **({} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}))
    result = subprocess.run([sys.executable, "-c", NO_GPU_GIVEN, fake_libcuda], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    why = f"CUDA sees none of this machine's GPUs ({given})"
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["'' False", f"--use_cuda 1: {why}; use --use_cuda 0"]
    assert result.stderr.splitlines()[-1] == f"{why}: using the CPU"


def probe_that(monkeypatch, tmp_path, returncode, stdout="", stderr=""):
    """The check's child process replaced by one that ends as told (a real one that dies by a signal would
    end this process too: Jittor, imported here, quits on a child's SIGCHLD), the verdict kept in `tmp_path`;
    returns the list of its runs."""
    runs = []

    def run(args, **kwargs):
        runs.append(args)
        return subprocess.CompletedProcess(args, returncode, stdout, stderr)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(backend, "PROBE_VERDICT", str(tmp_path / "verdict.json"))
    return runs


@pytest.mark.parametrize("returncode,stderr,problem", [
    # Jittor's abort when another process holds the GPU in exclusive compute mode
    (-6, "CUDA error at array_op.cc:33 code=46( cudaErrorDevicesUnavailable )", "cudaErrorDevicesUnavailable"),
    (1, "RuntimeError: CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED"),
    (-9, "", "its check was killed (SIGKILL)"),  # the OOM killer, in a compile
])
def test_a_failure_of_the_moment_is_checked_again_at_the_next_start(monkeypatch, tmp_path, returncode, stderr,
                                                                    problem):
    runs = probe_that(monkeypatch, tmp_path, returncode, stderr=stderr)
    for _ in range(2):
        assert backend.cuda_build_problem({"cache_name": "probe"}, ["9.0"]) == problem
    assert len(runs) == 2 and not os.path.exists(backend.PROBE_VERDICT)


def test_a_lasting_verdict_is_kept_for_the_gpus_seen(monkeypatch, tmp_path):
    """A compile error, or success, is the same at every start: kept. Another kind of GPU (a node of another
    partition, sharing the home folder) is checked once: CUDA 13 compiles for none older than Turing. Jobs that
    land on either kind in turn then find each kind's verdict."""
    error = "nvcc fatal   : Unsupported gpu architecture 'compute_70'"
    runs = probe_that(monkeypatch, tmp_path, 1, stderr=f"Traceback (most recent call last):\nRuntimeError: {error}")
    for gpus in (["7.0"], ["7.0"], ["7.5"], ["7.0"], ["7.5"]):
        assert backend.cuda_build_problem({"cache_name": "probe"}, gpus) == f"RuntimeError: {error}"
    assert len(runs) == 2
    runs = probe_that(monkeypatch, tmp_path, 0, stdout=backend.PROBE_PASSED)
    for gpus in (["9.0"], ["8.0"], ["9.0"], ["8.0"]):
        assert backend.cuda_build_problem({"cache_name": "probe"}, gpus) is None
    assert len(runs) == 2


@pytest.mark.parametrize("local_rank,says", [(None, True), ("0", True), ("1", False)])
def test_the_check_is_announced_by_one_rank_of_a_node_and_only_when_it_runs(monkeypatch, tmp_path, capsys,
                                                                            local_rank, says):
    """The check's minutes are announced (by one rank of a node under mpirun); a kept verdict is taken silently."""
    if local_rank is None:
        monkeypatch.delenv("OMPI_COMM_WORLD_LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", local_rank)
    probe_that(monkeypatch, tmp_path, 0, stdout=backend.PROBE_PASSED)
    for _ in range(2):
        assert backend.cuda_build_problem({"cache_name": "probe"}, ["9.0"]) is None
    line = "Checking that Jittor's CUDA build works here (the first time it compiles: minutes)...\n"
    assert capsys.readouterr().err == (line if says else "")


def test_the_newest_verdicts_are_kept(monkeypatch, tmp_path):
    """VERDICTS_KEPT of them: the oldest goes, and a file of another form (an earlier release's one verdict)
    is read as none."""
    (tmp_path / "verdict.json").write_text('{"key": {}, "problem": null}')
    runs = probe_that(monkeypatch, tmp_path, 0, stdout=backend.PROBE_PASSED)
    kinds = [[f"{n}.0"] for n in range(backend.VERDICTS_KEPT + 1)]
    for gpus in kinds + kinds[::-1]:
        assert backend.cuda_build_problem({"cache_name": "probe"}, gpus) is None
    assert len(runs) == len(kinds) + 1  # the newer kinds found, then the first, which went: checked anew
    newest = [kinds[0]] + kinds[::-1][:backend.VERDICTS_KEPT - 1]
    assert [verdict["key"]["gpus"] for verdict in backend.kept_verdicts()] == newest


RUN_APART = "and Jittor joins processes into one job only under OpenMPI's mpirun: each runs alone. For one job " \
            "on several GPUs run `mpirun -np {n} python ...` ({instead})"


@pytest.mark.parametrize("launch,lines", [
    ({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "0"},
     ["warning: srun started 4 processes (SLURM_STEP_NUM_TASKS=4), " + RUN_APART.format(
         n=4, instead="from the batch script, in the allocation")]),
    ({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3"}, []),  # the first process says it, once
    ({"PMI_SIZE": "2", "PMI_RANK": "0"},  # MPICH's or Intel MPI's mpiexec
     ["warning: an MPI launcher other than OpenMPI's mpirun started 2 processes (PMI_SIZE=2), " + RUN_APART.format(
         n=2, instead="OpenMPI's")]),
    ({"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}, []),  # srun -n 1
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, []),  # the batch script of a job of 4 tasks, which starts mpirun
])
def test_several_processes_that_jittor_does_not_join_are_told_so(launch, lines):
    """`srun -n 4 python train.py` trains four separate runs on four GPUs, writing the same files: said, not
    refused, since a wrapper script that gives each its own input or learning rate starts processes alike."""
    result = run_script("train.py", "--help", env=dict(os.environ, **launch))
    assert result.returncode == 0 and result.stdout.startswith("usage: train.py"), result.stderr[-2000:]
    assert result.stderr.splitlines() == lines


@pytest.mark.parametrize("local_rank, says", [(None, True), ("0", True), ("1", False)])
def test_a_cold_start_is_announced_once_per_node(monkeypatch, capsys, local_rank, says):
    """Under mpirun every rank of a node starts at once on the same empty cache: the line came once per rank."""
    monkeypatch.setattr(backend, "jittor_cache_is_cold", lambda: True)
    if local_rank is None:
        monkeypatch.delenv("OMPI_COMM_WORLD_LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", local_rank)
    backend.say_that_jittor_compiles_itself()
    announced = "Jittor is compiling itself for this machine (first run only, about 3 minutes on 2 cores)...\n"
    assert capsys.readouterr().err == (announced if says else "")


@needs_mpi
def test_mpirun_inside_an_srun_step_runs_as_one_job():
    """OpenMPI's ranks keep the Slurm variables of the step that started mpirun (its daemons' step)."""
    says_world_size = "import os, backend, jittor; os.write(1, f'{jittor.world_size}\\n'.encode())"  # one write
    result = mpirun(2, "-c", says_world_size, env=dict(os.environ, SLURM_STEP_NUM_TASKS="2", SLURM_PROCID="0"))
    assert (result.returncode, result.stdout.split()) == (0, ["2", "2"]), result.stderr[-2000:]
    assert "warning" not in result.stderr


def test_the_memory_limit_is_the_least_of_the_machine_and_the_control_groups(tmp_path):
    machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    proc = tmp_path / "cgroup"

    def limit(groups, files):
        proc.write_text("".join(f"{line}\n" for line in groups))
        for path, text in files.items():
            (tmp_path / "fs" / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "fs" / path).write_text(text)
        return backend.memory_limit(str(proc), str(tmp_path / "fs"))

    assert limit(["0::/"], {"memory.max": "max\n"}) == machine  # cgroup v2, no limit
    assert limit(["0::/job/step"], {"job/memory.max": "4000000000\n", "job/step/memory.max": "max\n"}) == 4e9
    assert limit(["4:memory:/docker/abc", "3:cpuset:/"], {"memory/memory.limit_in_bytes": "3000000000\n"}) == 3e9
    assert backend.memory_limit(str(tmp_path / "none"), str(tmp_path / "fs")) == machine
