"""MCCNet in Jittor: the normalised VGG-19 encoder, the decoder, the MCC module and the
training network with its six losses (docs/mccnet.md describes each).

Module and attribute names follow the original PyTorch code, so the published checkpoints
load key for key: `vgg`, `decoder`, `MCC_Module.MCCN.{f,g,h,out_conv,fc}`.

Every function here keeps the dtype it is given: float32 in use, float64 in the tests that
prove the formulas. Three Jittor habits would break float64: a Python float in arithmetic
with a Var is rounded to float32 (so constants that float32 cannot hold go through
`constant`), `number op Var` gives float32 when the Var is a scalar (so losses are written
`Var op number`), and the gradient of `mean()` uses 1/n in float32 (so means are `sum() / n`).
"""
import math

import numpy as np

import backend  # noqa: F401  (prepares Jittor's environment before its first import)
import jittor as jt
from jittor import nn

import weights
from cpu_layers import Conv2d, MaxPool2x2, ReflectionPad, ReLU

# Encoder slices of the normalised VGG: vgg[a:b] maps relu{i-1}_1 to relu{i}_1.
ENCODER_SLICES = ((0, 4), (4, 11), (11, 18), (18, 31), (31, 44))
RELU4_1 = 4  # inference needs the encoder up to relu4_1 only
LOSS_WEIGHTS = dict(noise=3000.0, content=3.0, style=10.0, identity1=70.0, identity2=1.0, tv=1e-4)
NOISE_SIGMA_RANGE = (0.01, 0.02)
# The smallest image side the encoder takes: up to relu4_1 three ceil-mode 2×2 pools must
# each see more than 2 rows and columns (Jittor's pool, on a GPU, refuses a side ≤ its kernel;
# on the CPU the reflection padding after the third needs 2).
MIN_SIDE = 9
# Jittor's max pool (the one used on a GPU) indexes with 32-bit ints: its kernel fails to compile
# when its input (64 channels at the image's size, for the first pool) holds 2^31 numbers or more.
# The CPU's (cpu_layers.py) has the same limit here, so that what a run takes does not depend on
# the device.
MAX_POOL_PIXELS = (2 ** 31 - 1) // 64


def _conv3x3(in_channels, out_channels, relu=True):
    layers = [ReflectionPad(), Conv2d(in_channels, out_channels, 3)]
    return layers + [ReLU()] if relu else layers


def _maxpool():
    return [MaxPool2x2()]


class NearestUpsample2x(nn.Module):
    """Nearest-neighbour ×2 upsampling, as `nn.Upsample(scale_factor=2, mode="nearest")`.

    Jittor's Upsample finds each output's source pixel by a float multiply and floor, and
    its gradient scatters back through the same index; a reshape and broadcast copies the
    same values and its gradient is a plain sum: identical numbers, half the time.
    """

    def execute(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h, 1, w, 1).broadcast((n, c, h, 2, w, 2)).reshape(n, c, 2 * h, 2 * w)


class Conv1x1(nn.Conv2d):
    """A 1×1 convolution of a few channels (the encoder's first, RGB to 3): per pixel, a matrix product, as a
    broadcast product summed over the input channels.

    Jittor's convolution hands it to oneDNN 2.2, whose AVX-512 kernel for it crashed (SIGFPE, or "double free or
    corruption") on images whose pixel count is a multiple of 2^22: 2048×2048, a 4096×2048 panorama, a 4096×3072
    photo. This is also faster: 3.7 ms instead of 10 at 1920×1080, the same numbers; `cpu_layers.Conv2d` pads 3
    channels to 16 (1.7× slower at 1080p).
    """

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, 1)

    def execute(self, x):
        n, c, h, w = x.shape
        product = x.reshape(n, 1, c, h, w) * self.weight.reshape(1, self.out_channels, c, 1, 1)
        return product.sum(dim=2) + self.bias.reshape(1, self.out_channels, 1, 1)


def make_vgg():
    """All 53 modules of the normalised VGG-19, so that `vgg_normalised.pth` loads strictly."""
    layers = [Conv1x1(3, 3)]
    layers += _conv3x3(3, 64) + _conv3x3(64, 64) + _maxpool()
    layers += _conv3x3(64, 128) + _conv3x3(128, 128) + _maxpool()
    layers += _conv3x3(128, 256) + _conv3x3(256, 256) + _conv3x3(256, 256) + _conv3x3(256, 256) + _maxpool()
    layers += _conv3x3(256, 512) + _conv3x3(512, 512) + _conv3x3(512, 512) + _conv3x3(512, 512) + _maxpool()
    layers += _conv3x3(512, 512) + _conv3x3(512, 512) + _conv3x3(512, 512) + _conv3x3(512, 512)
    return nn.Sequential(*layers)


def make_decoder():
    """The mirror of the encoder up to relu4_1; its last conv has no ReLU and no clamp."""
    layers = _conv3x3(512, 256) + [NearestUpsample2x()]
    layers += _conv3x3(256, 256) + _conv3x3(256, 256) + _conv3x3(256, 256) + _conv3x3(256, 128)
    layers += [NearestUpsample2x()]
    layers += _conv3x3(128, 128) + _conv3x3(128, 64) + [NearestUpsample2x()]
    layers += _conv3x3(64, 64) + _conv3x3(64, 3, relu=False)
    return nn.Sequential(*layers)


def __getattr__(name):
    """`net.vgg` and `net.decoder`, the original's module-level networks, built on first use."""
    if name in ("vgg", "decoder"):
        globals()[name] = make_vgg() if name == "vgg" else make_decoder()
        return globals()[name]
    raise AttributeError(f"module 'net' has no attribute '{name}'")


def images_per_pass(height, width, wanted):
    """How many height × width images one encoder pass can take, at most `wanted` (0: not even one)."""
    return min(wanted, MAX_POOL_PIXELS // (height * width))


def encode(encoder, image, depth=5):
    """relu1_1 … relu{depth}_1 of an image batch, as a list (depth 4: what inference needs)."""
    layers, feats = list(encoder), []
    for start, end in ENCODER_SLICES[:depth]:
        for layer in layers[start:end]:
            image = layer(image)
        feats.append(image)
    return feats


def constant(value, like):
    """`value` as a 0-dim Var of the dtype of `like`, so that float64 keeps all its digits."""
    return jt.array(np.array(value, dtype=str(like.dtype)))


def calc_mean_std(feat, eps=1e-5):
    """Per (sample, channel) mean and sqrt(unbiased variance + eps) over all positions.

    The variance is the mean of squared deviations (two passes), not E[x²] − E[x]², which
    cancels catastrophically in float32 when the mean is large against the spread.
    """
    n, c = feat.shape[:2]
    flat = feat.reshape(n, c, -1)
    mean = flat.sum(dim=2, keepdims=True) / flat.shape[2]
    var = ((flat - mean) ** 2).sum(dim=2, keepdims=True) / (flat.shape[2] - 1)
    return mean.reshape(n, c, 1, 1), (var + constant(eps, var)).sqrt().reshape(n, c, 1, 1)


def normal(feat, eps=1e-5):
    mean, std = calc_mean_std(feat, eps)
    return (feat - mean) / std


def mse(a, b):
    return ((a - b) ** 2).sum() / a.numel()


def total(terms):
    """The sum of loss terms, started from the first (a Python 0 + a scalar Var would be float32)."""
    terms = list(terms)
    result = terms[0]
    for term in terms[1:]:
        result = result + term
    return result


def content_loss(feats, target_feats):
    """The content loss on relu4_1 and relu5_1 of the five encoder outputs, mean-std normalised."""
    return mse(normal(feats[-1]), normal(target_feats[-1])) + mse(normal(feats[-2]), normal(target_feats[-2]))


def style_statistics(feats):
    """The channel (mean, std) of each of the five encoder outputs: what the style loss matches."""
    return [calc_mean_std(feat) for feat in feats]


def style_loss(feats, target_statistics):
    """The style loss: channel means and stds matched at relu1_1..relu5_1 (targets from `style_statistics`)."""
    return total(mse(mean, target_mean) + mse(std, target_std)
                 for (mean, std), (target_mean, target_std) in zip(style_statistics(feats), target_statistics))


class MCCNet(nn.Module):
    """Re-weights content features channel by channel with a correlation of the style.

    The output is `Fc + out_conv(f(normal(Fc)) * fc(corr(Fs)))`. The style enters only
    through the per-channel vector `fc(corr(Fs))`, and `out_conv` is affine, so a weighted
    mix of outputs (style interpolation, the alpha blend) equals one pass with the same mix
    of vectors. `style_vector` and `apply_style` expose that split.
    """

    def __init__(self, in_dim):
        super().__init__()
        self.f = Conv2d(in_dim, in_dim, 1)
        self.g = Conv2d(in_dim, in_dim, 1)
        self.h = Conv2d(in_dim, in_dim, 1)  # unused, as in the original; the checkpoint has it
        self.out_conv = Conv2d(in_dim, in_dim, 1)
        self.fc = nn.Linear(in_dim, in_dim)

    def style_vector(self, style_feat):
        """fc(Σ G² / Σ G) per channel, with G = g(normal(Fs)); shape (B, C, 1, 1)."""
        g = self.g(normal(style_feat))
        b, c = g.shape[:2]
        g = g.reshape(b, c, -1)
        correlation = (g * g).sum(dim=2) / g.sum(dim=2)
        return self.fc(correlation).reshape(b, c, 1, 1)

    def apply_style(self, content_feat, style_vector):
        return content_feat + self.out_conv(self.f(normal(content_feat)) * style_vector)

    def execute(self, content_feat, style_feat):
        return self.apply_style(content_feat, self.style_vector(style_feat))


class MCC_Module(nn.Module):
    def __init__(self, in_dim=512):
        super().__init__()
        self.MCCN = MCCNet(in_dim)

    def execute(self, content_feats, style_feats):
        """Takes the encoder feature lists; uses their second-to-last entry, as the original."""
        return self.MCCN(content_feats[-2], style_feats[-2])


def load_models(vgg_path, decoder_path, mcc_path):
    """The encoder, decoder and MCC module, each loaded strictly from a `.pth` or `.pkl` file."""
    return (weights.load_weights(make_vgg(), vgg_path, "the VGG encoder"),
            weights.load_weights(make_decoder(), decoder_path, "the decoder"),
            weights.load_weights(MCC_Module(512), mcc_path, "the MCC module"))


# ---------------------------------------------------------------- inference

def in_mcc_precision(feat, mcc_module):
    """Encoder features in the MCC module's dtype: float32 when the encoder and decoder run in
    float16 (test_video.py --half), because its channel statistics sum squares of features over
    every position (32,400 of them in a 1080p frame's relu4_1), far beyond float16's 65504."""
    return feat.cast(mcc_module.MCCN.fc.weight.dtype)


def style_vectors(encoder, mcc_module, styles):
    """The MCC style vector of each style image; compute once, reuse for every frame."""
    return [mcc_module.MCCN.style_vector(in_mcc_precision(encode(encoder, s, RELU4_1)[-1], mcc_module))
            for s in styles]


def stylize(encoder, decoder, mcc_module, content, vectors, alpha=1.0, interpolation_weights=None):
    """Stylize a content batch (N, 3, H, W) with precomputed style vectors (see `style_vectors`).

    The original's `feat`, `alpha · Σ w_i mcc(c, s_i) + (1 − alpha) · mcc(c, c)` with w
    normalised to sum 1, computed as one MCC pass with the mixed vector; the content-content
    term only when alpha < 1. Returns the decoder output, unclamped, at 8 × the relu4_1
    size (H rounded up to a multiple of 8): callers crop it back to H × W. The encoder and
    decoder compute in the dtype of `content`, the MCC module in its own (`in_mcc_precision`).
    """
    content_feat = in_mcc_precision(encode(encoder, content, RELU4_1)[-1], mcc_module)
    weights_ = interpolation_weights or [1.0] * len(vectors)
    vector = total(v * constant(w / sum(weights_), v) for w, v in zip(weights_, vectors))
    if alpha < 1:
        content_vector = mcc_module.MCCN.style_vector(content_feat)
        vector = vector * constant(alpha, vector) + content_vector * constant(1 - alpha, vector)
    return decoder(mcc_module.MCCN.apply_style(content_feat, vector).cast(content.dtype))


def style_transfer(encoder, decoder, mcc_module, content, styles, alpha=1.0, interpolation_weights=None):
    """The original's `style_transfer`: a content batch and style images (each 1 × 3 × h × w)."""
    vectors = style_vectors(encoder, mcc_module, styles)
    return stylize(encoder, decoder, mcc_module, content, vectors, alpha, interpolation_weights)


# ---------------------------------------------------------------- training

class Net(nn.Module):
    """The training network: frozen encoder, trainable decoder and MCC module, six losses."""

    def __init__(self, encoder, decoder, mcc_module):
        super().__init__()
        for param in encoder.parameters():
            param.stop_grad()
        self.encoder = encoder
        self.decoder = decoder
        self.mcc_module = mcc_module

    def encode_with_intermediate(self, image):
        return encode(self.encoder, image)

    def generate(self, content_feats, style_feats):
        return self.decoder(self.mcc_module(content_feats, style_feats))

    def execute(self, content, style, noise):
        """The six loss terms (docs/mccnet.md) as a dict; `noise` is the Gaussian noise added to the content."""
        with jt.no_grad():
            style_feats = self.encode_with_intermediate(style)
            content_feats = self.encode_with_intermediate(content)
            noisy_feats = self.encode_with_intermediate(content + noise)
        ics = self.generate(content_feats, style_feats)
        ics_feats = self.encode_with_intermediate(ics)

        loss_content = content_loss(ics_feats, content_feats)
        loss_style = style_loss(ics_feats, style_statistics(style_feats))
        loss_noise = mse(self.generate(noisy_feats, style_feats), ics)

        icc = self.generate(content_feats, content_feats)
        iss = self.generate(style_feats, style_feats)
        loss_identity1 = mse(icc, content) + mse(iss, style)
        icc_feats = self.encode_with_intermediate(icc)
        iss_feats = self.encode_with_intermediate(iss)
        loss_identity2 = total(mse(icc_feats[i], content_feats[i]) + mse(iss_feats[i], style_feats[i])
                               for i in range(5))

        loss_tv = (ics[..., 1:] - ics[..., :-1]).abs().sum() + (ics[..., 1:, :] - ics[..., :-1, :]).abs().sum()
        return dict(content=loss_content, style=loss_style, noise=loss_noise,
                    identity1=loss_identity1, identity2=loss_identity2, tv=loss_tv)


def total_loss(losses, content_weight=LOSS_WEIGHTS["content"], style_weight=LOSS_WEIGHTS["style"]):
    weights_ = dict(LOSS_WEIGHTS, content=content_weight, style=style_weight)
    return total(value * constant(weights_[name], value) for name, value in losses.items())


class Adam(jt.optim.Adam):
    """Adam exactly as PyTorch computes it (the original trains with torch.optim.Adam).

    Jittor's Adam adds eps to sqrt(v) before the bias correction of v, PyTorch after it;
    early in training, when the correction is large, that makes small gradients take
    different steps. This class keeps Jittor's state and gradient handling (and its MPI
    averaging in `pre_step`) and only changes the update.
    """

    def step(self, loss=None, retain_graph=False):
        self.pre_step(loss, retain_graph)
        n = float(self.n_step)
        for group in self.param_groups:
            lr, eps = group.get("lr", self.lr), group.get("eps", self.eps)
            beta1, beta2 = group.get("betas", self.betas)
            like = group["params"][0]
            beta1_, beta2_, rest1, rest2, step_size, correction2_sqrt, eps_ = (constant(value, like) for value in (
                beta1, beta2, 1 - beta1, 1 - beta2, lr / (1 - beta1 ** n), math.sqrt(1 - beta2 ** n), eps))
            for param, grad, v, m in zip(group["params"], group["grads"], group["values"], group["m"]):
                if param.is_stop_grad():
                    continue
                m.update(m * beta1_ + grad * rest1)
                v.update(v * beta2_ + grad * grad * rest2)
                param.update(param - m * step_size / (jt.sqrt(v) / correction2_sqrt + eps_))
        self.post_step()
