"""Checkpoints: PyTorch `.pth` and Jittor `.pkl` state dicts, read and written without PyTorch.

The published MCCNet weights are PyTorch files: `vgg_normalised.pth` is in PyTorch's old
(pre-1.6) format, newer checkpoints are zip archives; `.pkl` files use `jt.save`'s format
(pickle + SHA-1 + trailer). What a checkpoint may contain, and what is refused:

- Every pickle in every layout (the legacy format has five: magic number, protocol,
  system info, the state dict, the storage keys) is read by a restricted unpickler that
  knows only the names a state dict of tensors needs; anything else (a function, a class
  that would run code) is refused before it is called.
- A tensor is a view (offset, size, stride) of a storage of one numeric dtype; the view
  must lie inside its storage.
- Sizes are checked before any data is read or decompressed: the keys and shapes against
  the network's (`expected`), and the storages' total against twice what those shapes
  need (or MAX_NUMBERS when the network is not known, as in the converter).
- Values must be finite: a checkpoint with NaN or infinity (a diverged training) is refused.

Run as a script, this converts between the two formats: `python weights.py in.pth out.pkl`.
"""
import hashlib
import io
import os
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict

# cli first, before any package: a package missing there is one line (`cli._missing_module_as_one_line`).
from cli import ArgumentParser, UserError, regular_file, run, write_atomically

import numpy as np


PKL_TRAILER = b"HCAJSLHD"
SHA1_SIZE = 20
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: no objects, strings or records
MAX_NUMBERS = 1 << 27  # numbers in a checkpoint of an unknown network: 512 MB of float32, 6.7 × the VGG


class CheckpointError(Exception):
    """The file is not a checkpoint we accept; the message says why, in one line."""


# ---------------------------------------------------------------- the restricted unpickler

def _count(value, what):
    """A non-negative int from the file, or CheckpointError."""
    if type(value) is not int or value < 0:
        raise CheckpointError(f"{what} is {value!r}, not a count")
    return value


class _Storage:
    """A storage announced by the pickle: its data is read only after every size is checked."""

    def __init__(self, key, dtype, numel, base=None, offset=0):
        if not isinstance(key, str) or not isinstance(dtype, np.dtype) or dtype.kind not in NUMERIC_KINDS:
            raise CheckpointError(f"a storage with key {key!r} and type {dtype!r}")
        self.key, self.dtype, self.numel = key, dtype, _count(numel, "a storage size")
        self.base, self.offset = base, _count(offset, "a storage view offset")  # a legacy view into `base`
        self.data = None

    def array(self):
        if self.base is not None:
            return self.base.array()[self.offset:self.offset + self.numel]
        return self.data


class _Tensor:
    """A tensor announced by the pickle: a strided view of a storage, checked to lie inside it."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage) or not isinstance(size, tuple) or not isinstance(stride, tuple):
            raise CheckpointError("a tensor that is not a view of a storage")
        self.storage, self.offset = storage, _count(offset, "a tensor offset")
        self.shape = tuple(_count(n, "a tensor size") for n in size)
        self.stride = tuple(_count(s, "a tensor stride") for s in stride)
        if len(self.shape) != len(self.stride):
            raise CheckpointError(f"a tensor of size {self.shape} with stride {self.stride}")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if 0 not in self.shape and last >= storage.numel:
            raise CheckpointError(f"a tensor of size {self.shape} reaching past its storage of {storage.numel}")

    def array(self):
        data = self.storage.array()
        if 0 in self.shape:
            return np.zeros(self.shape, data.dtype)
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.shape,
                                               strides=tuple(s * data.itemsize for s in self.stride))
        return np.array(view)


def _numeric_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.kind not in NUMERIC_KINDS:
        raise CheckpointError(f"an array of type {dtype}")
    return dtype


def _array_from_var(data, *unused):
    if not isinstance(data, np.ndarray):
        raise CheckpointError("a Jittor Var without an array")
    return data


class _Unpickler(pickle.Unpickler):
    """Knows only what a state dict of tensors needs; every other name is refused unseen.

    Storages are collected in `storages` as the pickle announces them (PyTorch's persistent
    ids); their data is not read here.
    """

    def __init__(self, file, legacy=False):
        super().__init__(file)
        self.legacy = legacy
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return lambda storage, offset, size, stride, *unused: _Tensor(storage, offset, size, stride)
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *unused: data
        if module == "torch" and name in STORAGE_DTYPES:
            return np.dtype(STORAGE_DTYPES[name])
        if (module, name) == ("jittor", "jittor_core.Var"):  # jt.save pickles a Var as Var(ndarray)
            return _array_from_var
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                              ("numpy", "ndarray")):
            return super().find_class(module, name)
        if (module, name) == ("numpy", "dtype"):
            return _numeric_dtype
        raise CheckpointError(f"it refers to {module}.{name}, which no weights file needs")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != (6 if self.legacy else 5) or pid[0] != "storage":
            raise CheckpointError(f"a storage reference {pid!r:.60}")
        _, dtype, key, _location, numel = pid[:5]
        storage = _Storage(key, dtype, numel)
        known = self.storages.setdefault(key, storage)
        if (known.dtype, known.numel) != (storage.dtype, storage.numel):
            raise CheckpointError(f"storage {key!r} announced twice with different sizes")
        view = pid[5] if self.legacy else None
        if view is None:
            return known
        if not isinstance(view, tuple) or len(view) != 3:
            raise CheckpointError(f"a storage view {view!r:.60}")
        _view_key, offset, size = view
        if _count(offset, "a view offset") + _count(size, "a view size") > known.numel:
            raise CheckpointError(f"a view reaching past storage {key!r}")
        return _Storage(key, known.dtype, size, base=known, offset=offset)


def _restricted_load(file, legacy=False):
    unpickler = _Unpickler(file, legacy)
    return unpickler.load(), unpickler.storages


# ---------------------------------------------------------------- the three layouts

def _read_zip(path, expectations):
    """PyTorch ≥ 1.6: a zip of data.pkl and one entry per storage."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointError("a zip archive without one data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        if archive.getinfo(pickles[0]).file_size > 64 << 20:
            raise CheckpointError("a data.pkl of more than 64 MB (a state dict's takes kilobytes)")
        state, storages = _restricted_load(io.BytesIO(archive.read(pickles[0])))
        expectations.check(state, storages)
        for key, storage in storages.items():
            name = f"{prefix}data/{key}"
            size = storage.numel * storage.dtype.itemsize
            if name not in archive.namelist() or archive.getinfo(name).file_size != size:
                raise CheckpointError(f"storage {key!r} is missing or not the {size} bytes announced")
            with archive.open(name) as entry:
                storage.data = _exactly(entry.read(size), size, storage)
    return state


def _exactly(data, size, storage):
    if len(data) != size:
        raise CheckpointError(f"storage {storage.key!r} is cut short")
    return np.frombuffer(data, dtype=storage.dtype)


def _read_legacy(path, expectations):
    """PyTorch before 1.6: header pickles, the state dict pickle, the storage keys, then raw storages."""
    with open(path, "rb") as file:
        if _restricted_load(file)[0] != LEGACY_MAGIC or _restricted_load(file)[0] != LEGACY_PROTOCOL:
            raise CheckpointError("not a PyTorch file")
        system = _restricted_load(file)[0]
        if not isinstance(system, dict) or system.get("little_endian") is not True:
            raise CheckpointError("written on a big-endian machine")
        state, storages = _restricted_load(file, legacy=True)
        keys = _restricted_load(file)[0]
        if not isinstance(keys, list) or set(keys) != set(storages):
            raise CheckpointError("its storage list does not match its tensors")
        expectations.check(state, storages)
        remaining = os.fstat(file.fileno()).st_size - file.tell()
        for key in keys:
            storage = storages[key]
            size = storage.numel * storage.dtype.itemsize
            header = file.read(8)
            if len(header) != 8 or struct.unpack("<q", header)[0] != storage.numel or remaining < 8 + size:
                raise CheckpointError(f"storage {key!r} is cut short or not the size announced")
            storage.data = _exactly(file.read(size), size, storage)
            remaining -= 8 + size
    return state


def _read_pkl(path, expectations):
    """jt.save's layout: one pickle of arrays (their data inline), a SHA-1 of it, a trailer."""
    if os.path.getsize(path) > 8 * expectations.max_numbers + (1 << 20):
        raise CheckpointError(f"{os.path.getsize(path):,} bytes, more than {expectations.max_numbers:,} numbers take")
    with open(path, "rb") as file:
        blob = file.read()
    if blob.endswith(PKL_TRAILER):
        payload, checksum = blob[: -SHA1_SIZE - len(PKL_TRAILER)], blob[-SHA1_SIZE - len(PKL_TRAILER):-len(PKL_TRAILER)]
        if hashlib.sha1(payload).digest() != checksum:
            raise CheckpointError("checksum mismatch, the file is damaged or cut short")
        blob = payload
    state, storages = _restricted_load(io.BytesIO(blob))
    if storages:
        raise CheckpointError("a Jittor file with PyTorch storages")
    expectations.check(state, storages)
    return state


def _layout(path):
    if zipfile.is_zipfile(path):
        return _read_zip
    with open(path, "rb") as file:
        if file.read(3) == b"\x80\x02\x8a":  # a protocol-2 pickle of a long: the legacy magic number
            return _read_legacy
    return _read_pkl


# ---------------------------------------------------------------- checks

def _strip_data_parallel(key):
    return key[len("module."):] if isinstance(key, str) and key.startswith("module.") else key


def _check_keys_and_shapes(state, expected, path, what):
    """UserError unless `state` (name → shape) has exactly the keys and shapes of `expected`."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) such as '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) such as '{unexpected[0]}'")
        raise UserError(f"{path}: not {what} weights: {' and '.join(parts)}")
    for key, shape in expected.items():
        if tuple(state[key]) != tuple(shape):
            raise UserError(f"{path}: '{key}' has shape {tuple(state[key])}, but {what} needs {tuple(shape)}")


class _Expectations:
    """What the caller expects of a file, checked on what its pickle announces, before data is read."""

    def __init__(self, path, expected, what):
        self.path, self.expected, self.what = path, expected, what
        self.max_numbers = 2 * sum(int(np.prod(s)) for s in expected.values()) if expected else MAX_NUMBERS

    def check(self, state, storages):
        if not isinstance(state, dict) or not all(isinstance(v, (_Tensor, np.ndarray)) for v in state.values()):
            raise CheckpointError("it holds no state dict of tensors")
        if self.expected is not None:
            shapes = {_strip_data_parallel(k): v.shape for k, v in state.items()}
            _check_keys_and_shapes(shapes, self.expected, self.path, self.what)
        total = sum(s.numel for s in storages.values())
        if total > self.max_numbers:
            needs = f"{self.what} needs (twice its size)" if self.expected else "any MCCNet file holds"
            raise CheckpointError(f"it announces {total:,} numbers, more than the {self.max_numbers:,} {needs}")


def read_state_dict(path, expected=None, what="the network's"):
    """The name → array mapping stored in a `.pth` or `.pkl` file (format recognised from the content).

    `expected` (name → shape) makes the check strict: the same keys and shapes, or a
    UserError naming the first difference, raised before the data is read. A `module.`
    prefix left by PyTorch's DataParallel is removed. Every array must be finite.
    """
    regular_file(path)
    try:
        state = _layout(path)(path, _Expectations(path, expected, what))
        arrays = OrderedDict((_strip_data_parallel(k), v.array() if isinstance(v, _Tensor) else np.array(v))
                             for k, v in state.items())
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 -- whatever the parser met, the file is not a checkpoint
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"{path}: not a readable PyTorch or Jittor checkpoint ({reason})")
    for key, value in arrays.items():
        if value.dtype.kind not in NUMERIC_KINDS:
            raise UserError(f"{path}: '{key}' is an array of {value.dtype}, not numbers")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise UserError(f"{path}: '{key}' holds NaN or infinite values (a training that diverged?); "
                            "refusing to use it")
    return arrays


def load_weights(module, path, what="the"):
    """Load a checkpoint into a Jittor module, strictly; `what` names the network in errors."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    state = read_state_dict(path, expected, what)
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


class _StorageToWrite:
    def __init__(self, array):
        self.array = array


class _TensorToWrite:
    """Pickles as PyTorch pickles a contiguous CPU tensor."""

    def __init__(self, array):
        self.array = np.ascontiguousarray(array)

    def __reduce__(self):
        shape = self.array.shape
        strides = tuple(s // self.array.itemsize for s in self.array.strides)
        return _REBUILD_TENSOR_V2, (_StorageToWrite(self.array), 0, shape, strides, False, OrderedDict())


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
        if not isinstance(obj, _StorageToWrite):
            return None
        self.storages.append(obj.array)
        return ("storage", _STORAGE_TYPES[obj.array.dtype], str(len(self.storages) - 1), "cpu", obj.array.size)


def _pth_bytes(state):
    """A state dict in PyTorch's zip format, as `torch.save` writes it."""
    pickled = io.BytesIO()
    pickler = _TorchPickler(pickled)
    pickler.dump(OrderedDict((k, _TensorToWrite(v)) for k, v in state.items()))
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


def write_state_dict(state, path):
    """Write name → array as `.pth` (PyTorch's format) or `.pkl` (Jittor's), by the extension; atomically."""
    arrays = OrderedDict((k, np.asarray(v)) for k, v in state.items())
    if path.endswith((".pth", ".pt")):
        write_atomically(path, _pth_bytes(arrays))
    elif path.endswith(".pkl"):
        write_atomically(path, _pkl_bytes(arrays))
    else:
        raise UserError(f"{path}: the name must end in .pth (PyTorch) or .pkl (Jittor)")


def save_weights(module, path):
    write_state_dict(OrderedDict((k, v.numpy()) for k, v in module.state_dict().items()), path)


def main(argv=None):
    parser = ArgumentParser(description="Convert MCCNet weights between PyTorch .pth and Jittor .pkl; "
                                        "the numbers are copied bit for bit.")
    parser.add_argument("source", help="a .pth or .pkl checkpoint")
    parser.add_argument("target", help="where to write it; .pth or .pkl by the extension")
    args = parser.parse_args(argv)
    state = read_state_dict(args.source)
    write_state_dict(state, args.target)
    print(f"{args.source} -> {args.target}: {len(state)} tensors, "
          f"{sum(v.size for v in state.values()):,} numbers", file=sys.stderr)


if __name__ == "__main__":
    run(main)
