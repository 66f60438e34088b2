"""Tests for the weight-file readers in fastgpt.loaders.

Covers: round trips against the reference `safetensors` package (both directions),
exact F16/BF16 widening, zero-copy read-only views of the map, one test per kind of
corrupt header (files built byte by byte), Git LFS pointers, sharded checkpoints,
pytorch_model.bin via torch (skipped without it), and the folder search.
"""

import json
import mmap
import struct
import sys

import numpy as np
import pytest

from fastgpt.loaders.errors import (
    CheckpointIndexError,
    CheckpointNotFoundError,
    WeightsError,
    WeightsFormatError,
)
from fastgpt.loaders.files import WEIGHT_FILE_NAMES, find_weights_file, load_checkpoint_tensors
from fastgpt.loaders.safetensors import (
    SafetensorsError,
    read_metadata,
    read_safetensors,
    write_safetensors,
)
from fastgpt.loaders.torch_bin import read_torch_bin

LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4b0a3c9f2d1e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a\n"
    b"size 548105171\n"
)


def _sample_tensors(seed=0):
    """Awkward shapes on purpose: scalar, empty, odd sizes, every plain dtype."""
    rng = np.random.default_rng(seed)
    return {
        "wte": rng.standard_normal((7, 5)).astype(np.float32),
        "h.0.ln_1.bias": rng.standard_normal(63).astype(np.float32),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "half": rng.standard_normal((3, 3)).astype(np.float16),
        "double": rng.standard_normal(3),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "u8": np.arange(5, dtype=np.uint8),
        "i32": np.arange(-3, 4, dtype=np.int32),
        "i64": np.array([2**40, -1], dtype=np.int64),
        "mask": np.array([[True, False], [False, True]]),
    }


def _expected(arr):
    """What read_safetensors promises for a stored array: F16 widened, the rest as is."""
    return arr.astype(np.float32) if arr.dtype == np.float16 else arr


def _assert_bitwise_equal(got, want, name):
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    g = np.ascontiguousarray(got).view(np.uint8)
    w = np.ascontiguousarray(want).view(np.uint8)
    assert np.array_equal(g, w), f"{name}: bytes differ; first values {got.ravel()[:4]} vs {want.ravel()[:4]}"


def _raw_file(path, header, data=b"", header_len=None):
    """Write a safetensors file byte by byte: u64 length, header, data.

    ``header`` may be a dict (JSON-encoded) or raw bytes; ``header_len`` overrides the
    length prefix to lie about it.
    """
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(header_bytes) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + header_bytes + data)
    return path


def _f32_entry(begin, n):
    return {"dtype": "F32", "shape": [n], "data_offsets": [begin, begin + 4 * n]}


# --- round trips ------------------------------------------------------------------


def test_reads_files_written_by_safetensors_package(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = _sample_tensors()
    path = tmp_path / "ref.safetensors"
    st_numpy.save_file(tensors, str(path), metadata={"format": "np"})

    got = read_safetensors(path)

    assert sorted(got) == sorted(tensors)
    for name, arr in tensors.items():
        _assert_bitwise_equal(got[name], _expected(arr), name)
    assert read_metadata(path) == {"format": "np"}


def test_f16_is_widened_exactly(tmp_path):
    # Every finite and special float16 bit pattern, so no rounding case is missed.
    all_f16 = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    path = tmp_path / "f16.safetensors"
    write_safetensors(path, {"x": all_f16})

    got = read_safetensors(path)["x"]

    want = all_f16.astype(np.float32)
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # NaN payloads too


def test_bf16_matches_torch_conversion(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    # Every bfloat16 bit pattern: normals, subnormals, +-0, +-inf, NaNs.
    bits = torch.arange(2**16, dtype=torch.int32).to(torch.int16)
    t = bits.view(torch.bfloat16).reshape(256, 256)
    path = tmp_path / "bf16.safetensors"
    st_torch.save_file({"w": t}, str(path))

    got = read_safetensors(path)["w"]

    want = t.to(torch.float32).numpy()
    assert got.dtype == np.float32 and got.shape == (256, 256)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), "BF16 widening differs from torch"
    assert not got.flags.writeable


def test_written_files_load_with_safetensors_package(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    tensors = _sample_tensors(seed=1)
    tensors["fortran"] = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    tensors["big_endian"] = np.arange(4, dtype=">f4")
    path = tmp_path / "ours.safetensors"
    write_safetensors(path, tensors, metadata={"format": "np", "note": "fastgpt"})

    theirs = st_numpy.load_file(str(path))
    ours = read_safetensors(path)

    for name, arr in tensors.items():
        native = arr.astype(arr.dtype.newbyteorder("="))
        np.testing.assert_array_equal(theirs[name], native, err_msg=name)
        _assert_bitwise_equal(ours[name], _expected(native), name)
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"format": "np", "note": "fastgpt"}
    assert read_metadata(path) == {"format": "np", "note": "fastgpt"}


def test_written_header_is_padded_and_views_are_aligned(tmp_path):
    tensors = {"a_byte": np.arange(3, dtype=np.int8), "b_f32": np.ones(5, np.float32),
               "c_f64": np.ones(3, np.float64), "d_i16": np.ones(1, np.int16)}
    path = tmp_path / "aligned.safetensors"
    write_safetensors(path, tensors)

    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert header_len % 8 == 0
    for name, arr in read_safetensors(path).items():
        assert arr.flags.aligned, f"{name} is not aligned in the file"


def test_write_bf16_from_uint16_bits(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    values = np.array([1.0, -2.5, 3.140625, 0.0, np.inf], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # exact: values are bf16-representable
    path = tmp_path / "bf16_out.safetensors"
    write_safetensors(path, {"w": bits}, dtypes={"w": "BF16"})

    theirs = st_torch.load_file(str(path))["w"]
    assert theirs.dtype == torch.bfloat16
    np.testing.assert_array_equal(theirs.to(torch.float32).numpy(), values)
    np.testing.assert_array_equal(read_safetensors(path)["w"], values)


@pytest.mark.parametrize(
    "tensors, kwargs, error, match",
    [
        ({"x": np.ones(2, np.float32)}, {"dtypes": {"x": "BF16"}}, ValueError, "cannot write a float32"),
        ({"x": np.ones(2, np.float32)}, {"dtypes": {"y": "F32"}}, ValueError, "not being written"),
        ({"x": np.ones(2, np.complex64)}, {}, TypeError, "complex64"),
        ({"x": [1.0, 2.0]}, {}, TypeError, "numpy.ndarray"),
        ({"__metadata__": np.ones(1, np.float32)}, {}, ValueError, "__metadata__"),
        ({"x": np.ones(1, np.float32)}, {"metadata": {"k": 1}}, TypeError, "str -> str"),
    ],
)
def test_write_rejects_bad_input(tmp_path, tensors, kwargs, error, match):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(error, match=match):
        write_safetensors(path, tensors, **kwargs)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == [], "a failed write left a file behind"


def test_overwrite_keeps_old_views_valid(tmp_path):
    # The writer renames a new file into place, so a live map of the old one is safe.
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {"x": np.full(4, 1.0, np.float32)})
    old = read_safetensors(path)["x"]
    write_safetensors(path, {"x": np.full(2, 2.0, np.float32)})
    np.testing.assert_array_equal(old, np.full(4, 1.0, np.float32))
    np.testing.assert_array_equal(read_safetensors(path)["x"], np.full(2, 2.0, np.float32))


# --- zero-copy views ----------------------------------------------------------------


def _base_chain(arr):
    chain, obj = [], arr
    while obj is not None:
        chain.append(obj)
        obj = getattr(obj, "base", None) if isinstance(obj, np.ndarray) else getattr(obj, "obj", None)
    return chain


def test_f32_tensors_are_read_only_views_of_the_map(tmp_path):
    path = tmp_path / "view.safetensors"
    write_safetensors(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                             "b": np.ones(4, np.int64), "h": np.ones(2, np.float16)})
    got = read_safetensors(path)
    a, b = got["a"], got["b"]

    assert not a.flags.writeable and not b.flags.writeable
    assert not got["h"].flags.writeable  # converted copies follow the same contract
    assert any(isinstance(o, mmap.mmap) for o in _base_chain(a)), _base_chain(a)
    assert not any(isinstance(o, mmap.mmap) for o in _base_chain(got["h"]))
    roots = {id(_base_chain(a)[-1]), id(_base_chain(b)[-1])}
    assert len(roots) == 1, "tensors of one file should share one map"
    with pytest.raises(ValueError, match="read-only"):
        a[0, 0] = 1.0


def test_view_outlives_everything_else(tmp_path):
    import gc

    path = tmp_path / "alive.safetensors"
    write_safetensors(path, {"a": np.arange(1024, dtype=np.float32), "b": np.ones(3, np.float32)})
    a = read_safetensors(path)["a"]  # the dict and the other views are dropped here
    gc.collect()
    np.testing.assert_array_equal(a, np.arange(1024, dtype=np.float32))


# --- corrupt files ----------------------------------------------------------------

_DATA_16 = np.arange(4, dtype=np.float32).tobytes()  # 16 bytes

_CORRUPT = {
    # name: (header (dict or bytes), data, header_len override, message fragment)
    "short_file": (None, None, None, "shorter than the 8-byte"),
    "absurd_header_len": ({"x": _f32_entry(0, 4)}, _DATA_16, 2**40, "exceeds"),
    "header_len_past_file": ({"x": _f32_entry(0, 4)}, _DATA_16, 10_000, "larger than the"),
    "invalid_json": (b'{"x": {"dtype": "F32",', _DATA_16, None, "not valid JSON"),
    "invalid_utf8": (b'{"\xff\xfe": 1}', b"", None, "UTF-8"),
    "not_an_object": (b"[1, 2, 3]", b"", None, "must be a JSON object"),
    "duplicate_tensor": (b'{"x": {}, "x": {}}', b"", None, "duplicate keys"),
    "entry_not_object": ({"x": [0, 16]}, _DATA_16, None, "'x'.*entry must be a JSON object"),
    "missing_dtype": ({"x": {"shape": [4], "data_offsets": [0, 16]}}, _DATA_16, None, "'x'.*no 'dtype'"),
    "unknown_dtype": ({"x": {"dtype": "F8_E4M3", "shape": [16], "data_offsets": [0, 16]}},
                      _DATA_16, None, "'x'.*unknown dtype 'F8_E4M3'"),
    "negative_dim": ({"x": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}},
                     _DATA_16, None, "'x'.*non-negative ints"),
    "bool_dim": ({"x": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}},
                 _DATA_16, None, "'x'.*non-negative ints"),
    "float_offset": ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16.0]}},
                     _DATA_16, None, "'x'.*data_offsets must be"),
    "begin_after_end": ({"x": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}},
                        _DATA_16, None, "'x'.*begin > end"),
    "shape_size_mismatch": ({"x": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}},
                            _DATA_16, None, "'x'.*span 16 bytes.*needs 24"),
    "overlap": ({"x": _f32_entry(0, 3), "y": _f32_entry(8, 2)}, _DATA_16, None,
                "'y'.*overlap tensor 'x'"),
    "outside_data": ({"x": _f32_entry(0, 4), "y": _f32_entry(16, 2)}, _DATA_16, None,
                     "'y'.*past the end of the data section"),
    "truncated_data": ({"x": _f32_entry(0, 4)}, _DATA_16[:10], None, "'x'.*past the end"),
    "metadata_not_str": ({"__metadata__": {"k": 1}}, b"", None, "__metadata__.*str -> str"),
    "lfs_pointer": (None, None, None, "Git LFS pointer.*git lfs pull"),
}


@pytest.mark.parametrize("case", sorted(_CORRUPT))
def test_corrupt_file_raises_naming_file_and_tensor(tmp_path, case):
    header, data, header_len, match = _CORRUPT[case]
    path = tmp_path / f"{case}.safetensors"
    if case == "short_file":
        path.write_bytes(b"\x10\x00\x00")
    elif case == "lfs_pointer":
        path.write_bytes(LFS_POINTER)
    else:
        _raw_file(path, header, data, header_len)

    with pytest.raises(SafetensorsError, match=match) as info:
        read_safetensors(path)
    print(f"{case}: {info.value}")
    assert str(path) in str(info.value)
    assert isinstance(info.value, WeightsError) and isinstance(info.value, ValueError)
    with pytest.raises(SafetensorsError, match=match):
        read_metadata(path)  # the header is validated there too


def test_truncated_real_file(tmp_path):
    path = tmp_path / "cut.safetensors"
    write_safetensors(path, {"a": np.ones(100, np.float32), "b": np.ones(100, np.float32)})
    path.write_bytes(path.read_bytes()[:-50])  # cut the data section
    with pytest.raises(SafetensorsError, match=r"tensor 'b'.*past the end") as info:
        read_safetensors(path)
    assert str(path) in str(info.value)


def test_hand_built_file_with_gap_and_zero_size_tensor(tmp_path):
    # Valid for us (gaps are harmless; zero-byte tensors overlap nothing).
    header = {"x": _f32_entry(0, 2), "z": {"dtype": "F32", "shape": [0, 5], "data_offsets": [4, 4]},
              "y": _f32_entry(12, 1), "__metadata__": {"a": "b"}}
    path = _raw_file(tmp_path / "gap.safetensors", header, _DATA_16)
    got = read_safetensors(path)
    np.testing.assert_array_equal(got["x"], [0.0, 1.0])
    np.testing.assert_array_equal(got["y"], [3.0])
    assert got["z"].shape == (0, 5)
    assert read_metadata(path) == {"a": "b"}


def test_header_only_file(tmp_path):
    path = _raw_file(tmp_path / "empty.safetensors", {"__metadata__": {"k": "v"}})
    assert read_safetensors(path) == {}
    assert read_metadata(path) == {"k": "v"}


# --- checkpoint folders -------------------------------------------------------------


def _write_sharded_safetensors(folder):
    rng = np.random.default_rng(2)
    shards = {
        "model-00001-of-00002.safetensors": {"wte.weight": rng.standard_normal((4, 3)).astype(np.float32),
                                             "wpe.weight": rng.standard_normal((5, 3)).astype(np.float32)},
        "model-00002-of-00002.safetensors": {"ln_f.weight": np.ones(3, np.float32),
                                             "ln_f.bias": np.zeros(3, np.float16)},
    }
    weight_map = {}
    for shard, tensors in shards.items():
        write_safetensors(folder / shard, tensors)
        weight_map.update({name: shard for name in tensors})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return {k: v for tensors in shards.values() for k, v in tensors.items()}


def test_single_file_checkpoint(tmp_path):
    tensors = _sample_tensors()
    write_safetensors(tmp_path / "model.safetensors", tensors)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read: safetensors wins")
    assert find_weights_file(tmp_path) == str(tmp_path / "model.safetensors")
    got = load_checkpoint_tensors(tmp_path)
    for name, arr in tensors.items():
        _assert_bitwise_equal(got[name], _expected(arr), name)


def test_sharded_safetensors_checkpoint(tmp_path):
    tensors = _write_sharded_safetensors(tmp_path)
    got = load_checkpoint_tensors(tmp_path)
    assert sorted(got) == sorted(tensors)
    for name, arr in tensors.items():
        _assert_bitwise_equal(got[name], _expected(arr), name)


def test_sharded_checkpoint_with_missing_shard(tmp_path):
    _write_sharded_safetensors(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointIndexError, match=r"missing.*model-00002-of-00002\.safetensors"):
        load_checkpoint_tensors(tmp_path)


def test_sharded_checkpoint_with_tensor_missing_from_shard(tmp_path):
    _write_sharded_safetensors(tmp_path)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["h.0.attn.c_attn.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointIndexError,
                       match=r"'h\.0\.attn\.c_attn\.weight'.*'model-00001-of-00002\.safetensors'"):
        load_checkpoint_tensors(tmp_path)


@pytest.mark.parametrize("index", [
    b"{not json",
    json.dumps({"metadata": {}}).encode(),
    json.dumps({"weight_map": {"x": "../elsewhere.safetensors"}}).encode(),
])
def test_bad_index_file(tmp_path, index):
    (tmp_path / "model.safetensors.index.json").write_bytes(index)
    with pytest.raises(CheckpointIndexError, match="model.safetensors.index.json"):
        load_checkpoint_tensors(tmp_path)


def test_empty_folder_names_what_was_looked_for(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFoundError) as info:
        load_checkpoint_tensors(tmp_path)
    msg = str(info.value)
    print(msg)
    assert str(tmp_path) in msg and "config.json" in msg
    for name in WEIGHT_FILE_NAMES:
        assert name in msg


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_checkpoint_tensors(tmp_path / "nope")


# --- pytorch_model.bin ------------------------------------------------------------


def test_torch_bin_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.linspace(-3, 3, 12).reshape(3, 4)
    state = {
        "f32": base.clone(),
        "f16": base.to(torch.float16),
        "bf16": base.to(torch.bfloat16),
        "transposed": base.t(),  # non-contiguous view in the pickle
        "i64": torch.arange(5),
        "mask": torch.tril(torch.ones(3, 3, dtype=torch.bool)),
    }
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)

    got = read_torch_bin(path)

    for name, t in state.items():
        want = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
        want = want.contiguous().numpy()
        _assert_bitwise_equal(got[name], want, name)
        assert not got[name].flags.writeable, name
        assert got[name].flags.c_contiguous, name
    assert sorted(load_checkpoint_tensors(tmp_path)) == sorted(state)


def test_sharded_torch_bin_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.zeros(3)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
        "a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}))
    got = load_checkpoint_tensors(tmp_path)
    np.testing.assert_array_equal(got["a"], np.ones(2, np.float32))
    np.testing.assert_array_equal(got["b"], np.zeros(3, np.float32))


def test_torch_bin_that_is_not_a_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    torch.save({"model": {"w": torch.ones(1)}, "step": 3}, path)
    with pytest.raises(WeightsFormatError, match="flat state dict"):
        read_torch_bin(path)
    path.write_bytes(b"garbage, not a zip or pickle")
    with pytest.raises(WeightsFormatError, match="torch.load"):
        read_torch_bin(path)


def test_torch_bin_without_torch(tmp_path, monkeypatch):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"PK\x03\x04 pretend zip")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(WeightsFormatError, match=r"needs torch.*pip install torch.*safetensors"):
        read_torch_bin(path)


def test_torch_bin_lfs_pointer(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(LFS_POINTER)
    with pytest.raises(WeightsFormatError, match="Git LFS pointer"):
        load_checkpoint_tensors(tmp_path)
