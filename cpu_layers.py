"""The reflection padding and max pooling of the encoder and decoder, as multi-threaded C++ on the CPU.

Jittor generates its CPU kernels for these (an index expression per pixel) without OpenMP,
so they run on one core while the convolutions use all of them: 7–12% of a training
step's time on two cores, a growing share on more. Here each is a loop over rows that
OpenMP shares among the cores, 2–3× faster on two cores, with the same values (the
padding's gradient may round its sums of up to four terms in another order). On a GPU,
Jittor's own CUDA kernels run.
"""
import backend  # noqa: F401  (prepares Jittor's environment before its first import)
import jittor as jt
from jittor import nn

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
