#!/bin/bash
# The CUDA path checked on a lent GPU machine with no network: Jittor's CUDA build set up by
# cuda_setup.py alone (no file outside Jittor's cache touched), the parity tests with Jittor
# on the GPU (the oracle stays on the CPU, in float64) including --half, then the benchmark.
# Its Python (3.12, PyTorch with CUDA, cuDNN 9 from pip) lacks the rest: the wheels travel in
# .whl/ (`pip download --python-version 3.12 --only-binary :all: -d .whl` of requirements.txt
# without torch, plus pytest). cuDNN is the one pip installed next to PyTorch, found the way
# `make setup`'s would be (cuda_setup.pip_cudnn_folder).
set -u
LOG=${OUT:-/tmp}/gpu_check.log
exec > >(tee "$LOG") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
export use_mpi=0 use_nccl=0  # one GPU: no MPI, and no NCCL build from source (minutes)
nvidia-smi -L; command -v nvcc g++; nvcc --version | tail -1

echo "set-up and probe (compiles Jittor's CUDA build the first time)"
time timeout 540 python3 -c "import backend, cuda_setup, jittor
print('cuDNN', cuda_setup.find_cudnn(cuda_setup.find_nvcc()))
print('jittor', jittor.__file__, 'has_cuda', jittor.has_cuda, 'problem', backend.cuda_problem)" || exit 1
# Jittor's cuDNN convolutions run in cuDNN's default math, which allows TF32 on Ampere and
# newer GPUs, and Jittor has no switch for it: exactness needs float32 in both frameworks.
echo "parity, NVIDIA_TF32_OVERRIDE=0 (no TF32 in cuDNN or cuBLAS)"
NVIDIA_TF32_OVERRIDE=0 timeout 540 python3 -m pytest -q -p no:cacheprovider tests/test_parity.py --use_cuda 1
echo "speed, both frameworks' defaults (TF32 allowed): what a user gets"
timeout 540 python3 bench.py --device cuda
