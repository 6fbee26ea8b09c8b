"""The encoder's and decoder's layers where Jittor's CPU kernels are slow: reflection padding and max pooling as
multi-threaded C++, and 3×3 convolutions on AVX-512 CPUs routed to faster oneDNN kernels (`Conv3x3`).

Jittor generates its CPU kernels for padding and pooling (an index expression per pixel) without OpenMP,
so they run on one core while the convolutions use all of them: 7–12% of a training
step's time on two cores, a growing share on more. Here each is a loop over rows that
OpenMP shares among the cores, 2–3× faster on two cores, with the same values (the
padding's gradient may round its sums of up to four terms in another order). On a GPU,
Jittor's own CUDA kernels run.
"""
import functools
import os

import backend  # noqa: F401  (prepares Jittor's environment before its first import)
import jittor as jt
from jittor import nn

MKL_OPS = jt.compile_extern.mkl_ops  # Jittor's oneDNN operators (None where Jittor runs without oneDNN)
AVX512_CORE = {"avx512f", "avx512bw", "avx512vl", "avx512dq"}
BACKWARD_DATA_MAX_CHANNELS = 128  # see Conv3x3

# One pixel of reflection padding: row and column -1 take 1, H takes H - 2.
PAD_FORWARD = """
    const int planes = in0_shape0 * in0_shape1, H = in0_shape2, W = in0_shape3, OH = H + 2, OW = W + 2;
    #pragma omp parallel for
    for (int row = 0; row < planes * OH; row++) {
        const int plane = row / OH, oy = row % OH;
        const int y = oy == 0 ? 1 : oy == OH - 1 ? H - 2 : oy - 1;
        const in0_type* source = in0_p + ((size_t)plane * H + y) * W;
        out_type* target = out_p + (size_t)row * OW;
        target[0] = source[1];
        for (int x = 0; x < W; x++) target[x + 1] = source[x];
        target[OW - 1] = source[W - 2];
    }
"""
# Each input pixel's gradient: the sum of the gradients of the padded positions that copy it
# (up to four: the second and second-to-last rows and columns are copied into the padding too).
PAD_BACKWARD = """
    const int planes = in0_shape0 * in0_shape1, H = in0_shape2, W = in0_shape3, OH = H + 2, OW = W + 2;
    #pragma omp parallel for
    for (int row = 0; row < planes * H; row++) {
        const int plane = row / H, y = row % H;
        const dout_type* padded = dout_p + (size_t)plane * OH * OW;
        const dout_type* copies[3];
        int count = 0;
        if (y == 1) copies[count++] = padded;
        copies[count++] = padded + (y + 1) * OW;
        if (y == H - 2) copies[count++] = padded + (OH - 1) * OW;
        out_type* target = out_p + (size_t)row * W;
        for (int x = 0; x < W; x++) {
            out_type sum = 0;
            for (int i = 0; i < count; i++) {
                if (x == 1) sum += copies[i][0];
                sum += copies[i][x + 1];
                if (x == W - 2) sum += copies[i][OW - 1];
            }
            target[x] = sum;
        }
    }
"""
# 2×2 windows at stride 2; at an odd size the last row or column is a window of its own (ceil mode).
POOL_FORWARD = """
    const int planes = in0_shape0 * in0_shape1, H = in0_shape2, W = in0_shape3, OH = out_shape2, OW = out_shape3;
    #pragma omp parallel for
    for (int row = 0; row < planes * OH; row++) {
        const int plane = row / OH, y = 2 * (row % OH);
        const in0_type* top = in0_p + ((size_t)plane * H + y) * W;
        const in0_type* bottom = y + 1 < H ? top + W : top;
        out_type* target = out_p + (size_t)row * OW;
        for (int ox = 0; ox < OW; ox++) {
            const int x = 2 * ox, right = x + 1 < W ? x + 1 : x;
            target[ox] = std::max(std::max(std::max(top[x], top[right]), bottom[x]), bottom[right]);
        }
    }
"""
# The gradient goes to the first pixel of the window (in row order) that holds its maximum, as
# in Jittor's and PyTorch's pools; the others get 0. Windows do not overlap: no two rows race.
POOL_BACKWARD = """
    const int planes = in0_shape0 * in0_shape1, H = in0_shape2, W = in0_shape3, OH = pout_shape2, OW = pout_shape3;
    #pragma omp parallel for
    for (int row = 0; row < planes * OH; row++) {
        const int plane = row / OH, y = 2 * (row % OH);
        const bool two_rows = y + 1 < H;
        const size_t offset = ((size_t)plane * H + y) * W;
        const in0_type* top = in0_p + offset;
        out_type* top_gradient = out_p + offset;
        const pout_type* maximum = pout_p + (size_t)row * OW;
        const dout_type* gradient = dout_p + (size_t)row * OW;
        for (int ox = 0; ox < OW; ox++) {
            const int x = 2 * ox;
            const bool two_columns = x + 1 < W;
            bool given = false;
            for (int dy = 0; dy < (two_rows ? 2 : 1); dy++)
                for (int dx = 0; dx < (two_columns ? 2 : 1); dx++) {
                    const bool here = !given && top[dy * W + x + dx] == maximum[ox];
                    top_gradient[dy * W + x + dx] = here ? gradient[ox] : 0;
                    given = given || here;
                }
        }
    }
"""


class ReflectionPad(nn.Module):
    """One pixel of reflection padding on each side, as `nn.ReflectionPad2d(1)`."""

    def __init__(self):
        super().__init__()
        self.on_gpu = nn.ReflectionPad2d(1)

    def execute(self, x):
        n, c, h, w = x.shape
        if min(h, w) < 2:
            raise ValueError(f"reflection padding needs at least 2 rows and columns, not {h}×{w}")
        if jt.flags.use_cuda:
            return self.on_gpu(x)
        return jt.code((n, c, h + 2, w + 2), x.dtype, [x], cpu_src=PAD_FORWARD, cpu_grad_src=[PAD_BACKWARD])


class MaxPool2x2(nn.Module):
    """2×2 max pooling at stride 2 in ceil mode, as `nn.MaxPool2d(2, 2, 0, ceil_mode=True)`."""

    def __init__(self):
        super().__init__()
        self.on_gpu = nn.MaxPool2d(2, 2, 0, ceil_mode=True)

    def execute(self, x):
        n, c, h, w = x.shape
        if jt.flags.use_cuda:
            return self.on_gpu(x)
        return jt.code((n, c, (h + 1) // 2, (w + 1) // 2), x.dtype, [x], cpu_header="#include <algorithm>",
                       cpu_src=POOL_FORWARD, cpu_grad_src=[POOL_BACKWARD])


class _ConvolutionByBackwardData(jt.Function):
    """A 3×3 convolution without padding, as the backward-data convolution of the kernel flipped and its channels
    swapped (padding 2: a "full" correlation of a full correlation is the "valid" one); its gradients are the
    usual backward-data and backward-weights convolutions."""

    def execute(self, x, weight):
        self.x, self.weight = x, weight
        flipped = weight.flip([2, 3]).permute(1, 0, 2, 3)
        return MKL_OPS.mkl_conv_backward_x(flipped, x, x.shape[2] - 2, x.shape[3] - 2, 1, 1, 2, 2, 1, 1)

    def grad(self, dy):
        dx = MKL_OPS.mkl_conv_backward_x(self.weight, dy, self.x.shape[2], self.x.shape[3], 1, 1, 0, 0, 1, 1)
        dw = MKL_OPS.mkl_conv_backward_w(self.x, dy, 3, 3, 1, 1, 0, 0, 1, 1)
        return dx, dw


@functools.cache
def cpu_flags():
    """The CPU's feature flags, as Linux lists them (an empty set where it does not)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return frozenset(next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def onednn_picks_brgemm(flags, max_isa):
    """Whether Jittor's oneDNN (2.2) runs float32 convolutions on its AVX-512 brgemm kernels: on a CPU with
    AVX-512 (its avx512_core: F, BW, VL, DQ) unless DNNL_MAX_CPU_ISA (`max_isa`) caps it below that."""
    allowed = max_isa is None or max_isa.upper() == "ALL" or max_isa.upper().startswith("AVX512_CORE")
    return MKL_OPS is not None and allowed and AVX512_CORE <= flags


class Conv3x3(nn.Conv2d):
    """`nn.Conv2d(in_channels, out_channels, 3)`, faster on AVX-512 CPUs up to 128 channels.

    There Jittor's oneDNN 2.2 runs a float32 convolution on its brgemm kernels, which want
    channels-last maps: it reorders the input and the output around them, and its reorder back
    is slow. On an Intel Xeon (2 cores) a 64→64 convolution at 256×256 took 32 ms (the output's
    reorder 11 ms) against PyTorch's 17. The same sums computed as a backward-data convolution
    (`_ConvolutionByBackwardData`) run on oneDNN's blocked kernels, as PyTorch's do: 17 ms.
    From 256 channels up the brgemm kernels are the faster (17 against 18 ms at 66×66), and
    without AVX-512 oneDNN runs the blocked kernels anyway: there, and on a GPU or in float64,
    this is Jittor's convolution.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, 3)
        self.by_backward_data = (max(in_channels, out_channels) <= BACKWARD_DATA_MAX_CHANNELS
                                 and onednn_picks_brgemm(cpu_flags(), os.environ.get("DNNL_MAX_CPU_ISA")))

    def execute(self, x):
        if jt.flags.use_cuda or x.dtype != "float32" or not self.by_backward_data:
            return super().execute(x)
        y = _ConvolutionByBackwardData.apply(x, self.weight)
        return y + self.bias.broadcast(y.shape, [0, 2, 3])
