"""The TensorFlow checkpoint V2 reader against TensorFlow's own view of a tiny checkpoint.

tests/data/tf-gpt2-tiny was written once by tools/make_tf_checkpoint.py with TensorFlow
(tf.compat.v1 Saver, OpenAI's variable names); expected.npz holds what TensorFlow listed and
read back. TensorFlow is not needed here. Corruptions are made by a small SSTable writer
(tests/tf_writer.py: the index format, written independently of the reader's parser).
"""

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fastgpt.loaders import WeightsError
from fastgpt.loaders.tf_checkpoint import (
    TFCheckpointError,
    TFCheckpointReader,
    _crc32c_ref,
    _mask_crc,
    crc32c,
    list_tf_checkpoint,
    read_tf_checkpoint,
    resolve_tf_checkpoint,
)
from tf_writer import bundle_header, entry, f32_entry, write_ckpt

DATA = Path(__file__).parent / "data" / "tf-gpt2-tiny"
EXPECTED = np.load(DATA / "expected.npz")


# --------------------------------------------------------------------------------------
# Against TensorFlow
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("tag, path", [("model", DATA), ("misc", DATA / "dtypes")])
def test_list_matches_tensorflow(tag, path):
    entries = list_tf_checkpoint(path)
    names = [str(n) for n in EXPECTED[f"{tag}_names"]]
    assert list(entries) == names                       # TF lists in key order too
    for name, shape, dtype in zip(names, EXPECTED[f"{tag}_shapes"], EXPECTED[f"{tag}_dtypes"]):
        assert list(entries[name].shape) == json.loads(str(shape)), name
        assert entries[name].dtype == np.dtype(str(dtype)), name


@pytest.mark.parametrize("path", [DATA, DATA / "dtypes"])
def test_values_match_tensorflow(path):
    tensors = read_tf_checkpoint(path)
    assert tensors
    for name, arr in tensors.items():
        want = EXPECTED[f"value:{name}"]
        assert arr.dtype == want.dtype and arr.shape == want.shape, name
        np.testing.assert_array_equal(arr, want, err_msg=name)
        assert not arr.flags.writeable, name


def test_openai_names_and_shapes():
    hp = json.loads((DATA / "hparams.json").read_text())
    C = hp["n_embd"]
    entries = list_tf_checkpoint(DATA)
    assert entries["model/h0/attn/c_attn/w"].shape == (1, C, 3 * C)
    assert entries["model/wte"].shape == (hp["n_vocab"], C)
    assert entries[f"model/h{hp['n_layer'] - 1}/mlp/c_proj/w"].shape == (1, 4 * C, C)
    assert len(entries) == 4 + 12 * hp["n_layer"]


def test_path_forms(tmp_path):
    prefix = str(DATA / "model.ckpt")
    assert resolve_tf_checkpoint(DATA) == prefix                         # via the checkpoint file
    assert resolve_tf_checkpoint(prefix) == prefix
    assert resolve_tf_checkpoint(prefix + ".index") == prefix
    # No state file: the only .index in the folder.
    copy = tmp_path / "copy"
    shutil.copytree(DATA, copy, ignore=shutil.ignore_patterns("checkpoint", "dtypes"))
    assert resolve_tf_checkpoint(copy) == str(copy / "model.ckpt")
    # A state file with an absolute path from another machine falls back to its base name.
    (copy / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/models/124M/model.ckpt"\n')
    assert resolve_tf_checkpoint(copy) == str(copy / "model.ckpt")
    shutil.copy(copy / "model.ckpt.index", copy / "other.ckpt.index")
    (copy / "checkpoint").unlink()
    with pytest.raises(TFCheckpointError, match="several checkpoints"):
        resolve_tf_checkpoint(copy)
    with pytest.raises(FileNotFoundError):
        resolve_tf_checkpoint(tmp_path / "nope" / "model.ckpt")


def test_no_tensorflow_import():
    read_tf_checkpoint(DATA, names=["model/wte"])
    assert "tensorflow" not in sys.modules


# --------------------------------------------------------------------------------------
# crc32c
# --------------------------------------------------------------------------------------

def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@pytest.mark.parametrize("n", [1, 3, 7, 63, 65, 1023, 4095, 4096, 4097, 65535, 65537, 100_003])
def test_crc32c_matches_reference(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c(data) == _crc32c_ref(data), n
    assert crc32c(np.frombuffer(data, np.uint8)) == _crc32c_ref(data)


# --------------------------------------------------------------------------------------
# Corruption and unsupported features: each a clear TFCheckpointError
# --------------------------------------------------------------------------------------

def _copy_ckpt(tmp_path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(DATA, folder, ignore=shutil.ignore_patterns("dtypes", "expected.npz"))
    return folder


def test_writer_round_trip(tmp_path):
    """The test's writer re-encodes the real entries; the reader gets TF's values back."""
    reader = TFCheckpointReader(DATA)
    entries = {e.name: entry(e.dtype_enum, e.shape, e.offset, e.size, crc=e.crc32c) for e in reader.entries.values()}
    prefix = write_ckpt(tmp_path / "rt", entries, (DATA / "model.ckpt.data-00000-of-00001").read_bytes())
    for name, arr in read_tf_checkpoint(prefix).items():
        np.testing.assert_array_equal(arr, EXPECTED[f"value:{name}"])


def test_bad_magic(tmp_path):
    folder = _copy_ckpt(tmp_path)
    index = folder / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0xFF
    index.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match="bad magic") as e:
        read_tf_checkpoint(folder)
    assert "model.ckpt.index" in str(e.value)
    assert isinstance(e.value, WeightsError) and isinstance(e.value, ValueError)


def test_truncated_index(tmp_path):
    folder = _copy_ckpt(tmp_path)
    index = folder / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-20])
    with pytest.raises(TFCheckpointError, match="magic"):
        read_tf_checkpoint(folder)
    index.write_bytes(b"\x00" * 10)
    with pytest.raises(TFCheckpointError, match="too short"):
        read_tf_checkpoint(folder)


def test_index_block_checksum(tmp_path):
    folder = _copy_ckpt(tmp_path)
    index = folder / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0x01                                     # inside the first data block
    index.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match="checksum mismatch"):
        read_tf_checkpoint(folder)


def test_compressed_block(tmp_path):
    a = np.arange(4, dtype=np.float32)
    prefix = write_ckpt(tmp_path, {"a": f32_entry(a, 0)}, a.tobytes(), compression=1)
    with pytest.raises(TFCheckpointError, match="snappy"):
        read_tf_checkpoint(prefix)


def test_data_checksum(tmp_path):
    folder = _copy_ckpt(tmp_path)
    data = folder / "model.ckpt.data-00000-of-00001"
    wte = TFCheckpointReader(folder).entries["model/wte"]
    raw = bytearray(data.read_bytes())
    raw[wte.offset + 5] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match="'model/wte'.*crc32c"):
        read_tf_checkpoint(folder, names=["model/wte"])
    # Without verification the (corrupted) bytes come back.
    arr = read_tf_checkpoint(folder, names=["model/wte"], verify_checksums=False)["model/wte"]
    assert not np.array_equal(arr, EXPECTED["value:model/wte"])


def test_offset_out_of_range(tmp_path):
    a = np.arange(6, dtype=np.float32)
    prefix = write_ckpt(tmp_path, {"a": f32_entry(a, 16)}, a.tobytes())
    with pytest.raises(TFCheckpointError, match="'a'.*outside"):
        read_tf_checkpoint(prefix)


def test_size_mismatch(tmp_path):
    a = np.arange(6, dtype=np.float32)
    prefix = write_ckpt(tmp_path, {"a": entry(1, (2, 3), 0, 20)}, a.tobytes())
    with pytest.raises(TFCheckpointError, match=r"'a'.*size 20 bytes != prod"):
        list_tf_checkpoint(prefix)


def test_unsupported_dtype_and_slices(tmp_path):
    a = np.arange(4, dtype=np.float32)
    entries = {"a": f32_entry(a, 0), "s": entry(7, (), 0, 3)}
    prefix = write_ckpt(tmp_path / "str", entries, a.tobytes())
    assert set(list_tf_checkpoint(prefix)) == {"a", "s"}
    np.testing.assert_array_equal(read_tf_checkpoint(prefix, names=["a"])["a"], a)
    with pytest.raises(TFCheckpointError, match="'s' has dtype string"):
        read_tf_checkpoint(prefix)
    with pytest.raises(KeyError):
        read_tf_checkpoint(prefix, names=["missing"])
    prefix = write_ckpt(tmp_path / "sliced", {"a": f32_entry(a, 0, sliced=True)}, a.tobytes())
    with pytest.raises(TFCheckpointError, match="partitioned"):
        read_tf_checkpoint(prefix)


def test_header_checks(tmp_path):
    a = np.arange(4, dtype=np.float32)
    entries = {"a": f32_entry(a, 0)}
    prefix = write_ckpt(tmp_path / "new", entries, a.tobytes(), header=bundle_header(min_consumer=7))
    with pytest.raises(TFCheckpointError, match="newer TensorFlow"):
        read_tf_checkpoint(prefix)
    prefix = write_ckpt(tmp_path / "shard", {"a": f32_entry(a, 0, shard=1)}, a.tobytes())
    with pytest.raises(TFCheckpointError, match="shard 1"):
        read_tf_checkpoint(prefix)


def test_missing_shard(tmp_path):
    folder = _copy_ckpt(tmp_path)
    (folder / "model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(TFCheckpointError, match="data-00000-of-00001.*missing"):
        read_tf_checkpoint(folder)


def test_big_endian_and_bfloat16(tmp_path):
    a = np.linspace(-2, 3, 6, dtype=np.float32).reshape(2, 3)
    be = a.astype(">f4").tobytes()
    bits = (a.view(np.uint32) >> 16).astype(">u2").tobytes()          # bfloat16: the top 16 bits
    entries = {"a": entry(1, (2, 3), 0, len(be), crc=_mask_crc(crc32c(be))),
               "b": entry(14, (2, 3), len(be), len(bits), crc=_mask_crc(crc32c(bits)))}
    prefix = write_ckpt(tmp_path, entries, be + bits, header=bundle_header(endianness=1))
    out = read_tf_checkpoint(prefix)
    np.testing.assert_array_equal(out["a"], a)
    assert out["a"].dtype == np.float32 and out["a"].dtype.isnative
    truncated = ((a.view(np.uint32) >> 16) << 16).view(np.float32)
    np.testing.assert_array_equal(out["b"], truncated)
    assert out["b"].dtype == np.float32


def test_empty_data_file(tmp_path):
    entries = {"e": entry(1, (0, 4), 0, 0)}
    prefix = write_ckpt(tmp_path, entries, b"")
    out = read_tf_checkpoint(prefix)["e"]
    assert out.shape == (0, 4) and out.dtype == np.float32
    assert math.prod(out.shape) == 0
