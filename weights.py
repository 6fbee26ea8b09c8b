"""Checkpoints: PyTorch `.pth` and Jittor `.pkl` state dicts, read and written without PyTorch.

The published MCCNet weights are PyTorch files: `vgg_normalised.pth` is in PyTorch's old
(pre-1.6) format, newer checkpoints are zip archives. Both are read here with a restricted
unpickler that accepts tensors and nothing else, so a checkpoint cannot run code on load
and inference needs no PyTorch. `.pkl` files use `jt.save`'s format (pickle + SHA-1 +
trailer) so that Jittor's own `jt.load` reads ours and we read its.

Loading is strict, unlike Jittor's `load_parameters`, which only logs a wrong key and says
nothing of a missing one: every key and shape must match, or a UserError says which.

Run as a script, this converts between the two formats: `python weights.py in.pth out.pkl`.
"""
import argparse
import hashlib
import io
import os
import pickle
import secrets
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np

from cli import UserError, run

PKL_TRAILER = b"HCAJSLHD"
SHA1_SIZE = 20
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


# ---------------------------------------------------------------- reading

def _rebuild_tensor(storage, offset, size, stride, *unused):
    """A view of `storage` with PyTorch's size and stride (in elements)."""
    itemsize = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))


def _rebuild_parameter(data, *unused):
    return data


class _CheckpointUnpickler(pickle.Unpickler):
    """Accepts the few globals a state dict needs; anything else is not a weights file."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if (module, name) == ("jittor", "jittor_core.Var"):  # jt.save pickles a Var as Var(ndarray)
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return np.dtype(STORAGE_DTYPES[name])
        if (module, name) in NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which no weights file needs")


def _read_zip_pth(path):
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if not pickles:
            raise ValueError("a zip archive without data.pkl")
        prefix = pickles[0][: -len("data.pkl")]

        def persistent_load(pid):
            _, dtype, key, _location, numel = pid
            data = np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=dtype)
            if data.size != numel:
                raise ValueError(f"storage {key} holds {data.size} numbers, expected {numel}")
            return data

        unpickler = _CheckpointUnpickler(io.BytesIO(archive.read(pickles[0])))
        unpickler.persistent_load = persistent_load
        return unpickler.load()


def _read_legacy_pth(file):
    """PyTorch's format before 1.6: header pickles, the object pickle, then raw storages."""
    if pickle.load(file) != LEGACY_MAGIC or pickle.load(file) != LEGACY_PROTOCOL:
        raise ValueError("not a PyTorch file")
    pickle.load(file)  # system info: byte order and type sizes, little-endian assumed
    storages = {}

    def persistent_load(pid):
        _, dtype, key, _location, numel, view = pid
        if key not in storages:
            storages[key] = np.empty(numel, dtype=dtype)
        if view is not None:
            _view_key, view_offset, view_size = view
            return storages[key][view_offset:view_offset + view_size]
        return storages[key]

    unpickler = _CheckpointUnpickler(file)
    unpickler.persistent_load = persistent_load
    state = unpickler.load()
    for key in pickle.load(file):
        storage = storages[key]
        (numel,) = struct.unpack("<q", file.read(8))
        raw = file.read(numel * storage.dtype.itemsize)
        if numel != storage.size or len(raw) != storage.nbytes:
            raise EOFError(f"storage {key} is cut short")
        storage[:] = np.frombuffer(raw, dtype=storage.dtype)
    return state


def _read_pkl(path):
    with open(path, "rb") as f:
        blob = f.read()
    if blob.endswith(PKL_TRAILER):
        payload, checksum = blob[: -SHA1_SIZE - len(PKL_TRAILER)], blob[-SHA1_SIZE - len(PKL_TRAILER):-len(PKL_TRAILER)]
        if hashlib.sha1(payload).digest() != checksum:
            raise ValueError("checksum mismatch, the file is damaged or cut short")
        blob = payload
    return _CheckpointUnpickler(io.BytesIO(blob)).load()


def _parse_checkpoint(path):
    if zipfile.is_zipfile(path):
        return _read_zip_pth(path)
    with open(path, "rb") as f:
        if f.read(2) == b"\x80\x02" and f.read(1) == b"\x8a":
            f.seek(0)
            return _read_legacy_pth(f)
    return _read_pkl(path)


def read_state_dict(path):
    """The name → float32 array mapping stored in a `.pth` or `.pkl` file.

    The format is recognised from the content, not the name. A `module.` prefix left by
    PyTorch's DataParallel is removed.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        state = _parse_checkpoint(path)
    except Exception as error:  # noqa: BLE001 -- any parse failure means "not a checkpoint"
        raise UserError(f"{path}: not a readable PyTorch or Jittor checkpoint ({error or type(error).__name__})")
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise UserError(f"{path}: holds no state dict of tensors")
    return OrderedDict((_strip_data_parallel(k), np.array(v)) for k, v in state.items())


def _strip_data_parallel(key):
    return key[len("module."):] if key.startswith("module.") else key


def check_state_dict(state, expected_shapes, path, what):
    """Raise a UserError unless `state` has exactly the keys and shapes in `expected_shapes`."""
    missing = [k for k in expected_shapes if k not in state]
    unexpected = [k for k in state if k not in expected_shapes]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) such as '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) such as '{unexpected[0]}'")
        raise UserError(f"{path}: not {what} weights: {' and '.join(parts)}")
    for key, shape in expected_shapes.items():
        if tuple(state[key].shape) != tuple(shape):
            raise UserError(f"{path}: '{key}' has shape {tuple(state[key].shape)}, "
                            f"but {what} needs {tuple(shape)}")


def load_weights(module, path, what="the"):
    """Load a checkpoint into a Jittor module, strictly; `what` names the network in errors."""
    state = read_state_dict(path)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_state_dict(state, expected, path, what)
    module.load_parameters({k: v.astype(np.float32) for k, v in state.items()})
    return module


# ---------------------------------------------------------------- writing

class _TorchGlobal:
    """A PyTorch class or function, written into a pickle by name without importing torch."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise TypeError("a stand-in for a PyTorch name, only for pickling")


_REBUILD_TENSOR_V2 = _TorchGlobal("torch._utils", "_rebuild_tensor_v2")
_STORAGE_TYPES = {np.dtype(d): _TorchGlobal("torch", n) for n, d in STORAGE_DTYPES.items()}


class _Storage:
    def __init__(self, array):
        self.array = array


class _Tensor:
    """Pickles as PyTorch pickles a contiguous CPU tensor."""

    def __init__(self, array):
        self.array = np.ascontiguousarray(array)

    def __reduce__(self):
        shape = self.array.shape
        strides = tuple(s // self.array.itemsize for s in self.array.strides)
        return _REBUILD_TENSOR_V2, (_Storage(self.array), 0, shape, strides, False, OrderedDict())


class _TorchPickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table we extend
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file):
        super().__init__(file, protocol=2)
        self.storages = []

    def _save_torch_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[_TorchGlobal] = _save_torch_global

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        self.storages.append(obj.array)
        return ("storage", _STORAGE_TYPES[obj.array.dtype], str(len(self.storages) - 1), "cpu", obj.array.size)


def _pth_bytes(state):
    """A state dict in PyTorch's zip format, as `torch.save` writes it."""
    pickled = io.BytesIO()
    pickler = _TorchPickler(pickled)
    pickler.dump(OrderedDict((k, _Tensor(v)) for k, v in state.items()))
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickled.getvalue())
        archive.writestr("archive/byteorder", "little")
        for i, array in enumerate(pickler.storages):
            archive.writestr(f"archive/data/{i}", array.tobytes())
        archive.writestr("archive/version", "3")
    return archive_bytes.getvalue()


def _pkl_bytes(state):
    payload = pickle.dumps(dict(state), protocol=4)
    return payload + hashlib.sha1(payload).digest() + PKL_TRAILER


def write_atomically(path, data):
    """Write `data` to `path` through a temporary file, so that `path` is whole or untouched.

    The temporary file is opened like any new file (not by mkstemp, which makes it private),
    so that `path` gets the permissions the user's umask gives.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}-{os.path.basename(path)}")
    try:
        os.makedirs(folder, exist_ok=True)
        f = open(tmp, "xb")
    except OSError as error:
        raise UserError(f"{path}: cannot write here ({error.strerror})")
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_state_dict(state, path):
    """Write name → array as `.pth` (PyTorch's format) or `.pkl` (Jittor's), by the extension."""
    arrays = OrderedDict((k, np.asarray(v)) for k, v in state.items())
    if path.endswith((".pth", ".pt")):
        write_atomically(path, _pth_bytes(arrays))
    elif path.endswith(".pkl"):
        write_atomically(path, _pkl_bytes(arrays))
    else:
        raise UserError(f"{path}: the name must end in .pth (PyTorch) or .pkl (Jittor)")


def save_weights(module, path):
    write_state_dict(OrderedDict((k, v.numpy()) for k, v in module.state_dict().items()), path)


def main():
    parser = argparse.ArgumentParser(description="Convert MCCNet weights between PyTorch .pth and Jittor .pkl; "
                                                 "the numbers are copied bit for bit.")
    parser.add_argument("source", help="a .pth or .pkl checkpoint")
    parser.add_argument("target", help="where to write it; .pth or .pkl by the extension")
    args = parser.parse_args()
    state = read_state_dict(args.source)
    write_state_dict(state, args.target)
    print(f"{args.source} -> {args.target}: {len(state)} tensors, "
          f"{sum(v.size for v in state.values()):,} numbers", file=sys.stderr)


if __name__ == "__main__":
    run(main)
