"""parrot_jax.encoders.checkpoints: safetensors and PyTorch zip files read without torch, safely."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest

from parrot_jax.encoders import checkpoints as ck


def _torch_zip(path: Path, pickled: bytes, storages: dict[str, bytes] | None = None) -> None:
    """A file laid out as torch.save lays it out: <root>/data.pkl + <root>/data/<key>."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        zf.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", raw)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.bin"
    _torch_zip(bad, pickle.dumps({"w": _RunsCode(marker)}, protocol=2))
    with pytest.raises(ck.CheckpointError, match=r"refuses the global (posix|nt)\.system"):
        ck.read_torch_file(bad)
    with pytest.raises(ck.CheckpointError, match=r"refuses the global"):
        ck.read_state_dict(bad)
    assert not marker.exists()


def test_arbitrary_class_is_refused_and_inert_globals_are_records(tmp_path):
    ns = argparse.Namespace(lr=0.1, layers=[1, 2])
    f = tmp_path / "ckpt.pth"
    _torch_zip(f, pickle.dumps({"args": ns, "epoch": 3}, protocol=2))
    with pytest.raises(ck.CheckpointError, match=r"argparse\.Namespace"):
        ck.read_torch_file(f)
    obj = ck.read_torch_file(f, inert_globals={"argparse.Namespace"})
    rec = obj["args"]
    assert isinstance(rec, ck.InertRecord) and not isinstance(rec, argparse.Namespace)
    assert (rec.module, rec.name, rec.state) == ("argparse", "Namespace", {"lr": 0.1, "layers": [1, 2]})
    assert obj["epoch"] == 3


def test_non_zip_and_missing_storage_are_clear_errors(tmp_path):
    legacy = tmp_path / "old.bin"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ck.CheckpointError, match=r"old\.bin: not a zip file"):
        ck.read_torch_file(legacy)
    with pytest.raises(FileNotFoundError, match=r"nope\.bin"):
        ck.read_state_dict(tmp_path / "nope.bin")


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (code, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_safetensors_dtypes_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": ("F32", rng.standard_normal((3, 4)).astype(np.float32)),
        "f16": ("F16", rng.standard_normal(5).astype(np.float16)),
        "bf16": ("BF16", rng.standard_normal((2, 2)).astype(ml_dtypes.bfloat16)),
        "i64": ("I64", np.arange(6, dtype=np.int64).reshape(2, 3)),
    }
    f = tmp_path / "m.safetensors"
    _write_safetensors(f, tensors)
    got = ck.read_state_dict(f)
    assert set(got) == set(tensors)
    for name, (_, arr) in tensors.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
        np.testing.assert_array_equal(got[name], arr)


def _raw_safetensors(path: Path, header: object, data: bytes, length: int | None = None) -> Path:
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head) if length is None else length) + head + data)
    return path


@pytest.mark.parametrize("header,length,message", [
    ({}, 1 << 40, r"header length 1099511627776 exceeds the 2 bytes after it"),
    ([1, 2], None, r"safetensors header is a JSON list, expected an object"),
    ({"w": {"dtype": "F32", "shape": [2]}}, None, r"tensor 'w': expected an entry with dtype, shape and data_offsets"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, None,
     r"tensor 'w': data_offsets \[-8, 0\] are not \[begin, end\] with 0 <= begin <= end <= 16"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 24]}}, None,
     r"tensor 'w': data_offsets \[8, 24\] are not \[begin, end\] with 0 <= begin <= end <= 16"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, None,
     r"tensor 'w': shape \[-2\] is not a list of non-negative ints"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, None,
     r"tensor 'w': data_offsets \[0, 8\] hold 8 bytes; shape \[3\] of F32 needs 12"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, None,
     r"tensors 'a' and 'b': data_offsets overlap"),
])  # fmt: skip
def test_malformed_safetensors_are_refused_naming_file_and_field(tmp_path, header, length, message):
    path = _raw_safetensors(tmp_path / "bad.safetensors", header, bytes(16) if length is None else b"", length)
    with pytest.raises(ck.CheckpointError, match=rf"bad\.safetensors: {message}"):
        ck.read_safetensors(path)


def test_fold_weight_norm_both_forms():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((6, 3, 5)).astype(np.float32)  # Conv1d [out, in/groups, k], weight_norm(dim=2)
    g = rng.standard_normal((1, 1, 5)).astype(np.float32)
    expected = g * v / np.sqrt((v**2).sum(axis=(0, 1), keepdims=True))
    for gk, vk in [("conv.weight_g", "conv.weight_v"),
                   ("conv.parametrizations.weight.original0", "conv.parametrizations.weight.original1")]:
        out = ck.fold_weight_norm({gk: g, vk: v, "conv.bias": np.zeros(6, np.float32)})
        assert set(out) == {"conv.weight", "conv.bias"}
        np.testing.assert_allclose(out["conv.weight"], expected, rtol=1e-6)


def test_prefix_and_heads():
    state = {"wav2vec2.a": 1, "wav2vec2.b": 2, "quantizer.codevectors": 3, "project_q.weight": 4}
    s = ck.drop_keys(ck.strip_prefix(state, ["hubert.", "wav2vec2."]), [r"quantizer\.", r"project_q\."])
    assert s == {"a": 1, "b": 2}


def test_load_params_lists_every_problem():
    template = {"dense": {"kernel": jax.ShapeDtypeStruct((3, 2), np.float32),
                          "bias": jax.ShapeDtypeStruct((2,), np.float32)},
                "norm": {"scale": jax.ShapeDtypeStruct((2,), np.float32)}}
    table = {"dense.weight": ("dense/kernel", ck.linear_kernel), "dense.bias": ("dense/bias", ck.identity),
             "norm.weight": ("norm/scale", ck.identity)}
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    ok = ck.load_params(template, {"dense.weight": w, "dense.bias": np.ones(2), "norm.weight": np.zeros(2)}, table.get)
    np.testing.assert_array_equal(ok["dense"]["kernel"], w.T)
    assert ok["dense"]["bias"].dtype == np.float32
    bad = {"dense.weight": w.T, "extra.weight": np.ones(1), "norm.weight": np.zeros(2)}
    with pytest.raises(ck.CheckpointMismatch) as e:
        ck.load_params(template, bad, table.get, source="m.bin")
    msg = str(e.value)
    assert "missing (1): dense/bias" in msg
    assert "unexpected (1): extra.weight" in msg
    assert "mis-shaped (1): dense.weight -> dense/kernel: (2, 3) (expected (3, 2))" in msg


@pytest.mark.slow
@pytest.mark.torch
def test_torch_saved_files_equal_torch_load(tmp_path):
    torch = pytest.importorskip("torch", reason="the live comparison with torch.load needs the `ref` extra")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    obj = {
        "f32": base,
        "view_t": base.t(),  # non-contiguous view sharing base's storage
        "slice": base[1:, 2:5],  # offset view
        "f16": torch.randn(3, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "i64": torch.arange(7),
        "param": torch.nn.Parameter(torch.randn(2, generator=g)),
        "nested": [torch.ones(2), (torch.zeros(1, 1), {"x": torch.tensor(3.5)})],
        "empty": torch.zeros(0, 3),
    }
    f = tmp_path / "t.pth"
    torch.save(obj, f)
    got = ck.read_torch_file(f)

    def check(a, b):
        if isinstance(b, torch.Tensor):
            ref = b.detach().float().numpy() if b.dtype == torch.bfloat16 else b.detach().numpy()
            assert isinstance(a, np.ndarray) and a.shape == ref.shape
            assert a.dtype == (ml_dtypes.bfloat16 if b.dtype == torch.bfloat16 else ref.dtype)
            np.testing.assert_array_equal(a.astype(ref.dtype), ref)
        elif isinstance(b, dict):
            assert set(a) == set(b)
            for k in b:
                check(a[k], b[k])
        else:
            assert type(a) is type(b) and len(a) == len(b)
            for x, y in zip(a, b):
                check(x, y)

    check(got, obj)
    sd = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)).state_dict()
    torch.save(sd, tmp_path / "sd.bin")
    got_sd = ck.read_state_dict(tmp_path / "sd.bin")
    assert list(got_sd) == list(sd)
    for k in sd:
        np.testing.assert_array_equal(got_sd[k], sd[k].numpy())


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_weight_norm_matches_torch_both_forms():
    torch = pytest.importorskip("torch", reason="the live comparison with torch's weight norm needs the `ref` extra")
    torch.manual_seed(0)
    old = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 6, 5, groups=2), name="weight", dim=2)
    new = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(4, 6, 5, groups=2), name="weight", dim=2)
    for m in (old, new):
        with torch.no_grad():
            for p in m.parameters():
                p.uniform_(-1, 1)
        sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}
        folded = ck.fold_weight_norm(sd)
        assert set(folded) == {"weight", "bias"}
        m(torch.zeros(1, 4, 5))  # the old form recomputes `weight` in its forward pre-hook
        np.testing.assert_allclose(folded["weight"], m.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
