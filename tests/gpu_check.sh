#!/bin/bash
# The CUDA path checked on a lent GPU machine with no network (steps: setup, parity, bench, mpi,
# oom, graph, profile; all by default, in that order of importance): Jittor's CUDA build set up by
# cuda_setup.py alone (no file outside Jittor's cache touched), the parity tests with Jittor
# on the GPU (the oracle stays on the CPU, in float64) including --half, then the benchmark;
# `graph` does the three with Jittor's convolutions on cuDNN's graph API (MCCNET_CONV_API=graph,
# the experiment that may close the gap to PyTorch with TF32; a copy and cache of its own, so it
# compiles again); `profile` shows where the time goes (each convolution alone in both frameworks,
# Jittor's time by kind of op) with TF32 allowed, without it, with Jittor's use_tensorcore flag,
# with PyTorch on cuDNN's legacy API, and with Jittor on the graph API; `mpi` (where OpenMPI is
# installed) averages on the GPU under mpirun through pip's NCCL (PyTorch's, already there); `oom`
# runs the scripts on a GPU whose memory another process holds but for 5 GB: a 4096×3072 picture
# then a small one (expected: the first skipped in one line, the second made), and a training step too
# large (expected: one line), Jittor's real error where the tests fake it (JITTOR_GPU_MEMORY_ERROR).
# A lent machine goes back after ~30 s idle and the next call starts bare, compiling Jittor again:
# run `setup parity bench mpi oom`, then `graph`, then `profile` as device time allows, in `run` calls
# back to back (timeout_s 600 each). The log ($OUT/gpu_check.log) is written as it goes, so a call
# cut short still returns what finished.
# Its Python (3.12, PyTorch with CUDA, cuDNN 9 from pip) lacks the rest, and it reaches no
# package index: the wheels travel in .whl/ (git-ignored; `run` with carry [".whl"], 61 MiB of
# the 64 allowed), made by `bash tests/gpu_check.sh wheels` on a machine with the index, in seconds
# (tensorboardX, which bench.py needs through train.py, is not on the GPU machine; protobuf is,
# perhaps newer than the one its generated code accepts).
# jittor-offline (27 MB, oneDNN for Jittor's CPU convolutions) does not fit: use_mkl=0, the
# tests' Jittor runs on the GPU. Nor does pillow-heif (5.4 MB, HEIC photos), which transformer.py
# imports: an empty stand-in takes its place (no check here reads a HEIC). cuDNN is the one pip
# installed next to PyTorch, found the way `make setup`'s would be (cuda_setup.pip_cudnn_folder).
set -u
if [ "${1:-}" = wheels ]; then
    rm -rf .whl
    python3 -m pip wheel -q --no-deps -w .whl jittor==1.3.11.0 &&
    python3 -m pip download -q --python-version 3.12 --only-binary :all: --no-deps -d .whl numpy==1.26.4 \
        pillow==11.3.0 av==18.1.0 tqdm==4.67.1 pytest==8.4.2 pluggy iniconfig tensorboardX==2.6.2.2 \
        protobuf==4.25.8 || exit 1
    du -sh .whl
    exit
fi
LOG=${OUT:-/tmp}/gpu_check.log
exec > >(tee -a "$LOG") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/site/pillow_heif && touch /tmp/site/pillow_heif/__init__.py /tmp/site/pillow_heif/HeifImagePlugin.py
export PYTHONPATH=/tmp/site
export use_mpi=0  # one GPU: no MPI (the `mpi` step turns it on)
export use_mkl=0  # no jittor-offline here (above), and oneDNN would be a download
# Jittor's CUDA build set up and probed as a user's first start does it (compiling the first time);
# where it fails, the probe again, showing its whole error, and the check stops.
probe() {
    time timeout 540 python3 - <<'PY'
import os, subprocess, sys
import backend, cuda_setup, jittor
print('cuDNN', cuda_setup.find_cudnn(cuda_setup.find_nvcc()))
print('jittor', jittor.__file__, 'has_cuda', jittor.has_cuda, 'problem', backend.cuda_problem)
environment, _ = cuda_setup.cuda_build_environment(cuda_setup.find_nvcc())
if backend.cuda_problem and environment:  # the build was tried and failed: its whole error
    child = subprocess.run([sys.executable, "-c", backend.PROBE], env=dict(os.environ, **environment),
                           capture_output=True, text=True)
    sys.exit(child.stdout[-3000:] + child.stderr[-6000:])
sys.exit(backend.cuda_problem or (None if jittor.has_cuda else "Jittor did not even try its CUDA build here"))
PY
}
for step in ${*:-setup parity bench mpi oom graph profile}; do
    case $step in
    setup)
        nvidia-smi -L; command -v nvcc g++; nvcc --version | tail -1
        echo "the GPUs the driver gives this process, then none with CUDA_VISIBLE_DEVICES='' (expected: [])"
        python3 -c 'import cuda_setup; print(cuda_setup.visible_gpus())'
        CUDA_VISIBLE_DEVICES= python3 -c 'import cuda_setup; print(cuda_setup.visible_gpus())'
        echo "set-up and probe (compiles Jittor's CUDA build the first time)"
        probe || exit 1 ;;
    parity)
        # Jittor's cuDNN convolutions run in cuDNN's default math, which allows TF32 on Ampere and
        # newer GPUs, and Jittor has no switch for it: exactness needs float32 in both frameworks.
        echo "parity, NVIDIA_TF32_OVERRIDE=0 (no TF32 in cuDNN or cuBLAS)"
        # -rP: the float16 test prints its figures (PSNR, share within 2 grey levels) when it passes.
        NVIDIA_TF32_OVERRIDE=0 timeout 540 python3 -m pytest -q -rP -p no:cacheprovider tests/test_parity.py \
            --use_cuda 1 ;;
    bench)
        echo "speed, both frameworks' defaults (TF32 allowed): what a user gets"
        timeout 540 python3 bench.py --device cuda --repeat 3 ;;
    mpi)
        # Under mpirun: each rank's CUDA check stays out of the MPI job, and Jittor averages on the GPU
        # through pip's NCCL (1 rank; 2 ranks on one GPU: Jittor's NCCL steps aside, MPI through the host).
        if ! command -v mpirun > /dev/null; then echo "no mpirun on this machine: step skipped"; continue; fi
        code='import backend, jittor as jt
backend.use_device("1")
total = jt.array([float(jt.rank + 1)]).mpi_all_reduce("add").item()
print("rank", jt.rank, "of", jt.world_size, "sum", total, "NCCL", jt.compile_extern.nccl_ops is not None)'
        for ranks in 1 2; do
            use_mpi=1 timeout 300 mpirun --allow-run-as-root --oversubscribe -np $ranks python3 -c "$code"
        done
        echo "without NCCL (use_nccl=0): MPI through the host, and the warning"
        use_mpi=1 use_nccl=0 timeout 300 mpirun --allow-run-as-root -np 1 python3 -c "$code" ;;
    oom)
        echo "a GPU short of memory: another process holds all of it but 5 GB"
        rm -rf /tmp/oom && mkdir -p /tmp/oom
        timeout 300 python3 -c 'import time, torch
hold = torch.empty(torch.cuda.mem_get_info()[0] - 5 * 2 ** 30, dtype=torch.uint8, device="cuda")
open("/tmp/oom/holding", "w").close()
time.sleep(280)' &
        holder=$!
        python3 -c 'import sys; sys.path[:0] = ["tests"]
import torch, torch_mccnet
from PIL import Image
for module, name in zip(torch_mccnet.seeded_weights(), ("vgg", "decoder", "mcc")):
    torch.save(module.state_dict(), f"/tmp/oom/{name}.pth")
Image.open("input/content/coffee.jpg").convert("RGB").resize((4096, 3072)).save("/tmp/oom/large.png")
Image.open("input/content/coffee.jpg").convert("RGB").resize((256, 256)).save("/tmp/oom/small.png")'
        for _ in $(seq 60); do [ -e /tmp/oom/holding ] && break; sleep 1; done
        [ -e /tmp/oom/holding ] || { echo "PyTorch could not take the GPU's memory: step skipped"; continue; }
        timeout 200 python3 test_video.py --use_cuda 1 --content /tmp/oom/large.png,/tmp/oom/small.png \
            --style input/style/strokes.jpg --content_size 0 --output /tmp/oom/out --vgg /tmp/oom/vgg.pth \
            --decoder /tmp/oom/decoder.pth --transform /tmp/oom/mcc.pth
        echo "test_video.py exit $? (expected 1); made: $(ls /tmp/oom/out)"
        timeout 200 python3 train.py --use_cuda 1 --content_dir input/content --style_dir input/style \
            --vgg /tmp/oom/vgg.pth --batch_size 32 --crop_size 256 --max_iter 1 --n_threads 1 \
            --save_dir /tmp/oom/m --log_dir /tmp/oom/l
        echo "train.py exit $? (expected 1)"
        kill $holder ;;
    graph)
        echo "cuDNN's graph API for Jittor's convolutions: set-up (compiles), parity, speed"
        MCCNET_CONV_API=graph probe || exit 1
        # The float64 proofs run on the CPU whatever the API: only the float32 and float16 checks.
        MCCNET_CONV_API=graph NVIDIA_TF32_OVERRIDE=0 timeout 300 python3 -m pytest -q -rP -p no:cacheprovider \
            tests/test_parity.py --use_cuda 1 -k "float32 or half"
        MCCNET_CONV_API=graph timeout 400 python3 bench.py --device cuda --repeat 3 ;;
    profile)
        echo "profile, both frameworks' defaults (TF32 allowed)"
        timeout 300 python3 bench.py --device cuda --profile
        echo "profile, NVIDIA_TF32_OVERRIDE=0 (float32)"
        NVIDIA_TF32_OVERRIDE=0 timeout 300 python3 bench.py --device cuda --profile
        echo "profile, use_tensorcore=1 (Jittor asks cuDNN for tensor-op math on every convolution)"
        use_tensorcore=1 timeout 300 python3 bench.py --device cuda --profile
        # Jittor calls cuDNN's legacy API; PyTorch, the v8 (graph) API, unless told otherwise: if PyTorch's
        # convolutions slow to Jittor's with the legacy API, that API is the limit.
        echo "profile, TORCH_CUDNN_V8_API_DISABLED=1 (PyTorch on cuDNN's legacy API too)"
        TORCH_CUDNN_V8_API_DISABLED=1 timeout 300 python3 bench.py --device cuda --profile
        echo "profile, MCCNET_CONV_API=graph (Jittor on cuDNN's graph API too)"
        MCCNET_CONV_API=graph timeout 300 python3 bench.py --device cuda --profile
        # cuDNN's API log names the algorithm and math type of every convolution each framework runs
        # (logging slows the calls: a separate run, timings not to be read).
        api_log=${OUT:-/tmp}/cudnn_api.log
        echo "cuDNN's API log of one profile run, TF32 allowed: $api_log; the legacy algorithms called:"
        CUDNN_LOGLEVEL_DBG=3 CUDNN_LOGDEST_DBG=$api_log timeout 300 python3 bench.py --device cuda --profile \
            --repeat 1 > /dev/null
        grep -o "val=CUDNN_CONVOLUTION_FWD_ALGO_[A-Z_]*\|val=CUDNN_[A-Z_]*_MATH" "$api_log" | sort | uniq -c ;;
    *) echo "unknown step $step (setup, parity, bench, mpi, oom, graph, profile)"; exit 1 ;;
    esac
done
