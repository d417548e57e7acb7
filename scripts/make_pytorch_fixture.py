#!/usr/bin/env python3
"""Write a `pytorch_model.bin` (the zip + pickle format of torch.save) from a safetensors
fixture, for the tests of SpeDec's restricted unpickler (crates/neox/src/pytorch.rs).

    python3 scripts/make_pytorch_fixture.py SRC.safetensors OUT.bin [--torch]

Without --torch (no torch needed) it writes the format itself with the standard library:
a ZIP_STORED archive `archive/` with `data.pkl` (pickle protocol 2: an OrderedDict of
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
OrderedDict())`, storages as persistent ids `('storage', torch.<T>Storage, key, 'cpu',
numel)`), `data/<key>` (raw little-endian storage bytes), `byteorder` and `version`, which is
what torch.save (>= 1.6, `_use_new_zipfile_serialization`) writes for a state dict. Two
extras exercise the reader: `embed_out.weight` is saved as a transposed view of a
column-major storage (strides (1, rows)), and the GPT-NeoX buffers `attention.bias`
(bool) and `attention.masked_bias` (a 0-d float) are added, as older checkpoints carry them.

With --torch it calls torch.save on the same tensors instead; the committed fixture
data/fixtures/pytorch/parallel-f16.bin was made that way (torch 2.15).
"""
import collections
import json
import struct
import sys
import types
import zipfile
import io
import pickle

DTYPE_SIZE = {"F16": 2, "BF16": 2, "F32": 4, "BOOL": 1}
STORAGE = {"F16": "HalfStorage", "BF16": "BFloat16Storage", "F32": "FloatStorage", "BOOL": "BoolStorage"}


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = collections.OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], body[b:e])
    return out


def with_extras(tensors):
    """The fixture's tensors plus the buffers older GPT-NeoX checkpoints carry."""
    out = collections.OrderedDict(tensors)
    layers = sorted({n.split(".")[2] for n in tensors if n.startswith("gpt_neox.layers.")})
    for l in layers:
        out[f"gpt_neox.layers.{l}.attention.bias"] = ("BOOL", [1, 1, 4, 4], bytes([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1]))
        out[f"gpt_neox.layers.{l}.attention.masked_bias"] = ("F32", [], struct.pack("<f", -1e9))
    return out


def transposed_storage(dtype, shape, raw):
    """Column-major bytes of a row-major [rows, cols] matrix, and its strides as a view."""
    rows, cols = shape
    size = DTYPE_SIZE[dtype]
    cells = [raw[i * size : (i + 1) * size] for i in range(rows * cols)]
    col_major = b"".join(cells[r * cols + c] for c in range(cols) for r in range(rows))
    return col_major, (1, rows)


def contiguous_strides(shape):
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def write_stdlib(tensors, out_path):
    # Stand-ins that pickle as the globals torch.save names (pickle checks that
    # module.qualname resolves to the object, so the fake modules are registered).
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    storage_classes = {}
    for dt, cls_name in STORAGE.items():
        cls = type(cls_name, (), {"__module__": "torch", "__qualname__": cls_name})
        setattr(torch, cls_name, cls)
        storage_classes[dt] = cls
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils

    class Storage:
        def __init__(self, key, dtype, raw):
            self.key, self.dtype, self.raw = key, dtype, raw

    class Tensor:
        def __init__(self, storage, shape, strides):
            self.storage, self.shape, self.strides = storage, shape, strides

        def __reduce__(self):
            return (
                _rebuild_tensor_v2,
                (self.storage, 0, tuple(self.shape), tuple(self.strides), False, collections.OrderedDict()),
            )

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                numel = len(obj.raw) // DTYPE_SIZE[obj.dtype]
                return ("storage", storage_classes[obj.dtype], obj.key, "cpu", numel)
            return None

    state = collections.OrderedDict()
    storages = []
    for i, (name, (dtype, shape, raw)) in enumerate(tensors.items()):
        if name == "embed_out.weight":
            raw, strides = transposed_storage(dtype, shape, raw)
        else:
            strides = contiguous_strides(shape)
        storage = Storage(str(i), dtype, raw)
        storages.append(storage)
        state[name] = Tensor(storage, shape, strides)
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(out_path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", b"little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.raw)
        z.writestr("archive/version", b"3\n")


def write_torch(tensors, out_path):
    import torch  # noqa: the real one

    dtypes = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "BOOL": torch.bool}
    state = collections.OrderedDict()
    for name, (dtype, shape, raw) in tensors.items():
        t = torch.frombuffer(bytearray(raw), dtype=dtypes[dtype]).reshape(shape) if raw else torch.empty(shape, dtype=dtypes[dtype])
        if name == "embed_out.weight":
            t = t.t().contiguous().t()  # same values, column-major storage
        state[name] = t
    torch.save(state, out_path)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    tensors = with_extras(read_safetensors(args[0]))
    if "--torch" in sys.argv:
        write_torch(tensors, args[1])
    else:
        write_stdlib(tensors, args[1])
    print(f"wrote {args[1]}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
