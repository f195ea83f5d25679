"""Read checkpoint files without importing torch, and load their tensors into Flax parameter trees.

Three file formats:

* **safetensors**: ``u64 n`` + ``n`` bytes of JSON header ``{name: {dtype, shape, data_offsets}}`` + raw
  little-endian data; read here with numpy (memory-mapped), bfloat16 through ``ml_dtypes``.
* **PyTorch zip** (``torch.save`` since 1.6, ``.bin``/``.pth``/``.pt``): a zip holding ``<root>/data.pkl``
  (a pickle whose tensors point, through persistent ids, at storages) and ``<root>/data/<key>`` (the raw
  bytes of each storage). The pickle is read by a *restricted* unpickler: the only globals it resolves
  are the tensor-rebuild functions, storage types and dtypes of torch (mapped to our own numpy code),
  and ``collections.OrderedDict``. Any other global is refused with an error naming it, so a malicious
  checkpoint cannot construct arbitrary objects or run code. Globals the caller names as *inert*
  (e.g. ``argparse.Namespace`` in a training checkpoint) become an :class:`InertRecord` holding the
  module, name, arguments and state: a record, never an instance of the named class.
* **CTranslate2** ``model.bin`` (faster-whisper's format): little-endian ``u32 version`` (4..6 read here),
  the spec name and ``u32 revision`` (version >= 2), ``u32 n``, then per variable its name, ``u8 rank``,
  ``u32`` dims, ``u8 dtype`` (float32, int8, int16, int32, float16, bfloat16) and ``u32 bytes`` followed
  by the raw data; then ``u32`` aliases as (alias, target) name pairs (a variable equal to an
  alphabetically earlier one is stored once). Strings are ``u16 length`` (with the NUL) + bytes + NUL.

Loading: :func:`load_params` fills a parameter template from a state dict through a ``rename`` function
(torch key -> Flax path + transform) and raises one :class:`CheckpointMismatch` listing every missing,
unexpected and mis-shaped weight.
"""

from __future__ import annotations

import collections
import json
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jax
import ml_dtypes
import numpy as np

# torch storage class / dtype name -> numpy dtype. Floats the checkpoints hold, plus integers and bool
# (buffers such as position ids).
_TORCH_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "half": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float64": np.dtype(np.float64),
    "double": np.dtype(np.float64),
    "int64": np.dtype(np.int64),
    "long": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "short": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": _TORCH_DTYPES["float32"],
    "HalfStorage": _TORCH_DTYPES["float16"],
    "BFloat16Storage": _TORCH_DTYPES["bfloat16"],
    "DoubleStorage": _TORCH_DTYPES["float64"],
    "LongStorage": _TORCH_DTYPES["int64"],
    "IntStorage": _TORCH_DTYPES["int32"],
    "ShortStorage": _TORCH_DTYPES["int16"],
    "CharStorage": _TORCH_DTYPES["int8"],
    "ByteStorage": _TORCH_DTYPES["uint8"],
    "BoolStorage": _TORCH_DTYPES["bool"],
    "UntypedStorage": _TORCH_DTYPES["uint8"],
}
_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F32": _TORCH_DTYPES["float32"],
    "F16": _TORCH_DTYPES["float16"],
    "BF16": _TORCH_DTYPES["bfloat16"],
    "F64": _TORCH_DTYPES["float64"],
    "I64": _TORCH_DTYPES["int64"],
    "I32": _TORCH_DTYPES["int32"],
    "I16": _TORCH_DTYPES["int16"],
    "I8": _TORCH_DTYPES["int8"],
    "U8": _TORCH_DTYPES["uint8"],
    "BOOL": _TORCH_DTYPES["bool"],
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely or is not what was expected."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint whose weights do not fit the model: lists every problem at once."""


# ---------------------------------------------------------------------------------------------------
# safetensors


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file as numpy arrays (memory-mapped, read-only).

    The header is checked before any data is touched: its length fits the file, it is a JSON object of
    ``{dtype, shape, data_offsets}`` entries, every tensor's byte range ``[begin, end)`` holds exactly
    prod(shape) x itemsize bytes inside the data section, and no two ranges overlap. Anything else is a
    :class:`CheckpointError` naming the file, the tensor and the field.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{path}: header length {n} exceeds the {size - 8} bytes after it (not a "
                                  "safetensors file, or a truncated one)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: safetensors header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is a JSON {type(header).__name__}, expected an object")
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    ranges = []
    for name, info in header.items():
        if not (isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= set(info)):
            raise CheckpointError(f"{path}: tensor {name!r}: expected an entry with dtype, shape and data_offsets, "
                                  f"got {info!r}")
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {info['dtype']}; expected one of {sorted(_SAFETENSORS_DTYPES)}"
            )
        shape, offsets = info["shape"], info["data_offsets"]
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise CheckpointError(f"{path}: tensor {name!r}: shape {shape!r} is not a list of non-negative ints")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise CheckpointError(f"{path}: tensor {name!r}: data_offsets {offsets!r} are not [begin, end] with "
                                  f"0 <= begin <= end <= {data_size} (the data section's size)")
        expected = int(np.prod(shape)) * _SAFETENSORS_DTYPES[info["dtype"]].itemsize
        if offsets[1] - offsets[0] != expected:
            raise CheckpointError(f"{path}: tensor {name!r}: data_offsets {offsets} hold {offsets[1] - offsets[0]} "
                                  f"bytes; shape {shape} of {info['dtype']} needs {expected}")
        ranges.append((offsets[0], offsets[1], name))
    ranges.sort()
    for (_, end, first), (begin, _, second) in zip(ranges, ranges[1:]):
        if begin < end:
            raise CheckpointError(f"{path}: tensors {first!r} and {second!r}: data_offsets overlap")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if data_size else np.zeros(0, np.uint8)
    return {
        name: data[info["data_offsets"][0] : info["data_offsets"][1]]
        .view(_SAFETENSORS_DTYPES[info["dtype"]])
        .reshape(tuple(info["shape"]))
        for name, info in header.items()
    }


# ---------------------------------------------------------------------------------------------------
# PyTorch zip checkpoints


@dataclass(frozen=True)
class _Storage:
    """A torch storage: a flat numpy array of its dtype."""

    data: np.ndarray


@dataclass
class InertRecord:
    """A global the caller declared inert, recorded instead of built: ``module.name(*args)`` + state."""

    module: str
    name: str
    args: tuple = ()
    state: Any = None

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD lands here, never on a real class
        self.state = state


def _inert_type(module: str, name: str) -> type:
    """A type standing for ``module.name``: calling it (REDUCE) or ``__new__`` (NEWOBJ) gives a record."""

    def new(cls, *args, **kwargs):
        return InertRecord(module, name, args, kwargs or None)

    return type(f"Inert_{name}", (), {"__new__": new})


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *rest: Any) -> np.ndarray:
    """numpy twin of ``torch._utils._rebuild_tensor_v2`` (rest: requires_grad, hooks[, metadata])."""
    metadata = rest[2] if len(rest) > 2 else None
    if metadata:
        raise CheckpointError(f"tensor with metadata {metadata!r} (conjugate/negative views) is not supported")
    return _view(storage.data, offset, size, stride)


def _rebuild_tensor_v3(storage: _Storage, offset: int, size: tuple, stride: tuple, requires_grad: bool,
                       hooks: Any, dtype: np.dtype, metadata: Any = None) -> np.ndarray:
    """numpy twin of ``torch._utils._rebuild_tensor_v3``: the storage is untyped bytes, `dtype` says how to read."""
    if metadata:
        raise CheckpointError(f"tensor with metadata {metadata!r} (conjugate/negative views) is not supported")
    return _view(storage.data.view(dtype), offset, size, stride)


def _view(flat: np.ndarray, offset: int, size: tuple, stride: tuple) -> np.ndarray:
    """The tensor ``flat[offset + sum_i idx_i * stride_i]`` of shape `size`, copied to a contiguous array."""
    size, stride = tuple(size), tuple(stride)
    if size and (min(size) > 0):
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if offset < 0 or min(stride) < 0 or last >= flat.size:
            raise CheckpointError(f"tensor of size {size}, stride {stride}, offset {offset} overruns its storage")
    base = flat[offset:]
    item = flat.dtype.itemsize
    return np.array(np.lib.stride_tricks.as_strided(base, size, [s * item for s in stride]))


def _rebuild_parameter(data: np.ndarray, *rest: Any) -> np.ndarray:
    """``torch._utils._rebuild_parameter[_with_state]``: a Parameter is its data here."""
    return data


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): dtype for name, dtype in _TORCH_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals above (plus storage types and the caller's inert globals)."""

    def __init__(self, file: Any, storage: Callable[[str, np.dtype, int], np.ndarray],
                 inert_globals: frozenset[str], source: str):
        super().__init__(file)
        self._storage = storage
        self._inert = inert_globals
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if f"{module}.{name}" in self._inert:
            return _inert_type(module, name)
        raise CheckpointError(
            f"{self._source}: refuses the global {module}.{name}: only tensors and plain containers are read "
            f"(pass inert_globals={{'{module}.{name}'}} to record it without constructing it, if you trust it)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise CheckpointError(f"{self._source}: unexpected persistent id {pid!r}; expected a torch storage")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, np.dtype):
            raise CheckpointError(f"{self._source}: storage {key!r} has type {dtype!r}; expected a storage type")
        return _Storage(self._storage(str(key), dtype, int(numel)))


def read_torch_file(path: str | Path, inert_globals: Iterable[str] = ()) -> Any:
    """The object a ``torch.save`` zip file holds, as dicts/lists/tuples of numpy arrays.

    `inert_globals` names globals (``"argparse.Namespace"``) to keep as :class:`InertRecord`; any other
    global besides tensors, dtypes and ``OrderedDict`` raises :class:`CheckpointError` naming it.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a zip file; expected a PyTorch checkpoint saved by torch>=1.6 (the legacy format is not read)"
        )
    with zipfile.ZipFile(path) as zf:
        pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one <root>/data.pkl in the zip, found {pickles or 'none'}")
        root = pickles[0][: -len("data.pkl")]
        little = zf.read(root + "byteorder") != b"big" if root + "byteorder" in zf.namelist() else True
        cache: dict[str, np.ndarray] = {}

        def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            if key not in cache:
                cache[key] = _read_record(path, zf, f"{root}data/{key}", dtype, numel, little)
            return cache[key]

        return _RestrictedUnpickler(zf.open(pickles[0]), storage, frozenset(inert_globals), str(path)).load()


def _read_record(path: Path, zf: zipfile.ZipFile, name: str, dtype: np.dtype, numel: int,
                 little: bool) -> np.ndarray:
    """The storage `name` as a flat array: memory-mapped where stored uncompressed (torch's way)."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: storage record {name!r} is missing") from None
    if info.file_size != numel * dtype.itemsize:
        raise CheckpointError(f"{path}: {name} holds {info.file_size} bytes; expected {numel} x {dtype}")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if numel:
            flat = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(info.file_size,))
        else:
            flat = np.zeros(0, np.uint8)
    else:
        flat = np.frombuffer(zf.read(name), dtype=np.uint8)
    flat = flat.view(dtype)
    return flat if little else flat.byteswap()


# ---------------------------------------------------------------------------------------------------
# CTranslate2 model.bin

_CT2_DTYPES = (np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32),
               np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))  # by CTranslate2's type id
_CT2_VERSIONS = range(4, 7)


@dataclass(frozen=True)
class CTranslate2Model:
    """A CTranslate2 model.bin: its spec name and revision, and every variable (aliases resolved)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]


def read_ctranslate2(path: str | Path) -> CTranslate2Model:
    """The variables of a CTranslate2 ``model.bin`` as numpy arrays (memory-mapped, read-only).

    Every length is checked against the file before it is used: a truncated file, an unknown binary
    version or dtype id, a byte count that does not match the shape, or an alias to no variable is a
    :class:`CheckpointError` naming the file and the variable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    pos = 0

    def take(n: int, what: str) -> np.ndarray:
        nonlocal pos
        if pos + n > data.size:
            raise CheckpointError(f"{path}: ends inside {what} (byte {pos} + {n} > {data.size}): a truncated file")
        pos += n
        return data[pos - n: pos]

    def uint(fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt), what).tobytes())[0]

    def string(what: str) -> str:
        raw = take(uint("H", what), what).tobytes()
        if not raw.endswith(b"\0"):
            raise CheckpointError(f"{path}: {what} is not a NUL-terminated string")
        return raw[:-1].decode("utf-8", errors="replace")

    version = uint("I", "the binary version")
    if version not in _CT2_VERSIONS:
        raise CheckpointError(f"{path}: CTranslate2 binary version {version}; expected {_CT2_VERSIONS[0]}.."
                              f"{_CT2_VERSIONS[-1]} (not a CTranslate2 model.bin, or one this reader does not know)")
    spec, revision = string("the spec name"), uint("I", "the spec revision")
    variables: dict[str, np.ndarray] = {}
    for i in range(uint("I", "the variable count")):
        name = string(f"the name of variable {i}")
        shape = tuple(uint("I", f"{name}'s shape") for _ in range(uint("B", f"{name}'s rank")))
        type_id = uint("B", f"{name}'s dtype")
        if type_id >= len(_CT2_DTYPES):
            raise CheckpointError(f"{path}: variable {name!r} has dtype id {type_id}; "
                                  f"expected 0..{len(_CT2_DTYPES) - 1}")
        dtype = _CT2_DTYPES[type_id]
        size = uint("I", f"{name}'s byte count")
        if size != int(np.prod(shape)) * dtype.itemsize:
            raise CheckpointError(f"{path}: variable {name!r} holds {size} bytes; shape {shape} of {dtype} "
                                  f"needs {int(np.prod(shape)) * dtype.itemsize}")
        variables[name] = take(size, f"variable {name!r}").view(dtype).reshape(shape)
    for _ in range(uint("I", "the alias count")):
        alias, target = string("an alias"), string("an alias target")
        if target not in variables:
            raise CheckpointError(f"{path}: alias {alias!r} points at {target!r}, which is no variable")
        variables[alias] = variables[target]
    return CTranslate2Model(spec, revision, variables)


# ---------------------------------------------------------------------------------------------------
# state dicts


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Flat ``{name: array}`` of a .safetensors file or a PyTorch zip (.bin/.pth/.pt) state dict.

    A torch file holding ``{"state_dict": {...}}`` or ``{"model": {...}}`` (training checkpoints) is
    unwrapped when that is its only dict of arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = [v for k, v in obj.items() if k in ("state_dict", "model") and _is_state_dict(v)]
        if len(inner) == 1:
            obj = inner[0]
    if not _is_state_dict(obj):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of name -> tensor")
    return dict(obj)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())


def fold_weight_norm(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replace weight-norm pairs by the weight they stand for: ``w = g * v / ||v||``.

    Both forms: ``<m>.weight_g``/``<m>.weight_v`` (``torch.nn.utils.weight_norm``) and
    ``<m>.parametrizations.weight.original0``/``original1`` (its parametrization form). The norm of v
    is taken over every axis where g has size 1 (g keeps the axis named by ``dim``).
    """
    out = dict(state)
    forms = [("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1")]
    for g_suffix, v_suffix in forms:
        for g_key in [k for k in state if k == g_suffix or k.endswith("." + g_suffix)]:
            stem = g_key[: -len(g_suffix)]  # "" or "<module>."
            v_key = stem + v_suffix
            if v_key not in state:
                raise CheckpointMismatch(f"weight norm: {g_key} has no matching {v_key}")
            g = np.asarray(state[g_key], np.float32)
            v = np.asarray(state[v_key], np.float32)
            if g.ndim != v.ndim or any(a not in (1, b) for a, b in zip(g.shape, v.shape)):
                raise CheckpointMismatch(f"weight norm: {g_key} {g.shape} does not broadcast against {v_key} {v.shape}")
            axes = tuple(i for i, n in enumerate(g.shape) if n == 1)
            norm = np.sqrt(np.sum(v * v, axis=axes, keepdims=True))
            out[stem + "weight"] = (g * v / norm).astype(np.asarray(state[v_key]).dtype)
            del out[g_key], out[v_key]
    return out


def strip_prefix(state: Mapping[str, np.ndarray], prefixes: Iterable[str]) -> dict[str, np.ndarray]:
    """Remove the first of `prefixes` (``"wav2vec2."``, ...) that some key starts with, from every key having it."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    return dict(state)


def drop_keys(state: Mapping[str, np.ndarray], patterns: Iterable[str]) -> dict[str, np.ndarray]:
    """`state` without the keys matching any regex in `patterns` (heads the encoder never uses)."""
    compiled = [re.compile(p) for p in patterns]
    return {k: v for k, v in state.items() if not any(c.match(k) for c in compiled)}


# ---------------------------------------------------------------------------------------------------
# loading into a Flax parameter tree

Transform = Callable[[np.ndarray], np.ndarray]


def identity(x: np.ndarray) -> np.ndarray:
    return x


def linear_kernel(w: np.ndarray) -> np.ndarray:
    """torch Linear weight [out, in] -> Flax Dense kernel [in, out]."""
    return w.T


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch Conv1d weight [out, in/groups, k] -> Flax Conv kernel [k, in/groups, out]."""
    return w.transpose(2, 1, 0)


def load_params(template: Any, state: Mapping[str, np.ndarray],
                rename: Callable[[str], tuple[str, Transform] | None], source: str = "checkpoint",
                dtype: np.dtype = np.float32) -> Any:
    """Fill `template` (a pytree of arrays or ShapeDtypeStructs, e.g. from ``jax.eval_shape(model.init, ...)``)
    with the tensors of `state`.

    `rename(torch_key)` gives the Flax path (``"/"``-joined dict keys, e.g. ``"encoder/layer_0/q/kernel"``)
    and a transform, or None for a key the model does not know. Raises one :class:`CheckpointMismatch`
    listing every missing, unexpected and mis-shaped weight.
    """
    wanted = {"/".join(str(getattr(k, "key", k)) for k in path): leaf
              for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]}
    found: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    misshaped: dict[str, str] = {}  # Flax path -> description
    for key in sorted(state):
        target = rename(key)
        if target is None or target[0] not in wanted:
            unexpected.append(key)
            continue
        flax_path, transform = target
        if flax_path in origin:
            raise CheckpointMismatch(f"{source}: {origin[flax_path]} and {key} both map to {flax_path}")
        origin[flax_path] = key
        value = transform(np.asarray(state[key]))
        expected = tuple(wanted[flax_path].shape)
        if tuple(value.shape) != expected:
            misshaped[flax_path] = f"{key} -> {flax_path}: {tuple(value.shape)} (expected {expected})"
        else:
            found[flax_path] = value.astype(dtype, copy=False)
    missing = [p for p in wanted if p not in origin]
    if missing or unexpected or misshaped:
        lines = [f"{source}: weights do not match the model"]
        problems = (("missing", missing), ("unexpected", unexpected), ("mis-shaped", list(misshaped.values())))
        for title, items in problems:
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise CheckpointMismatch("\n".join(lines))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), [found[p] for p in wanted])
