#!/bin/bash
# The CUDA path checked on a lent GPU machine with no network: the parity tests with Jittor
# on the GPU (the oracle stays on the CPU, in float64), then the benchmark on the GPU.
# Its Python (3.12, numpy 2, PyTorch with CUDA) lacks the rest: the wheels travel in .whl/
# (`pip download --python-version 3.12 --only-binary :all: -d .whl` of requirements.txt
# without torch, plus pytest). The image has CUDA 13 and cuDNN 9,
# newer than Jittor 1.3.11 knows; the adaptations below are what that takes, each
# printed so that the log says what was changed.
set -u
LOG=${OUT:-/tmp}/gpu_check.log
exec > >(tee "$LOG") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
JT=/tmp/site/jittor
nvidia-smi -L; command -v nvcc g++ mpicc; nvcc --version | tail -1
python3 -c "import sysconfig, os; p = sysconfig.get_paths()['include']; print(p, os.path.exists(p + '/Python.h'))"

echo "adaptation 1: CUDA 13 removed cudaDeviceProp.clockRate and .computeMode (read by helper_cuda.h)"
sed -i "s/deviceProp\.computeMode/cudaComputeModeDefault/g; s/deviceProp\.clockRate/1/g" \
    $JT/extern/cuda/inc/helper_cuda.h
echo "adaptation 2: cuDNN 9 dropped the legacy RNN API: Jittor's cuDNN RNN ops and header removed"
rm -f $JT/extern/cuda/cudnn/ops/cudnn_rnn* $JT/extern/cuda/cudnn/src/cudnn_rnn* $JT/extern/cuda/cudnn/inc/cudnn_rnn*
echo "adaptation 3: cuDNN 9's libraries under the cuDNN 8 names Jittor looks for"
CUDNN=$(python3 -c "import nvidia.cudnn as m; print(m.__path__[0])")
ln -sf $CUDNN/include/* /usr/include/
LIBDIR=/usr/lib/x86_64-linux-gnu
ln -sf $CUDNN/lib/libcudnn.so.9 $LIBDIR/libcudnn.so
for name in ops_infer:ops ops_train:ops cnn_infer:cnn cnn_train:cnn; do
    ln -sf $CUDNN/lib/libcudnn_${name#*:}.so.9 $LIBDIR/libcudnn_${name%:*}.so
done
export LD_LIBRARY_PATH=$CUDNN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "adaptation 4: cuTT (Jittor's fast transpose) reads removed cudaDeviceProp fields too: off"
export use_cutt=0
echo "adaptation 5: CUTLASS (used by Jittor's attention ops only) is a download: off"
export use_cutlass=0
export use_mpi=0 use_nccl=0  # one GPU: no MPI, and no NCCL build from source (minutes)

probe() { log_silent=0 timeout 420 python3 -c "import backend, jittor as jt; print('jittor has_cuda', jt.has_cuda)"; }
probe || exit 1
# Jittor's cuDNN convolutions run in cuDNN's default math, which allows TF32 on Ampere and
# newer GPUs, and Jittor has no switch for it: exactness needs float32 in both frameworks.
echo "parity, NVIDIA_TF32_OVERRIDE=0 (no TF32 in cuDNN or cuBLAS)"
NVIDIA_TF32_OVERRIDE=0 timeout 420 python3 -m pytest -q -p no:cacheprovider tests/test_parity.py --use_cuda 1
echo "speed, both frameworks' defaults (TF32 allowed): what a user gets"
timeout 420 python3 bench.py --device cuda
