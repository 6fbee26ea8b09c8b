"""Checkpoint I/O: the published layout, strictness, bad and hostile files, torch-free reading, conversion."""
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict

import jittor as jt
import numpy as np
import pytest
import torch

import net
import weights
from cli import UserError
from conftest import REPO, run_script

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
    assert str(error.value).startswith(path + ": ") and "\n" not in str(error.value)
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


def test_converter_round_trip_is_bit_exact(oracle, weight_files, tmp_path, run_main):
    pkl, pth = str(tmp_path / "mcc.pkl"), str(tmp_path / "mcc_back.pth")
    assert run_main(weights, weight_files[2], pkl)[0] == 0
    assert run_main(weights, pkl, pth)[0] == 0
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
    """The one run of weights.py in a child process: the exit code as the shell sees it."""
    target = tmp_path / "out.pkl"
    result = run_script("weights.py", tmp_path / "nope.pth", target)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.pth'}: no such file"]
    assert not target.exists()


@pytest.mark.parametrize("case", ["bad name", "folder", "legacy truncated", "pickle that runs code", "full disk"])
def test_converter_refuses_with_one_line(oracle, weight_files, tmp_path, run_main, case, request):
    source, target, expected = weight_files[2], tmp_path / "out.pkl", None
    if case == "bad name":
        target, expected = tmp_path / "out.bin", "the name must end in .pth (PyTorch) or .pkl (Jittor)"
    elif case == "folder":
        target, expected = tmp_path / "existing.pkl", "is a folder, not a file name"
        target.mkdir()
    elif case == "legacy truncated":
        source = str(tmp_path / "legacy.pth")
        torch.save(oracle[2].state_dict(), source, _use_new_zipfile_serialization=False)
        truncated_copy(source, source, 0.5)
        expected = "not a readable PyTorch or Jittor checkpoint"
    elif case == "pickle that runs code":
        source = crafted_legacy(tmp_path / "evil.pth", a_tensor(), replace={0: CodeRunner(tmp_path / "pwned")})
        expected = "posix.system"
    else:
        target, expected = request.getfixturevalue("full_disk") / "out.pkl", "No space left on device"
    code, lines = run_main(weights, source, target)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "pwned").exists()
    assert not os.path.isfile(target) and [p for p in os.listdir(os.path.dirname(target)) if p.startswith(".tmp")] == []


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


# ---------------------------------------------------------------- hostile files

class CodeRunner:
    """Unpickled by a plain unpickler, this creates the file `marker`: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class StorageToCraft:
    def __init__(self, numel, dtype):
        self.numel, self.dtype = numel, dtype


class TensorToCraft:
    """Pickles like a PyTorch tensor, with whatever offset, size, stride and storage it is given."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return weights._REBUILD_TENSOR_V2, (self.storage, self.offset, self.size, self.stride, False, OrderedDict())


class CraftingPickler(weights._TorchPickler):
    def __init__(self, file, legacy):
        super().__init__(file)
        self.legacy = legacy

    def persistent_id(self, obj):
        if not isinstance(obj, StorageToCraft):
            return None
        pid = ("storage", obj.dtype, "0", "cpu", obj.numel)
        return pid + (None,) if self.legacy else pid


FLOAT = weights._STORAGE_TYPES[np.dtype(np.float32)]


def crafted_state_pickle(value, legacy):
    buffer = io.BytesIO()
    CraftingPickler(buffer, legacy).dump({"x": value})
    return buffer.getvalue()


def crafted_zip(path, value, data=np.arange(4, dtype=np.float32).tobytes()):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", crafted_state_pickle(value, legacy=False))
        archive.writestr("archive/data/0", data)
    return str(path)


LEGACY_SYSTEM = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def crafted_legacy(path, value, numel=4, data=np.arange(4, dtype=np.float32).tobytes(), replace=None):
    """The five pickles of the pre-1.6 layout and one raw storage; `replace` = {position: object}."""
    parts = [pickle.dumps(p, protocol=2) for p in (weights.LEGACY_MAGIC, weights.LEGACY_PROTOCOL, LEGACY_SYSTEM)]
    parts += [crafted_state_pickle(value, legacy=True), pickle.dumps(["0"], protocol=2)]
    for position, obj in (replace or {}).items():
        parts[position] = pickle.dumps(obj, protocol=2)
    if 0 in (replace or {}):  # still looks legacy to a sniffer of the first bytes: a long, popped, then the object
        parts[0] = b"\x80\x02\x8a\x01\x00" + pickle.POP + parts[0][2:]
    with open(path, "wb") as f:
        f.write(b"".join(parts) + struct.pack("<q", numel) + data)
    return str(path)


def a_tensor(numel=4, offset=0, size=(2, 2), stride=(2, 1), dtype=FLOAT):
    return TensorToCraft(StorageToCraft(numel, dtype), offset, size, stride)


def test_crafted_files_are_read_like_torch_files(tmp_path):
    """The crafting helpers write what PyTorch writes: a well-formed crafted file loads."""
    for path in (crafted_zip(tmp_path / "z.pth", a_tensor()), crafted_legacy(tmp_path / "l.pth", a_tensor())):
        np.testing.assert_array_equal(weights.read_state_dict(path)["x"], [[0, 1], [2, 3]])


def legacy_positions():
    return ["magic number", "protocol", "system info", "state dict", "storage keys"]


@pytest.mark.parametrize("position", range(5), ids=legacy_positions())
def test_code_in_any_pickle_of_the_legacy_layout_never_runs(tmp_path, position):
    marker = tmp_path / "pwned"
    path = crafted_legacy(tmp_path / "evil.pth", a_tensor(), replace={position: CodeRunner(marker)})
    with pytest.raises(UserError, match="posix.system|os.system"):
        weights.read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["value", "storage type", "tensor size", "whole pickle"])
def test_code_anywhere_in_a_zip_pth_never_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    runner = CodeRunner(marker)
    value = {"value": runner, "storage type": a_tensor(dtype=runner),
             "tensor size": TensorToCraft(StorageToCraft(4, FLOAT), 0, runner, (1,))}.get(where, a_tensor())
    path = crafted_zip(tmp_path / "evil.pth", value)
    if where == "whole pickle":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", pickle.dumps(runner, protocol=2))
    with pytest.raises(UserError, match="posix.system|os.system"):
        weights.read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("with_trailer", [False, True])
def test_code_in_a_pkl_never_runs(tmp_path, with_trailer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    payload = pickle.dumps({"x": np.ones(2, np.float32), "y": CodeRunner(marker)}, protocol=4)
    # with a valid checksum and trailer (jt.save's layout) the refusal is the unpickler's, not the checksum's
    path.write_bytes(payload + hashlib.sha1(payload).digest() + weights.PKL_TRAILER if with_trailer else payload)
    with pytest.raises(UserError, match="posix.system|os.system"):
        weights.read_state_dict(str(path))
    assert not marker.exists()


def test_numpy_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"x": np.array([1, "a"], dtype=object)}, protocol=4))
    with pytest.raises(UserError, match="array of type object"):
        weights.read_state_dict(str(path))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("case,message", [
    (dict(size=(1000,), stride=(1,)), "reaching past its storage"),
    (dict(offset=3, size=(2,), stride=(1,)), "reaching past its storage"),
    (dict(size=(2, 2), stride=(1, 4095)), "reaching past its storage"),
    (dict(size=(-1,), stride=(1,)), "not a count"),
    (dict(offset=-8, size=(2,), stride=(1,)), "not a count"),
    (dict(dtype="object"), "a storage with key"),
])
def test_tensors_must_lie_inside_their_storage_and_be_numbers(tmp_path, layout, case, message):
    tensor = a_tensor(**case)
    path = (crafted_zip if layout == "zip" else crafted_legacy)(tmp_path / "bad.pth", tensor)
    with pytest.raises(UserError, match=message):
        weights.read_state_dict(path)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_storage_data_must_be_the_size_announced(tmp_path, layout):
    short = np.arange(2, dtype=np.float32).tobytes()
    path = (crafted_zip if layout == "zip" else crafted_legacy)(tmp_path / "short.pth", a_tensor(), data=short)
    with pytest.raises(UserError, match="cut short|not the .* announced"):
        weights.read_state_dict(path)


def test_sizes_are_refused_before_a_zip_entry_is_read(tmp_path, monkeypatch):
    huge = 3 * 2 ** 30 // 4  # a 3 GiB storage behind a tensor of 4 numbers
    path = crafted_zip(tmp_path / "bomb.pth", a_tensor(numel=huge))
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(name) or
                        real_open(self, name, *a, **k))
    with pytest.raises(UserError, match=f"announces {huge:,} numbers, more than the 8 the MCC"):
        weights.read_state_dict(path, {"x": (2, 2)}, "the MCC")
    assert [name for name in opened if "/data/" in name] == []  # only data.pkl, the announcement, was read
    with pytest.raises(UserError, match="more than the 134,217,728 any MCCNet file holds"):
        weights.read_state_dict(path)  # the converter does not know the network: a fixed bound


def test_a_legacy_header_announcing_1e11_numbers_allocates_nothing(tmp_path):
    path = crafted_legacy(tmp_path / "bomb.pth", a_tensor(numel=10 ** 11), numel=10 ** 11)
    with pytest.raises(UserError, match="announces 100,000,000,000 numbers"):
        weights.read_state_dict(path)


def test_shapes_are_checked_before_the_data_is_read(oracle, tmp_path, monkeypatch):
    path = str(tmp_path / "legacy.pth")
    torch.save(oracle[2].state_dict(), path, _use_new_zipfile_serialization=False)
    monkeypatch.setattr(weights, "_exactly", lambda *args: pytest.fail("data was read"))
    with pytest.raises(UserError, match="not the decoder weights"):
        weights.load_weights(net.make_decoder(), path, "the decoder")


def test_non_finite_weights_are_refused(oracle, tmp_path):
    state = oracle[2].state_dict()
    state["MCCN.fc.bias"] = state["MCCN.fc.bias"].clone()
    state["MCCN.fc.bias"][3] = float("nan")
    path = str(tmp_path / "nan.pth")
    torch.save(state, path)
    with pytest.raises(UserError, match="'MCCN.fc.bias' holds NaN or infinite values"):
        weights.load_weights(net.MCC_Module(512), path, "the MCC module")


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_what_is_not_a_file_is_named_so(tmp_path, kind):
    path = {"folder": str(tmp_path), "device": "/dev/zero"}.get(kind, str(tmp_path / "fifo"))
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(UserError, match="not a regular file"):
        weights.read_state_dict(path)
