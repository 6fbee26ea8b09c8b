"""MCCNet in Jittor: the normalised VGG-19 encoder, the decoder, the MCC module and the
training network with its six losses (MCCNET_SPEC.md §1-§5).

Module and attribute names follow the original PyTorch code, so the published checkpoints
load key for key: `vgg`, `decoder`, `MCC_Module.MCCN.{f,g,h,out_conv,fc}`.
"""
import math

import backend  # noqa: F401  (prepares Jittor's environment before its first import)
import jittor as jt
from jittor import nn

# Encoder slices of the normalised VGG: vgg[a:b] maps relu{i-1}_1 to relu{i}_1.
ENCODER_SLICES = ((0, 4), (4, 11), (11, 18), (18, 31), (31, 44))
RELU4_1 = 3  # index of relu4_1 among the five encoder outputs
LOSS_WEIGHTS = dict(noise=3000.0, content=3.0, style=10.0, identity1=70.0, identity2=1.0, tv=1e-4)
NOISE_SIGMA_RANGE = (0.01, 0.02)
# The smallest image side the encoder takes: up to relu4_1 three ceil-mode 2×2 pools must
# each see more than 2 rows and columns (Jittor's pool refuses a side ≤ its kernel).
MIN_SIDE = 9


def _conv3x3(in_channels, out_channels, relu=True):
    layers = [nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3)]
    return layers + [nn.ReLU()] if relu else layers


def _maxpool():
    return [nn.MaxPool2d(2, 2, 0, ceil_mode=True)]


class NearestUpsample2x(nn.Module):
    """Nearest-neighbour ×2 upsampling, as `nn.Upsample(scale_factor=2, mode="nearest")`.

    Jittor's Upsample finds each output's source pixel by a float multiply and floor, and
    its gradient scatters back through the same index; a reshape and broadcast copies the
    same values and has a plain sum as gradient: identical numbers, half the time forward
    and backward (it is on the training step's path 12 times).
    """

    def execute(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h, 1, w, 1).broadcast((n, c, h, 2, w, 2)).reshape(n, c, 2 * h, 2 * w)


def make_vgg():
    """All 53 modules of the normalised VGG-19, so that `vgg_normalised.pth` loads strictly."""
    layers = [nn.Conv2d(3, 3, 1)]
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


vgg = make_vgg()
decoder = make_decoder()


def encoder_slices(encoder):
    """enc_1..enc_5 as Sequentials sharing the encoder's modules: input → relu1_1 ... relu5_1."""
    layers = list(encoder)
    return [nn.Sequential(*layers[a:b]) for a, b in ENCODER_SLICES]


def calc_mean_std(feat, eps=1e-5):
    """Per (sample, channel) mean and sqrt(unbiased variance + eps) over all positions.

    The variance is the mean of squared deviations (two passes), not E[x²] − E[x]², which
    cancels catastrophically in float32 when the mean is large against the spread.
    """
    n, c = feat.shape[:2]
    flat = feat.reshape(n, c, -1)
    mean = flat.mean(dim=2, keepdims=True)
    var = ((flat - mean) ** 2).sum(dim=2, keepdims=True) / (flat.shape[2] - 1)
    return mean.reshape(n, c, 1, 1), (var + eps).sqrt().reshape(n, c, 1, 1)


def normal(feat, eps=1e-5):
    mean, std = calc_mean_std(feat, eps)
    return (feat - mean) / std


def mse(a, b):
    return ((a - b) ** 2).mean()


def content_loss(feats, target_feats):
    """The content loss on relu4_1 and relu5_1 of the five encoder outputs, mean-std normalised."""
    return mse(normal(feats[-1]), normal(target_feats[-1])) + mse(normal(feats[-2]), normal(target_feats[-2]))


def style_statistics(feats):
    """The channel (mean, std) of each of the five encoder outputs: what the style loss matches."""
    return [calc_mean_std(feat) for feat in feats]


def style_loss(feats, target_statistics):
    """The style loss: channel means and stds matched at relu1_1..relu5_1 (targets from `style_statistics`)."""
    loss = 0
    for (mean, std), (target_mean, target_std) in zip(style_statistics(feats), target_statistics):
        loss = loss + mse(mean, target_mean) + mse(std, target_std)
    return loss


class MCCNet(nn.Module):
    """Re-weights content features channel by channel with a correlation of the style.

    The output is `Fc + out_conv(f(normal(Fc)) * fc(corr(Fs)))`. The style enters only
    through the per-channel vector `fc(corr(Fs))`, and `out_conv` is affine, so a weighted
    mix of outputs (style interpolation, the alpha blend) equals one pass with the same mix
    of vectors. `style_vector` and `apply_style` expose that split.
    """

    def __init__(self, in_dim):
        super().__init__()
        self.f = nn.Conv2d(in_dim, in_dim, 1)
        self.g = nn.Conv2d(in_dim, in_dim, 1)
        self.h = nn.Conv2d(in_dim, in_dim, 1)  # unused, as in the original; the checkpoint has it
        self.softmax = nn.Softmax(dim=-2)  # unused, as in the original
        self.out_conv = nn.Conv2d(in_dim, in_dim, 1)
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


def encode_relu4_1(encoder, image):
    """relu4_1 features: the only encoder output that inference needs."""
    for layer in list(encoder)[:ENCODER_SLICES[RELU4_1][1]]:
        image = layer(image)
    return image


def style_vectors(encoder, mcc_module, styles):
    """The MCC style vector of each style image; compute once, reuse for every frame."""
    return [mcc_module.MCCN.style_vector(encode_relu4_1(encoder, s)) for s in styles]


def stylize_features(mcc_module, content_feat, vectors, alpha=1.0, interpolation_weights=None):
    """The original's `feat` (spec §4) from relu4_1 content features and style vectors.

    Equal to `alpha · Σ w_i mcc(c, s_i) + (1 − alpha) · mcc(c, c)` with w normalised to sum 1;
    the content-content term is computed only when alpha < 1.
    """
    weights = interpolation_weights or [1.0] * len(vectors)
    total = float(sum(weights))
    vector = sum((w / total) * v for w, v in zip(weights, vectors))
    if alpha < 1:
        vector = alpha * vector + (1 - alpha) * mcc_module.MCCN.style_vector(content_feat)
    return mcc_module.MCCN.apply_style(content_feat, vector)


def stylize(encoder, decoder, mcc_module, content, vectors, alpha=1.0, interpolation_weights=None):
    """Stylize a content batch (N, 3, H, W) with precomputed style vectors (see `style_vectors`).

    Returns the decoder output, unclamped, at 8 × the relu4_1 size (H rounded up to a
    multiple of 8); callers crop it back to H × W.
    """
    feat = stylize_features(mcc_module, encode_relu4_1(encoder, content), vectors, alpha, interpolation_weights)
    return decoder(feat)


def style_transfer(encoder, decoder, mcc_module, content, styles, alpha=1.0, interpolation_weights=None):
    """The original's `style_transfer`: a content batch and style images (each 1 × 3 × h × w)."""
    vectors = style_vectors(encoder, mcc_module, styles)
    return stylize(encoder, decoder, mcc_module, content, vectors, alpha, interpolation_weights)


class Net(nn.Module):
    """The training network: frozen encoder, trainable decoder and MCC module, six losses."""

    def __init__(self, encoder, decoder, mcc_module):
        super().__init__()
        self.enc_1, self.enc_2, self.enc_3, self.enc_4, self.enc_5 = encoder_slices(encoder)
        for param in encoder.parameters():
            param.stop_grad()
        self.decoder = decoder
        self.mcc_module = mcc_module

    def encode_with_intermediate(self, image):
        feats = [image]
        for enc in (self.enc_1, self.enc_2, self.enc_3, self.enc_4, self.enc_5):
            feats.append(enc(feats[-1]))
        return feats[1:]

    def generate(self, content_feats, style_feats):
        return self.decoder(self.mcc_module(content_feats, style_feats))

    def execute(self, content, style, noise=None):
        """The six loss terms (spec §5) as a dict; `noise` is drawn as the original does when None."""
        if noise is None:
            sigma = float(jt.rand(1).item()) * (NOISE_SIGMA_RANGE[1] - NOISE_SIGMA_RANGE[0]) + NOISE_SIGMA_RANGE[0]
            noise = jt.randn(content.shape) * sigma
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
        loss_identity2 = sum(mse(icc_feats[i], content_feats[i]) + mse(iss_feats[i], style_feats[i])
                             for i in range(5))

        loss_tv = (ics[..., 1:] - ics[..., :-1]).abs().sum() + (ics[..., 1:, :] - ics[..., :-1, :]).abs().sum()
        return dict(content=loss_content, style=loss_style, noise=loss_noise,
                    identity1=loss_identity1, identity2=loss_identity2, tv=loss_tv)


def total_loss(losses, content_weight=LOSS_WEIGHTS["content"], style_weight=LOSS_WEIGHTS["style"]):
    weights = dict(LOSS_WEIGHTS, content=content_weight, style=style_weight)
    return sum(weights[name] * value for name, value in losses.items())


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
            step_size = lr / (1 - beta1 ** n)
            correction2_sqrt = math.sqrt(1 - beta2 ** n)
            for param, grad, v, m in zip(group["params"], group["grads"], group["values"], group["m"]):
                if param.is_stop_grad():
                    continue
                m.update(beta1 * m + (1 - beta1) * grad)
                v.update(beta2 * v + (1 - beta2) * grad * grad)
                param.update(param - step_size * m / (jt.sqrt(v) / correction2_sqrt + eps))
        self.post_step()
