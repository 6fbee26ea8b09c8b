"""Shared fixtures: seeded oracle weights saved as .pth in the published layout, and the
Jittor networks loaded from those files through the public loader."""
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import backend  # noqa: E402,F401  (must precede every import of jittor)
import torch  # noqa: E402

import torch_mccnet  # noqa: E402

WEIGHT_NAMES = ("vgg_normalised.pth", "decoder_iter_160000.pth", "mcc_module_iter_160000.pth")


def assert_close(actual, expected, rel, what):
    """max |actual − expected| ≤ rel · max |expected|: the error measured against the value's scale."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = np.abs(expected).max()
    error = np.abs(actual - expected).max()
    assert error <= rel * scale, f"{what}: max abs error {error:.3g} > {rel:g} × scale {scale:.3g}"
    return error / scale


@pytest.fixture(scope="session")
def oracle():
    """The PyTorch reference networks (vgg, decoder, mcc) with seeded random weights."""
    torch.set_num_threads(2)
    return torch_mccnet.seeded_weights(seed=0)


@pytest.fixture(scope="session")
def weight_files(oracle, tmp_path_factory):
    """The oracle's weights written by torch.save under the published file names."""
    folder = tmp_path_factory.mktemp("experiments")
    paths = [str(folder / name) for name in WEIGHT_NAMES]
    for module, path in zip(oracle, paths):
        torch.save(module.state_dict(), path)
    return paths


def load_jittor_models(weight_files):
    import net
    import weights
    models = net.make_vgg(), net.make_decoder(), net.MCC_Module(512)
    for model, path in zip(models, weight_files):
        weights.load_weights(model, path)
    return models


@pytest.fixture(scope="session")
def jittor_models(weight_files):
    """Our Jittor networks, loaded from the oracle's .pth files (not to be modified)."""
    return load_jittor_models(weight_files)


@pytest.fixture
def images():
    """Seeded random images in [0, 1]: make(n, h, w) → float32 array (n, 3, h, w)."""
    rng = np.random.default_rng(1234)
    return lambda n, h, w: rng.random((n, 3, h, w), dtype=np.float32)
