"""The layers where Jittor's CPU kernels are slow: reflection padding, max pooling and ReLU as multi-threaded
C++, and convolutions whose forward pass gets the oneDNN kernels that PyTorch's gets (`Conv2d`).

Jittor generates its CPU kernels for element-wise ops, padding and pooling without OpenMP,
so they run on one core while the convolutions use all of them: 7–12% of a training
step's time on two cores, a growing share on more. Here each is a loop that OpenMP shares
among the cores, 2–3× faster on two cores, with the same values (the padding's gradient may
round its sums of up to four terms in another order). A convolution's bias is added by
oneDNN inside the convolution, and its gradient summed on every core. On a GPU, Jittor's
own CUDA kernels run.
"""
import functools
import os

import backend  # noqa: F401  (prepares Jittor's environment before its first import)
import jittor as jt
import jittor_utils
from jittor import nn

MKL_OPS = jt.compile_extern.mkl_ops  # Jittor's oneDNN operators (None where Jittor runs without oneDNN)
STRIP_BYTES = 8 << 20  # the copies that a strip of a convolution's output is computed with (`BLOCKED_CONVOLUTION`)

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
# Each input pixel's gradient (out) from the padded map's (in0): the sum of the gradients of the padded positions
# that copy it (up to four: the second and second-to-last rows and columns are copied into the padding too).
PAD_BACKWARD = """
    const int planes = out_shape0 * out_shape1, H = out_shape2, W = out_shape3, OH = H + 2, OW = W + 2;
    #pragma omp parallel for
    for (int row = 0; row < planes * H; row++) {
        const int plane = row / H, y = row % H;
        const in0_type* padded = in0_p + (size_t)plane * OH * OW;
        const in0_type* copies[3];
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


# ReLU as Jittor writes it (x > 0 ? x : 0), and its gradient. What NaN gives is up to the compiler, since Jittor
# compiles its kernels with -Ofast (-ffinite-math-only): built by gcc 12 on an Intel Xeon, this loop passes NaN on
# (as PyTorch's ReLU does), and Jittor's own fused ReLU turns it into 0. train.py checks the weights for NaN.
RELU_FORWARD = """
    const size_t count = (size_t)in0_shape0 * in0_shape1 * in0_shape2 * in0_shape3;
    #pragma omp parallel for
    for (size_t i = 0; i < count; i++) out_p[i] = in0_p[i] > 0 ? in0_p[i] : 0;
"""
# The gradient from the output (in0) and its gradient (in1): the output is positive where the input was.
RELU_BACKWARD = """
    const size_t count = (size_t)in0_shape0 * in0_shape1 * in0_shape2 * in0_shape3;
    #pragma omp parallel for
    for (size_t i = 0; i < count; i++) out_p[i] = in0_p[i] > 0 ? in1_p[i] : 0;
"""
# A convolution's bias gradient: the sum of the output's gradient over samples and positions, per channel
# (accumulated in double).
BIAS_GRADIENT = """
    const int samples = in0_shape0, channels = in0_shape1;
    const size_t positions = (size_t)in0_shape2 * in0_shape3;
    #pragma omp parallel for
    for (int c = 0; c < channels; c++) {
        double sum = 0;
        for (int n = 0; n < samples; n++) {
            const in0_type* plane = in0_p + ((size_t)n * channels + c) * positions;
            for (size_t i = 0; i < positions; i++) sum += plane[i];
        }
        out_p[c] = sum;
    }
"""


# One convolution without padding at stride 1: in0 the input (N, C, H, W), in1 the weight (O, C, KH, KW), in2 the
# bias (O), out (N, O, H - KH + 1, W - KW + 1), all float32. oneDNN 2.2 first gets its choice of formats, as in
# Jittor's own convolution. Where it chooses channels-last maps (its brgemm kernels, on AVX-512 CPUs), it gets maps
# in blocks of 16 channels instead (an input of 3 channels stays as it is), on which its direct kernels run, as
# PyTorch's oneDNN's do. The output is computed in strips of rows, each from a copy of the input rows it reads, in
# the convolution's format, into a copy in its format then a plain one, which take STRIP_BYTES in all (a row at
# least; `Conv2d` says why). The plain copy's planes are then copied into their rows of the output: oneDNN writes
# into rows of a larger map at half the speed. The copies are allocated once per call (and reused between calls:
# see backend.keep_freed_memory_for_reuse).
BLOCKED_CONVOLUTION = """
    using namespace dnnl;
    using tag = memory::format_tag;
    const memory::data_type f32 = memory::data_type::f32;
    static engine cpu(engine::kind::cpu, 0);
    stream queue(cpu);
    const memory::dim N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3, O = out_shape1,
        OH = out_shape2, OW = out_shape3, KH = in1_shape2;
    const memory::dim row_bytes = N * (C * W + 2 * O * OW) * (memory::dim)sizeof(float);
    const memory::dim rows = std::min(OH, std::max<memory::dim>(1, STRIP_BYTES / row_bytes));
    const memory::dims weights{O, C, KH, in1_shape3}, bias{O};
    memory user_weights({weights, f32, tag::oihw}, cpu, in1_p), user_bias({bias, f32, tag::x}, cpu, in2_p);
    auto in_format = [&](memory user, const memory::desc& format) {
        if (user.get_desc() == format) return user;
        memory copy(format, cpu);
        reorder(user, copy).execute(queue, user, copy);
        return copy;
    };
    convolution_forward::primitive_desc chosen;
    convolution_forward convolve;
    memory conv_weights, user_source, plain_target, conv_source, conv_target;
    reorder to_conv_source, from_conv_target;
    for (memory::dim top = 0; top < OH; top += rows) {
        const memory::dim strip = std::min(rows, OH - top);
        if (top == 0 || strip != rows) {  // the primitives and copies of the strips, and of a shorter last one
            const memory::dims source{N, C, strip + KH - 1, W}, target{N, O, strip, OW};
            auto convolution = [&](tag source_format, tag target_format) {
                return convolution_forward::primitive_desc({prop_kind::forward_inference,
                    algorithm::convolution_direct, {source, f32, source_format}, {weights, f32, tag::any},
                    {bias, f32, tag::x}, {target, f32, target_format}, {1, 1}, {0, 0}, {0, 0}}, cpu);
            };
            chosen = convolution(tag::any, tag::any);
            if (chosen.dst_desc() == memory::desc(target, f32, tag::nhwc))
                chosen = convolution(C % 16 ? tag::nchw : tag::nChw16c, tag::nChw16c);
            convolve = convolution_forward(chosen);
            conv_weights = in_format(user_weights, chosen.weights_desc());
            // The strip's rows of the input (placed at each strip), and the plain copy of its output: the output
            // itself where the strip is the whole map.
            user_source = memory({source, f32, {C * H * W, H * W, W, 1}}, cpu, in0_p);
            plain_target = strip == OH ? memory({target, f32, tag::nchw}, cpu, out_p)
                                       : memory({target, f32, tag::nchw}, cpu);
            conv_source = chosen.src_desc() == user_source.get_desc() ? user_source : memory(chosen.src_desc(), cpu);
            conv_target = chosen.dst_desc() == plain_target.get_desc() ? plain_target
                                                                       : memory(chosen.dst_desc(), cpu);
            if (conv_source != user_source) to_conv_source = reorder(user_source, conv_source);
            if (conv_target != plain_target) from_conv_target = reorder(conv_target, plain_target);
        }
        user_source.set_data_handle(in0_p + top * W);
        if (conv_source != user_source) to_conv_source.execute(queue, user_source, conv_source);
        convolve.execute(queue, {{DNNL_ARG_SRC, conv_source}, {DNNL_ARG_WEIGHTS, conv_weights},
                                 {DNNL_ARG_BIAS, user_bias}, {DNNL_ARG_DST, conv_target}});
        if (conv_target != plain_target) from_conv_target.execute(queue, conv_target, plain_target);
        if (strip != OH) {
            const float* plain = static_cast<const float*>(plain_target.get_data_handle());
            #pragma omp parallel for
            for (memory::dim plane = 0; plane < N * O; plane++)
                std::memcpy(out_p + (plane * OH + top) * OW, plain + plane * strip * OW, strip * OW * sizeof(float));
        }
    }
    queue.wait();
"""


class _ReflectionPad(jt.Function):
    """Reflection padding whose gradient keeps nothing of the forward pass. (A `jt.code` with its gradient's code
    keeps its input and output until its gradient runs: the padded maps stayed alive in the training step after
    the convolutions' gradients had used them, +0.5 GB at 4 × 256².)"""

    def execute(self, x):
        n, c, h, w = x.shape
        return jt.code((n, c, h + 2, w + 2), x.dtype, [x], cpu_src=PAD_FORWARD)

    def grad(self, dy):
        n, c, h, w = dy.shape
        return jt.code((n, c, h - 2, w - 2), dy.dtype, [dy], cpu_src=PAD_BACKWARD)


class ReflectionPad(nn.Module):
    """One pixel of reflection padding on each side, as `nn.ReflectionPad2d(1)`."""

    def __init__(self):
        super().__init__()
        self.on_gpu = nn.ReflectionPad2d(1)

    def execute(self, x):
        h, w = x.shape[2:]
        if min(h, w) < 2:
            raise ValueError(f"reflection padding needs at least 2 rows and columns, not {h}×{w}")
        if jt.flags.use_cuda:
            return self.on_gpu(x)
        return _ReflectionPad.apply(x)


class _ReLU(jt.Function):
    """ReLU whose gradient keeps only its output, so that the convolution's output before it can be freed."""

    def execute(self, x):
        self.y = jt.code(x.shape, x.dtype, [x], cpu_src=RELU_FORWARD)
        return self.y

    def grad(self, dy):
        return jt.code(dy.shape, dy.dtype, [self.y, dy], cpu_src=RELU_BACKWARD)


class ReLU(nn.Module):
    """`nn.ReLU()`, on every core."""

    def __init__(self):
        super().__init__()
        self.on_gpu = nn.ReLU()

    def execute(self, x):
        if jt.flags.use_cuda:
            return self.on_gpu(x)
        return _ReLU.apply(x)


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


@functools.cache
def onednn_compile_flags():
    """g++ flags for a kernel that calls Jittor's oneDNN: the one that Jittor's own oneDNN operators are compiled
    against, which `jittor-offline` put in Jittor's cache (as in Jittor's compile_extern.setup_mkl)."""
    folder = os.path.join(jittor_utils.home(), ".cache", "jittor", "mkl")
    root = next(os.path.join(folder, name) for name in sorted(os.listdir(folder))
                if name.startswith("dnnl") and os.path.isdir(os.path.join(folder, name)))
    return f'-I"{root}/include" -L"{root}/lib" -lmkldnn'


class _BlockedConvolution(jt.Function):
    """A float32 convolution without padding at stride 1 (`BLOCKED_CONVOLUTION`); its gradients are Jittor's
    backward-data and backward-weights convolutions, which oneDNN already runs on blocked formats."""

    def execute(self, x, weight, bias):
        self.x, self.weight = x, weight
        n, _, h, w = x.shape
        o, _, kh, kw = weight.shape
        header = ("#include <algorithm>\n#include <cstring>\n#include <dnnl.hpp>\n"
                  f"const long STRIP_BYTES = {STRIP_BYTES};")
        y = jt.code((n, o, h - kh + 1, w - kw + 1), x.dtype, [x, weight, bias], cpu_header=header,
                    cpu_src=BLOCKED_CONVOLUTION)
        y.compile_options = {f"FLAGS: {onednn_compile_flags()} ": 1}
        return y

    def grad(self, dy):
        dx = MKL_OPS.mkl_conv_backward_x(self.weight, dy, self.x.shape[2], self.x.shape[3], 1, 1, 0, 0, 1, 1)
        dw = MKL_OPS.mkl_conv_backward_w(self.x, dy, self.weight.shape[2], self.weight.shape[3], 1, 1, 0, 0, 1, 1)
        db = jt.code((dy.shape[1],), dy.dtype, [dy], cpu_src=BIAS_GRADIENT)
        return dx, dw, db


class Conv2d(nn.Conv2d):
    """`nn.Conv2d(in_channels, out_channels, kernel_size)` (no padding, stride 1), whose float32 forward pass on the
    CPU runs on the oneDNN kernels that PyTorch's runs on (`BLOCKED_CONVOLUTION`).

    Jittor's own forward convolution lets oneDNN 2.2 choose the memory formats, and on AVX-512 CPUs it chooses
    channels-last maps for its brgemm kernels, whose reorders around them are slow. On an Intel Xeon (2 cores),
    at 256×256, a 64→64 convolution took 32 ms, PyTorch's 17 and this one 17; 3→64 took 16 ms, PyTorch's 2.5
    and this one 1.8; and the MCC module's 512→512 1×1 convolutions spent 5 ms in a slow reorder of their
    weights at each call. On other CPUs oneDNN chooses blocked formats anyway. On a GPU, in float64 (which oneDNN
    does not compute) or where Jittor runs without oneDNN (use_mkl=0), this is Jittor's convolution.

    The output is computed in strips (`BLOCKED_CONVOLUTION`): copies of whole maps, two more maps beside the input
    and output, took the peak of a 4K stylization to 12.4 GB (PyTorch's: 8.7); in strips it is 7.1 GB, in the
    same time (AMD EPYC Zen 5, 2 cores: 21 s a frame), and 1080p's 1.8 GB instead of 2.9.
    """

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__(in_channels, out_channels, kernel_size)

    def execute(self, x):
        if jt.flags.use_cuda or x.dtype != "float32" or MKL_OPS is None:
            return super().execute(x)
        return _BlockedConvolution.apply(x, self.weight, self.bias)
