"""Checkpoint I/O: the published layout, strictness, bad files, torch-free reading, conversion."""
import os
import pickle
import subprocess
import sys
from collections import OrderedDict

import jittor as jt
import numpy as np
import pytest
import torch

import net
import weights
from cli import UserError
from conftest import REPO

PUBLISHED_SIZES = {0: 20_024_396, 1: 3_505_219, 2: 1_313_280}  # numbers per file, spec §1-§3


@pytest.mark.parametrize("index", [0, 1, 2])
def test_published_layout_loads_strictly(oracle, weight_files, index):
    state = weights.read_state_dict(weight_files[index])
    assert sum(v.size for v in state.values()) == PUBLISHED_SIZES[index]
    model = (net.make_vgg, net.make_decoder, lambda: net.MCC_Module(512))[index]()
    weights.load_weights(model, weight_files[index])
    for key, value in oracle[index].state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_vgg_keys_are_the_published_conv_indices(weight_files):
    keys = weights.read_state_dict(weight_files[0]).keys()
    indices = sorted({int(k.split(".")[0]) for k in keys})
    assert indices == [0, 2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51]


def test_legacy_pytorch_format(oracle, tmp_path):
    # vgg_normalised.pth predates PyTorch 1.6 and is in the old, non-zip format.
    path = str(tmp_path / "legacy.pth")
    torch.save(oracle[2].state_dict(), path, _use_new_zipfile_serialization=False)
    state = weights.read_state_dict(path)
    for key, value in oracle[2].state_dict().items():
        np.testing.assert_array_equal(state[key], value.numpy(), err_msg=key)


def test_non_contiguous_tensors_keep_their_values(tmp_path):
    tensor = torch.arange(24.0).view(4, 6).t()[1:4]
    for legacy in (False, True):
        path = str(tmp_path / f"t{legacy}.pth")
        torch.save({"x": tensor}, path, _use_new_zipfile_serialization=not legacy)
        np.testing.assert_array_equal(weights.read_state_dict(path)["x"], tensor.numpy())


def test_data_parallel_prefix_is_accepted(oracle, tmp_path):
    path = str(tmp_path / "dp.pth")
    torch.save(OrderedDict(("module." + k, v) for k, v in oracle[2].state_dict().items()), path)
    model = weights.load_weights(net.MCC_Module(512), path)
    np.testing.assert_array_equal(model.MCCN.fc.weight.numpy(), oracle[2].MCCN.fc.weight.detach().numpy())


def test_missing_and_unexpected_keys_are_named(oracle, tmp_path):
    state = oracle[2].state_dict()
    state.pop("MCCN.h.bias")
    state["MCCN.extra.weight"] = torch.zeros(2)
    path = str(tmp_path / "keys.pth")
    torch.save(state, path)
    with pytest.raises(UserError) as error:
        weights.load_weights(net.MCC_Module(512), path, "the MCC module")
    message = str(error.value)
    assert path in message and "'MCCN.h.bias'" in message and "'MCCN.extra.weight'" in message
    assert "the MCC module" in message


def test_checkpoint_of_another_network(weight_files):
    with pytest.raises(UserError, match=r"not the decoder weights: 18 missing key\(s\).*unexpected"):
        weights.load_weights(net.make_decoder(), weight_files[2], "the decoder")


def test_wrong_shape_names_both_shapes(oracle, tmp_path):
    state = oracle[2].state_dict()
    state["MCCN.fc.weight"] = torch.zeros(512, 256)
    path = str(tmp_path / "shape.pth")
    torch.save(state, path)
    with pytest.raises(UserError, match=r"'MCCN.fc.weight' has shape \(512, 256\), but .* needs \(512, 512\)"):
        weights.load_weights(net.MCC_Module(512), path)


def truncated_copy(source, target, fraction=0.5):
    with open(source, "rb") as f:
        data = f.read()
    with open(target, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return target


@pytest.mark.parametrize("kind", ["missing", "text", "truncated zip", "truncated legacy", "truncated pkl", "empty"])
def test_unreadable_files_give_one_clear_error(oracle, weight_files, tmp_path, kind):
    path = str(tmp_path / "bad.pth")
    if kind == "text":
        with open(path, "w") as f:
            f.write("<html>404 Not Found</html>\n")
    elif kind == "truncated zip":
        truncated_copy(weight_files[2], path)
    elif kind == "truncated legacy":
        legacy = str(tmp_path / "legacy.pth")
        torch.save(oracle[2].state_dict(), legacy, _use_new_zipfile_serialization=False)
        truncated_copy(legacy, path, 0.9)
    elif kind == "truncated pkl":
        whole = str(tmp_path / "whole.pkl")
        weights.write_state_dict(weights.read_state_dict(weight_files[2]), whole)
        truncated_copy(whole, path, 0.9)
    elif kind == "empty":
        open(path, "wb").close()
    with pytest.raises(UserError) as error:
        weights.load_weights(net.MCC_Module(512), path)
    assert str(error.value).startswith(path + ": ")
    assert ("no such file" if kind == "missing" else "not a readable") in str(error.value)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return os.system, ("touch " + str(tmp_path / "pwned"),)
    path = str(tmp_path / "evil.pkl")
    with open(path, "wb") as f:
        pickle.dump({"x": Exploit()}, f)
    with pytest.raises(UserError, match="posix.system|os.system"):
        weights.read_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_pth_is_read_without_torch(weight_files, tmp_path):
    expected = weights.read_state_dict(weight_files[2])
    np.savez(tmp_path / "expected.npz", **expected)
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import numpy as np, weights\n"
        f"state = weights.read_state_dict({weight_files[2]!r})\n"
        f"expected = np.load({str(tmp_path / 'expected.npz')!r})\n"
        "assert sorted(state) == sorted(expected.files)\n"
        "assert all(np.array_equal(state[k], expected[k]) for k in state)\n"
        "print('ok', len(state))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok 10"


def run_converter(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "weights.py"), *args], capture_output=True, text=True)


def test_converter_round_trip_is_bit_exact(oracle, weight_files, tmp_path):
    pkl, pth = str(tmp_path / "mcc.pkl"), str(tmp_path / "mcc_back.pth")
    assert run_converter(weight_files[2], pkl).returncode == 0
    assert run_converter(pkl, pth).returncode == 0
    back = torch.load(pth)  # PyTorch itself reads our .pth (weights_only, its safe mode)
    assert list(back) == list(oracle[2].state_dict())
    for key, value in oracle[2].state_dict().items():
        assert torch.equal(back[key], value), key
    assert jt.load(pkl)["MCCN.fc.bias"].shape == (512,)  # and Jittor reads our .pkl


def test_jittor_saved_pkl_loads(tmp_path):
    model = net.MCC_Module(512)
    path = str(tmp_path / "jt.pkl")
    model.save(path)
    loaded = weights.load_weights(net.MCC_Module(512), path)
    np.testing.assert_array_equal(loaded.MCCN.g.weight.numpy(), model.MCCN.g.weight.numpy())


def test_converter_bad_input_is_one_line_and_nonzero(tmp_path):
    target = tmp_path / "out.pkl"
    result = run_converter(str(tmp_path / "nope.pth"), str(target))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.pth'}: no such file"]
    assert not target.exists()
    bad_name = run_converter(__file__, str(tmp_path / "out.bin"))
    assert bad_name.returncode != 0 and "Traceback" not in bad_name.stderr


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.pkl"
    weights.write_state_dict({"a": np.ones(3, np.float32)}, str(path))
    before = path.read_bytes()

    def fail(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(KeyboardInterrupt):
        weights.write_state_dict({"a": np.zeros(3, np.float32)}, str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pkl"]
