"""An independent PyTorch MCCNet, written from docs/mccnet.md: the test oracle.

It mirrors the original PyTorch code (github.com/diyiiyiii/MCCNet) module for module,
so that state dicts saved from it have the published key layout. It deliberately shares
no code with the Jittor port.
"""
from collections import OrderedDict

import torch
import torch.nn as nn


def make_vgg():
    def conv3(cin, cout):
        return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(cin, cout, (3, 3)), nn.ReLU()]

    def pool():
        return [nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)]

    layers = [nn.Conv2d(3, 3, (1, 1))]
    layers += conv3(3, 64) + conv3(64, 64) + pool()
    layers += conv3(64, 128) + conv3(128, 128) + pool()
    layers += conv3(128, 256) + conv3(256, 256) + conv3(256, 256) + conv3(256, 256) + pool()
    layers += conv3(256, 512) + conv3(512, 512) + conv3(512, 512) + conv3(512, 512) + pool()
    layers += conv3(512, 512) + conv3(512, 512) + conv3(512, 512) + conv3(512, 512)
    return nn.Sequential(*layers)


def make_decoder():
    def conv3(cin, cout, relu=True):
        return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(cin, cout, (3, 3))] + ([nn.ReLU()] if relu else [])

    up = [nn.Upsample(scale_factor=2, mode="nearest")]
    layers = conv3(512, 256) + up
    layers += conv3(256, 256) + conv3(256, 256) + conv3(256, 256) + conv3(256, 128) + up
    layers += conv3(128, 128) + conv3(128, 64) + up
    layers += conv3(64, 64) + conv3(64, 3, relu=False)
    return nn.Sequential(*layers)


def calc_mean_std(feat, eps=1e-5):
    n, c = feat.shape[:2]
    var = feat.view(n, c, -1).var(dim=2, unbiased=True) + eps
    return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def normal(feat, eps=1e-5):
    mean, std = calc_mean_std(feat, eps)
    return (feat - mean.expand(feat.size())) / std.expand(feat.size())


class MCCNet(nn.Module):
    def __init__(self, in_dim):
        super().__init__()
        self.f = nn.Conv2d(in_dim, in_dim, (1, 1))
        self.g = nn.Conv2d(in_dim, in_dim, (1, 1))
        self.h = nn.Conv2d(in_dim, in_dim, (1, 1))
        self.softmax = nn.Softmax(dim=-2)
        self.out_conv = nn.Conv2d(in_dim, in_dim, (1, 1))
        self.fc = nn.Linear(in_dim, in_dim)

    def forward(self, content_feat, style_feat):
        b, c, h, w = content_feat.size()
        content = self.f(normal(content_feat))
        bs, cs, hs, ws = style_feat.size()
        style = self.g(normal(style_feat)).view(-1, 1, hs * ws)
        style_sum = style.view(bs, cs, hs * ws).sum(-1)
        style_cov = torch.bmm(style, style.permute(0, 2, 1)).view(bs, cs) / style_sum
        style_cov = self.fc(style_cov).view(bs, cs, 1, 1)
        return content_feat + self.out_conv(content * style_cov)


class MCC_Module(nn.Module):
    def __init__(self, in_dim=512):
        super().__init__()
        self.MCCN = MCCNet(in_dim)

    def forward(self, content_feats, style_feats):
        return self.MCCN(content_feats[-2], style_feats[-2])


SLICES = [(0, 4), (4, 11), (11, 18), (18, 31), (31, 44)]


class Net(nn.Module):
    """The training network of the original: frozen encoder, decoder, MCC module, six losses."""

    def __init__(self, encoder, decoder, mcc):
        super().__init__()
        layers = list(encoder.children())
        self.encs = nn.ModuleList([nn.Sequential(*layers[a:b]) for a, b in SLICES])
        for p in self.encs.parameters():
            p.requires_grad = False
        self.decoder = decoder
        self.mcc_module = mcc
        self.mse = nn.MSELoss()

    def encode_with_intermediate(self, x):
        feats = [x]
        for enc in self.encs:
            feats.append(enc(feats[-1]))
        return feats[1:]

    def calc_style_loss(self, a, b):
        am, astd = calc_mean_std(a)
        bm, bstd = calc_mean_std(b)
        return self.mse(am, bm) + self.mse(astd, bstd)

    def forward(self, content, style, noise):
        """`noise` is the already-drawn Gaussian noise added to the content (one tensor)."""
        style_feats = self.encode_with_intermediate(style)
        content_feats = self.encode_with_intermediate(content)
        ics = self.decoder(self.mcc_module(content_feats, style_feats))
        ics_feats = self.encode_with_intermediate(ics)

        loss_c = self.mse(normal(ics_feats[-1]), normal(content_feats[-1])) + \
            self.mse(normal(ics_feats[-2]), normal(content_feats[-2]))
        loss_s = sum(self.calc_style_loss(ics_feats[i], style_feats[i]) for i in range(5))

        noisy_feats = self.encode_with_intermediate(content + noise)
        ics_noise = self.decoder(self.mcc_module(noisy_feats, style_feats))
        loss_noise = self.mse(ics_noise, ics)

        icc = self.decoder(self.mcc_module(content_feats, content_feats))
        iss = self.decoder(self.mcc_module(style_feats, style_feats))
        l_identity1 = self.mse(icc, content) + self.mse(iss, style)
        icc_feats = self.encode_with_intermediate(icc)
        iss_feats = self.encode_with_intermediate(iss)
        l_identity2 = sum(self.mse(icc_feats[i], content_feats[i]) + self.mse(iss_feats[i], style_feats[i])
                          for i in range(5))

        tv = (ics[..., 1:] - ics[..., :-1]).abs().sum() + (ics[..., 1:, :] - ics[..., :-1, :]).abs().sum()
        return OrderedDict(content=loss_c, style=loss_s, noise=loss_noise,
                           identity1=l_identity1, identity2=l_identity2, tv=tv)


LOSS_WEIGHTS = dict(noise=3000.0, content=3.0, style=10.0, identity1=70.0, identity2=1.0, tv=1e-4)


def total_loss(losses):
    return sum(LOSS_WEIGHTS[k] * v for k, v in losses.items())


def style_transfer(vgg, decoder, mcc, content, styles, alpha=1.0, weights=None):
    """The original's test procedure (spec §4), with everything it computes."""
    def encode(x):
        feats = []
        for a, b in SLICES:
            x = vgg[a:b](x)
            feats.append(x)
        return feats[2:]  # relu3_1, relu4_1, relu5_1

    content_feats = encode(content)
    fccc = mcc(content_feats, content_feats)
    weights = weights or [1.0 / len(styles)] * len(styles)
    total = sum(weights)
    feat = sum((w / total) * mcc(content_feats, encode(s)) for w, s in zip(weights, styles))
    feat = alpha * feat + (1 - alpha) * fccc
    return decoder(feat)


def seeded_weights(seed=0):
    """Random weights in the published key layout.

    PyTorch's default initialisation shrinks the signal at every layer, so that a random
    decoder's output is almost its last bias whatever the input: comparisons on it would
    test little. He initialisation keeps every layer's output at the input's scale. g.bias
    stays in 0.5..1 so that the MCC correlation does not divide by a sum near zero (spec §3).
    """
    torch.manual_seed(seed)
    vgg, decoder, mcc = make_vgg(), make_decoder(), MCC_Module(512)
    with torch.no_grad():
        for module in list(vgg.modules()) + list(decoder.modules()) + list(mcc.modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                gain = 2.0 if module in vgg.modules() or module in decoder.modules() else 1.0
                module.weight.normal_(0.0, (gain / fan_in) ** 0.5)
                module.bias.uniform_(-0.1, 0.1)
        mcc.MCCN.g.bias.uniform_(0.5, 1.0)
    return vgg, decoder, mcc
