"""cuda_setup.py: the CUDA tree and the copy of Jittor that make Jittor 1.3.11 find and accept
today's cuDNN, checked with stand-in toolkits and cuDNNs (files with the real names and
layout) and with Jittor's own search function."""
import importlib.metadata
import os
import subprocess
import sys

import pytest
from jittor.compile_extern import search_file

import cuda_setup
from conftest import REPO

CUDNN9_LIBRARIES = ("libcudnn.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9", "libcudnn_graph.so.9")


def write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def fake_nvcc(folder, release):
    nvcc = os.path.join(folder, "bin", "nvcc")
    write(nvcc, f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    os.chmod(nvcc, 0o755)
    return nvcc


def fake_toolkit(folder, release, libraries=True):
    """A CUDA toolkit as Jittor sees it: bin/nvcc that tells its release, the runtime, a header,
    and (unless told otherwise) the libraries Jittor loads."""
    nvcc = fake_nvcc(folder, release)
    write(os.path.join(folder, "lib64", "libcudart.so"))
    write(os.path.join(folder, "include", "cuda_runtime.h"))
    os.makedirs(os.path.join(folder, "targets", "x86_64-linux", "lib"))
    for name in cuda_setup.JITTOR_LIBRARIES if libraries else ():
        write(os.path.join(folder, "include", f"{name}.h"))
        write(os.path.join(folder, "lib64", f"lib{name}.so"))
    return nvcc


# CUDA 13 from pip (cuda-toolkit 13.0.3): nvidia/cu13 in site-packages, its libraries under versioned names only.
PIP_CUDA13_LIBRARIES = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10",
                        "libcufft.so.12", "libcusparse.so.12", "libnvrtc.so.13")


def fake_pip_toolkit(site):
    folder = os.path.join(site, "nvidia", "cu13")
    nvcc = fake_nvcc(folder, "13.0")
    for name in ("cuda_runtime.h",) + tuple(f"{name}.h" for name in cuda_setup.JITTOR_LIBRARIES):
        write(os.path.join(folder, "include", name))
    for name in PIP_CUDA13_LIBRARIES:
        write(os.path.join(folder, "lib", name))
    write(os.path.join(folder, "nvvm", "bin", "cicc"))
    return nvcc


def fake_cudnn(include, lib, major, libraries):
    write(os.path.join(include, "cudnn_version.h"),
          f"#define CUDNN_MAJOR {major}\n#define CUDNN_MINOR 28\n#define CUDNN_PATCHLEVEL 0\n")
    write(os.path.join(include, "cudnn.h"))
    for name in libraries:
        write(os.path.join(lib, name))


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """No CUDA and no cuDNN outside tmp_path, and our cache in tmp_path."""
    monkeypatch.setattr(cuda_setup, "CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cuda_setup, "JTCUDA", str(tmp_path / "jtcuda"))
    monkeypatch.setattr(cuda_setup, "SYSTEM_FOLDERS", [])
    monkeypatch.setattr(cuda_setup, "USUAL_NVCC", ())
    monkeypatch.setattr(cuda_setup, "pip_cudnn_folder", lambda: None)
    monkeypatch.setattr(cuda_setup, "pip_nccl_folder", lambda: None)
    monkeypatch.setattr(cuda_setup, "pip_toolkit_nvcc", lambda: None)
    monkeypatch.delenv("nvcc_path", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-nvcc"))  # the machine's nvcc, if any, is not on it
    return tmp_path


def pip_cudnn(machine, monkeypatch):
    """A cuDNN 9 installed by pip: nvidia/cudnn/{include,lib} in site-packages."""
    folder = machine / "site-packages" / "nvidia" / "cudnn"
    fake_cudnn(folder / "include", folder / "lib", 9, CUDNN9_LIBRARIES)
    monkeypatch.setattr(cuda_setup, "pip_cudnn_folder", lambda: str(folder))
    return str(folder)


def pip_nccl(machine, monkeypatch):
    """NCCL installed by pip: nvidia/nccl/{include,lib} in site-packages, its library under its versioned name."""
    folder = machine / "site-packages" / "nvidia" / "nccl"
    write(str(folder / "include" / "nccl.h"))
    write(str(folder / "include" / "nccl_device" / "core.h"))
    write(str(folder / "lib" / "libnccl.so.2"))
    monkeypatch.setattr(cuda_setup, "pip_nccl_folder", lambda: str(folder))
    return str(folder)


def test_pip_cudnn_is_found_by_its_import_name(tmp_path, monkeypatch):
    folder = tmp_path / "nvidia" / "cudnn"  # a namespace package, as pip installs it (no __init__.py)
    os.makedirs(folder / "lib")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cuda_setup.pip_cudnn_folder() == str(folder)


def test_pip_nccl_is_found_by_its_import_name_where_it_has_its_header(tmp_path, monkeypatch):
    folder = tmp_path / "nvidia" / "nccl"
    os.makedirs(folder / "lib")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cuda_setup.pip_nccl_folder() is None  # an empty package folder, as a half-removed install leaves
    write(str(folder / "include" / "nccl.h"))
    assert cuda_setup.pip_nccl_folder() == str(folder)


def test_pip_nccl_is_joined_in_the_tree_where_jittor_looks_for_it(machine, monkeypatch):
    """Jittor's setup_nccl takes nccl_include_path and nccl_lib_path as they are (no build from
    source) and loads nccl_lib_path/libnccl.so; pip's NCCL has only libnccl.so.2."""
    nvcc = fake_toolkit(str(machine / "cuda-13.0"), "13.0")
    pip_cudnn(machine, monkeypatch)
    assert cuda_setup.cuda_build_environment(nvcc)[0]["use_nccl"] == "0"  # no NCCL: Jittor's own would not build
    nccl = pip_nccl(machine, monkeypatch)
    environment, problem = cuda_setup.cuda_build_environment(nvcc)
    assert problem is None and "use_nccl" not in environment
    root = os.path.dirname(os.path.dirname(environment["nvcc_path"]))
    assert environment["nccl_include_path"] == os.path.join(root, "include")
    assert environment["nccl_lib_path"] == os.path.join(root, "lib64")
    assert os.path.realpath(os.path.join(root, "include", "nccl.h")) == os.path.join(nccl, "include", "nccl.h")
    assert os.path.isfile(os.path.join(root, "include", "nccl_device", "core.h"))
    assert os.path.realpath(os.path.join(root, "lib64", "libnccl.so")) == os.path.join(nccl, "lib", "libnccl.so.2")
    assert os.path.exists(os.path.join(root, "lib64", "libcudnn.so"))  # cuDNN's tree, NCCL added


def test_pip_cudnn_9_is_found_by_jittor_under_the_names_it_loads(machine, monkeypatch):
    nvcc = fake_toolkit(str(machine / "cuda-13.0"), "13.0")
    cudnn = pip_cudnn(machine, monkeypatch)
    environment, problem = cuda_setup.cuda_build_environment(nvcc)
    assert problem is None
    assert environment["cc_flags"] == cuda_setup.CUDA13_FLAGS and environment["use_cutt"] == "0"
    assert environment["cache_name"] == "cuda13.0"
    root = os.path.dirname(os.path.dirname(environment["nvcc_path"]))
    assert root.startswith(cuda_setup.CACHE)
    # What Jittor's compile_extern.setup_cuda_lib looks for, where it looks (cuda_include, cuda_lib from nvcc).
    include, lib = os.path.join(root, "include"), os.path.join(root, "lib64")
    assert os.path.realpath(search_file([include], "cudnn.h")) == os.path.join(cudnn, "include", "cudnn.h")
    assert os.path.realpath(search_file([lib], "libcudnn.so")) == os.path.join(cudnn, "lib", "libcudnn.so.9")
    for old_name, new_name in cuda_setup.CUDNN8_NAMES.items():
        assert os.path.realpath(search_file([lib], old_name)) == os.path.join(cudnn, "lib", new_name)
    # cuDNN 9 loads its other libraries by their own names from its folder ($ORIGIN): the tree has them.
    graph = "libcudnn_graph.so.9"
    assert os.path.realpath(os.path.join(lib, graph)) == os.path.join(cudnn, "lib", graph)
    # The toolkit stays reachable: the runtime Jittor loads, the headers, its other folders, and nvcc itself.
    assert os.path.realpath(os.path.join(lib, "libcudart.so")) == str(machine / "cuda-13.0" / "lib64" / "libcudart.so")
    assert os.path.exists(os.path.join(include, "cuda_runtime.h"))
    assert os.path.isdir(os.path.join(root, "targets", "x86_64-linux", "lib"))
    version = subprocess.run([environment["nvcc_path"], "--version"], capture_output=True, text=True).stdout
    assert "release 13.0" in version
    assert cuda_setup.cuda_build_environment(nvcc)[0] == environment  # made once, then reused


def test_cuda_builds_import_a_copy_of_jittor_without_cudnn_rnn_ops_and_with_float_accumulation(machine, monkeypatch):
    nvcc = fake_toolkit(str(machine / "cuda-13.0"), "13.0")
    pip_cudnn(machine, monkeypatch)
    environment, _ = cuda_setup.cuda_build_environment(nvcc)
    copy = os.path.join(environment["PYTHONPATH"].split(os.pathsep)[0], "jittor")
    cudnn_sources = []
    for folder, _, files in os.walk(os.path.join(copy, "extern", "cuda", "cudnn")):
        cudnn_sources += files
    assert not [name for name in cudnn_sources if "rnn" in name]
    convolutions = [name for name in cudnn_sources if name.startswith("cudnn_conv") and name.endswith("_op.cc")]
    assert len(convolutions) == 6  # forward, backward to x and to w; 2-D and 3-D
    original = str(importlib.metadata.distribution("jittor").locate_file("jittor"))
    for name in convolutions:
        with open(os.path.join(original, "extern", "cuda", "cudnn", "ops", name)) as f:
            before = f.read()
        with open(os.path.join(copy, "extern", "cuda", "cudnn", "ops", name)) as f:
            after = f.read()
        assert before.count(cuda_setup.HALF_ACCUMULATION) == 1, name  # the one place that sets the compute type
        assert after == before.replace(cuda_setup.HALF_ACCUMULATION, cuda_setup.FLOAT_ACCUMULATION)
    find_jittor = "import importlib.util; print(importlib.util.find_spec('jittor').origin)"
    where = subprocess.run([sys.executable, "-c", find_jittor], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=environment["PYTHONPATH"]))
    assert where.stdout.strip() == os.path.join(copy, "__init__.py")


def test_the_graph_api_choice_gets_its_own_copy_and_cache_with_its_convolutions(machine, monkeypatch):
    nvcc = fake_toolkit(str(machine / "cuda-13.0"), "13.0")
    pip_cudnn(machine, monkeypatch)
    legacy, _ = cuda_setup.cuda_build_environment(nvcc)
    monkeypatch.setenv("MCCNET_CONV_API", "graph")
    graph, problem = cuda_setup.cuda_build_environment(nvcc)
    assert problem is None and cuda_setup.chosen_conv_api() == "graph"
    assert graph["cache_name"] == "cuda13.0-graph" and legacy["cache_name"] == "cuda13.0"
    copy, legacy_copy = (environment["PYTHONPATH"].split(os.pathsep)[0] for environment in (graph, legacy))
    assert copy != legacy_copy and copy == cuda_setup.adapted_jittor("graph")
    cudnn = os.path.join(copy, "jittor", "extern", "cuda", "cudnn")
    with open(cuda_setup.GRAPH_CONV) as ours, open(os.path.join(cudnn, "inc", "cudnn_graph_conv.h")) as copied:
        assert copied.read() == ours.read()
    for name, operation in cuda_setup.GRAPH_CONV_OPS.items():
        with open(os.path.join(cudnn, "ops", name)) as f:
            source = f.read()
        assert '#include "cudnn_wrapper.h"\n#include "cudnn_graph_conv.h"\n' in source
        jit_run = source[source.index("::jit_run() {"):]
        assert jit_run.count("graph_convolution(") == 1
        assert f"CUDNN_BACKEND_OPERATION_CONVOLUTION_{operation}_DESCRIPTOR" in jit_run
        assert "cudnnFind" not in jit_run and "cudnnConvolution" not in jit_run  # no legacy call left
    # The 3-D convolutions keep the legacy API (MCCNet has none), with float accumulation.
    with open(os.path.join(cudnn, "ops", "cudnn_conv3d_op.cc")) as f:
        assert cuda_setup.FLOAT_ACCUMULATION in f.read()


def test_an_unknown_conv_api_is_a_reason(machine, monkeypatch):
    nvcc = fake_toolkit(str(machine / "cuda-13.0"), "13.0")
    pip_cudnn(machine, monkeypatch)
    monkeypatch.setenv("MCCNET_CONV_API", "fastest")
    assert cuda_setup.cuda_build_environment(nvcc) == (
        None, "MCCNET_CONV_API must be one of legacy, graph, not 'fastest'")


def test_pip_cudnn_replaces_a_cudnn_inside_the_toolkit(machine, monkeypatch):
    home = str(machine / "cuda-13.0")
    nvcc = fake_toolkit(home, "13.0")
    fake_cudnn(os.path.join(home, "include"), os.path.join(home, "lib64"), 8, ["libcudnn.so.8", "libcudnn.so"])
    cudnn = pip_cudnn(machine, monkeypatch)
    environment, _ = cuda_setup.cuda_build_environment(nvcc)
    root = os.path.dirname(os.path.dirname(environment["nvcc_path"]))
    header = os.path.join("include", "cudnn_version.h")
    assert os.path.realpath(os.path.join(root, header)) == os.path.join(cudnn, header)
    assert os.path.realpath(os.path.join(root, "lib64", "libcudnn.so")) == os.path.join(cudnn, "lib", "libcudnn.so.9")
    assert not os.path.exists(os.path.join(root, "lib64", "libcudnn.so.8"))


def test_cuda_12_with_a_cudnn_8_that_jittor_finds_uses_it_where_it_is(machine, monkeypatch):
    home = str(machine / "cuda-12.2")
    nvcc = fake_toolkit(home, "12.2")
    fake_cudnn(os.path.join(home, "include"), os.path.join(home, "lib64"), 8, ["libcudnn.so.8", "libcudnn.so"])
    environment, problem = cuda_setup.cuda_build_environment(nvcc)
    assert problem is None
    assert environment.pop("PYTHONPATH").split(os.pathsep)[0] == cuda_setup.adapted_jittor()
    # cuTT and CUTLASS off: Jittor would download them from GitHub at its first start.
    assert environment == {"nvcc_path": nvcc, "cache_name": "cuda12.2", "use_cutt": "0", "use_cutlass": "0",
                           "use_nccl": "0"}
    assert os.listdir(cuda_setup.CACHE) == [os.path.basename(cuda_setup.adapted_jittor())]  # no CUDA tree
    # With pip's NCCL, a tree for it, where that cuDNN stays the one Jittor finds.
    pip_nccl(machine, monkeypatch)
    environment, _ = cuda_setup.cuda_build_environment(nvcc)
    root = os.path.dirname(os.path.dirname(environment["nvcc_path"]))
    assert root.startswith(cuda_setup.CACHE) and environment["nccl_lib_path"] == os.path.join(root, "lib64")
    library = os.path.join("lib64", "libcudnn.so")
    assert os.path.realpath(os.path.join(root, library)).startswith(os.path.join(home, library))


def test_jittors_own_cuda_comes_first_as_in_jittor(machine, monkeypatch):
    nvcc = fake_toolkit(str(machine / "jtcuda" / "cuda12.2_cudnn8_linux"), "12.2")
    monkeypatch.setenv("PATH", os.path.dirname(fake_toolkit(str(machine / "cuda-13.0"), "13.0")))
    assert cuda_setup.find_nvcc() == nvcc
    monkeypatch.setenv("nvcc_path", "/opt/mine/bin/nvcc")
    assert cuda_setup.find_nvcc() == "/opt/mine/bin/nvcc"


def test_pip_cuda_13_is_joined_with_pip_cudnn_under_the_names_jittor_loads(machine, monkeypatch):
    nvcc = fake_pip_toolkit(str(machine / "site-packages"))
    monkeypatch.setattr(cuda_setup, "pip_toolkit_nvcc", lambda: nvcc)
    cudnn = pip_cudnn(machine, monkeypatch)
    assert cuda_setup.find_nvcc() == nvcc
    environment, problem = cuda_setup.cuda_build_environment(nvcc)
    assert problem is None
    root = os.path.dirname(os.path.dirname(environment["nvcc_path"]))
    include, lib = os.path.join(root, "include"), os.path.join(root, "lib64")
    pip_lib = os.path.join(os.path.dirname(os.path.dirname(nvcc)), "lib")
    # Jittor loads cuda_lib/libcudart.so itself, and searches the others as setup_cuda_lib does.
    assert os.path.realpath(os.path.join(lib, "libcudart.so")) == os.path.join(pip_lib, "libcudart.so.13")
    for name in cuda_setup.JITTOR_LIBRARIES:
        assert os.path.exists(search_file([include], f"{name}.h"))
        assert os.path.realpath(search_file([lib], f"lib{name}.so")).startswith(os.path.join(pip_lib, f"lib{name}.so."))
    cublas = search_file([lib], "libcublasLt.so", (13, 0, 88))
    assert os.path.realpath(cublas) == os.path.join(pip_lib, "libcublasLt.so.13")
    assert os.path.realpath(search_file([lib], "libcudnn.so")) == os.path.join(cudnn, "lib", "libcudnn.so.9")
    assert os.path.exists(os.path.join(lib, "libnvrtc.so.13"))  # cuDNN 9 opens NVRTC from its own folder
    assert os.path.isdir(os.path.join(root, "nvvm", "bin"))


def test_an_incomplete_toolkit_says_what_it_lacks_and_a_complete_one_comes_first(machine, monkeypatch):
    incomplete = fake_toolkit(str(machine / "cuda-13.0"), "13.0", libraries=False)
    monkeypatch.setenv("PATH", os.path.dirname(incomplete))
    pip_cudnn(machine, monkeypatch)
    assert cuda_setup.find_nvcc() == incomplete
    assert cuda_setup.cuda_build_environment(incomplete) == (None, (
        f"the CUDA 13.0 toolkit in {machine / 'cuda-13.0'} lacks cuBLAS, cuRAND, cuFFT and cuSPARSE, which "
        f"Jittor's CUDA build loads: {cuda_setup.TOOLKIT_ADVICE}"))
    # A header without its library is not enough either, nor a library without header.
    home = machine / "cuda-13.0"
    write(os.path.join(home, "include", "cublas.h"))
    write(os.path.join(home, "lib64", "libcurand.so.10"))
    write(os.path.join(home, "lib64", "libcufft.so"))
    write(os.path.join(home, "targets", "x86_64-linux", "include", "cufft.h"))
    assert cuda_setup.libraries_lacking(incomplete) == ["cuBLAS", "cuRAND", "cuSPARSE"]
    pip_nvcc = fake_pip_toolkit(str(machine / "site-packages"))
    monkeypatch.setattr(cuda_setup, "pip_toolkit_nvcc", lambda: pip_nvcc)
    assert cuda_setup.find_nvcc() == pip_nvcc


def test_a_gpu_without_toolkit_is_a_reason(machine):
    reason = (None, f"{cuda_setup.NO_TOOLKIT}: {cuda_setup.TOOLKIT_ADVICE}")
    assert cuda_setup.cuda_build_environment(None) == reason
    assert cuda_setup.cuda_build_environment(str(machine / "nowhere" / "bin" / "nvcc")) == reason


def test_no_cudnn_is_a_reason_and_not_a_compile_error(machine):
    nvcc = fake_toolkit(str(machine / "cuda-13.0"), "13.0")
    assert cuda_setup.cuda_build_environment(nvcc) == (
        None, "no cuDNN found for CUDA 13.0: `make setup` on this machine installs it (or `make setup CUDA=13` where "
              "the package index is reachable)")


def pins(requirements):
    with open(os.path.join(REPO, requirements)) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("driver_line, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024", 535),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  "
     "(dvs-builder@U16-I3-B03-4-3)  Tue Sep 23 09:55:41 UTC 2025", 580),
    ("something else", 0)])
def test_the_driver_version_is_read_from_the_kernel_module(tmp_path, monkeypatch, driver_line, version):
    write(str(tmp_path / "version"), driver_line + "\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    monkeypatch.setattr(cuda_setup, "DRIVER_VERSION", str(tmp_path / "version"))
    assert cuda_setup.driver_version() == version
    monkeypatch.setattr(cuda_setup, "DRIVER_VERSION", str(tmp_path / "absent"))
    assert cuda_setup.driver_version() == 0


def test_make_setup_installs_what_the_gpu_needs(machine, monkeypatch, capsys):
    monkeypatch.setattr(cuda_setup, "gpu_present", lambda: True)
    monkeypatch.setattr(cuda_setup, "driver_version", lambda: 580)
    for release in ("13.0", "12.4"):  # a toolkit with all Jittor needs: the cuDNN for it
        monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: fake_toolkit(str(machine / release), release))
        major = release.split(".")[0]
        assert cuda_setup.requirements_files() == [f"requirements-cuda{major}.txt"]
        expected = [f"nvidia-cudnn-cu{major}==9.20.0.48", f"nvidia-nccl-cu{major}==2.29.7"]
        assert pins(f"requirements-cuda{major}.txt") == expected
    assert pins(cuda_setup.PIP_TOOLKIT) == [
        "cuda-toolkit[nvcc,cudart,crt,nvvm,cccl,cublas,curand,cufft,cusparse]==13.0.3"]
    both = ["requirements-cuda13.txt", cuda_setup.PIP_TOOLKIT]
    # No toolkit, or one without Jittor's libraries, and a driver for CUDA 13: CUDA 13 from pip too.
    monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: None)
    assert cuda_setup.requirements_files() == both
    incomplete = fake_toolkit(str(machine / "12.8"), "12.8", libraries=False)
    monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: incomplete)
    assert cuda_setup.requirements_files() == both
    # pip's CUDA 13 in use: kept at its pin.
    pip_nvcc = fake_pip_toolkit(str(machine / "site-packages"))
    monkeypatch.setattr(cuda_setup, "pip_toolkit_nvcc", lambda: pip_nvcc)
    monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: pip_nvcc)
    assert cuda_setup.requirements_files() == both
    assert capsys.readouterr().err == ""
    # An older driver: nothing pip has would run.
    monkeypatch.setattr(cuda_setup, "driver_version", lambda: 535)
    monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: incomplete)
    assert cuda_setup.requirements_files() == []
    assert capsys.readouterr().err == (
        f"A GPU but the CUDA 12.8 toolkit in {machine / '12.8'} lacks cuBLAS, cuRAND, cuFFT and cuSPARSE, which "
        f"Jittor's CUDA build loads, and its driver (535) is older than the 580 that CUDA 13 from pip needs: "
        f"{cuda_setup.OTHER_TOOLKITS}\n")
    monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: None)
    assert cuda_setup.requirements_files() == []
    assert capsys.readouterr().err.startswith(f"A GPU but {cuda_setup.NO_TOOLKIT}, and its driver (535) is older")
    monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: fake_toolkit(str(machine / "11.8"), "11.8"))
    assert cuda_setup.requirements_files() == []
    assert capsys.readouterr().err == ("CUDA 11.8: no cuDNN is installed for it (only for CUDA 12 and 13); "
                                       "Jittor looks for its own\n")
    monkeypatch.setattr(cuda_setup, "gpu_present", lambda: False)
    assert cuda_setup.requirements_files() == []


def test_make_setup_cuda_13_installs_for_gpu_machines_from_one_without_a_gpu(machine, monkeypatch):
    """A cluster's login node reaches the package index, its GPU nodes may not: `make setup CUDA=13` there."""
    monkeypatch.setattr(cuda_setup, "gpu_present", lambda: False)
    both = ["requirements-cuda13.txt", cuda_setup.PIP_TOOLKIT]
    for nvcc in (None, fake_toolkit(str(machine / "13.0-incomplete"), "13.0", libraries=False),
                 fake_toolkit(str(machine / "12.4"), "12.4")):
        monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: nvcc)
        assert cuda_setup.requirements_files(13) == both  # no CUDA 13 toolkit with all Jittor needs: pip's
        assert cuda_setup.requirements_files(12) == ["requirements-cuda12.txt"]
    complete = fake_toolkit(str(machine / "13.0"), "13.0")
    monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: complete)
    assert cuda_setup.requirements_files(13) == ["requirements-cuda13.txt"]
    pip_nvcc = fake_pip_toolkit(str(machine / "site-packages"))
    monkeypatch.setattr(cuda_setup, "pip_toolkit_nvcc", lambda: pip_nvcc)
    monkeypatch.setattr(cuda_setup, "find_nvcc", lambda: pip_nvcc)
    assert cuda_setup.requirements_files(13) == both  # pip's CUDA 13 in use: kept at its pin


def test_our_cache_lies_in_jittors_own_cache_folder_wherever_jittor_keeps_it(tmp_path, monkeypatch):
    """JITTOR_HOME moves Jittor's cache (a cluster's small home quota); Jittor then records it and keeps using it
    without the variable. Ours (the CUDA tree, the adapted copy, the CUDA check's verdict) goes along."""
    home, elsewhere = tmp_path / "home", tmp_path / "scratch"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("JITTOR_HOME", raising=False)

    def jittors():
        script = "import os, jittor_utils; print(os.path.join(jittor_utils.home(), '.cache', 'jittor'))"
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
        return result.stdout.strip()

    assert cuda_setup.jittor_cache_root() == jittors() == str(home / ".cache" / "jittor")
    monkeypatch.setenv("JITTOR_HOME", str(elsewhere))
    assert cuda_setup.jittor_cache_root() == jittors() == str(elsewhere / ".cache" / "jittor")
    monkeypatch.delenv("JITTOR_HOME")
    assert cuda_setup.jittor_cache_root() == jittors() == str(elsewhere / ".cache" / "jittor")  # recorded


def test_the_script_refuses_another_cuda_in_one_line():
    result = subprocess.run([sys.executable, "cuda_setup.py", "--cuda", "11"], cwd=REPO, capture_output=True,
                            text=True)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: argument --cuda: invalid choice: 11 (choose from 12, 13) (see --help)\n"


def test_the_script_prints_nothing_on_a_machine_without_gpu():
    if cuda_setup.gpu_present():
        pytest.skip("this machine has a GPU")
    result = subprocess.run([sys.executable, "cuda_setup.py"], cwd=REPO, capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
