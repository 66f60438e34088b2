"""Every file format fails cleanly: a broken or hostile file raises the package's own ValueError
subclass naming the file and the field, quickly, and before anything is allocated in proportion
to a number read from the file.

Formats: config.json, vocab.json / merges.txt, encoder.json / vocab.bpe, tokenizer.json,
safetensors headers, folders written by ``fastgpt convert``, hparams.json and TensorFlow
checkpoints. Each case builds one bad file next to good ones and loads it through the public
entry point. The bounds are on CPU time (not wall time, which a busy machine stretches) and on
the peak of Python-tracked allocations (NumPy reports its buffers to tracemalloc too).
"""

from __future__ import annotations

import json
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import oracle
from fastgpt import GPT2Config, Model, Tokenizer
from fastgpt.compat.picogpt import load_encoder_hparams_and_params
from fastgpt.config import ConfigError
from fastgpt.convert import ConvertedFileError, write_converted
from fastgpt.loaders import SafetensorsError, WeightsError, write_safetensors
from fastgpt.loaders.gpt2 import CheckpointMismatchError, _hf_shapes
from fastgpt.loaders.tf_checkpoint import TFCheckpointError, read_tf_checkpoint
from fastgpt.registry import BUNDLED_DIR
from fastgpt.tokenizer import TokenizerError
from tf_writer import bundle_header, entry, f32_entry, write_ckpt

# "Well under a second" (the issue): these cases take milliseconds; the bound leaves room for
# tracemalloc's overhead and a slow machine.
CPU_SECONDS = 1.0
# Far below what any size in these files would make (they reach 2**31 and beyond), far above
# what reading the small files themselves costs.
PEAK_BYTES = 32 * 1024 * 1024

TINY = GPT2Config(vocab_size=4096, n_positions=16, n_embd=32, n_layer=2, n_head=2)
KJV = BUNDLED_DIR / "kjv-tiny"


def assert_clean_failure(call, error, *fragments):
    """call() raises ``error`` (a ValueError) whose message holds every fragment, within the
    CPU-time and memory bounds; returns the message."""
    tracemalloc.start()
    cpu = time.process_time()
    try:
        with pytest.raises(error) as info:
            call()
        used = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    print(f"{type(info.value).__name__}: {message[:300]}\n  cpu {used:.3f} s, peak {peak / 1e6:.1f} MB")
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in the message"
    assert used < CPU_SECONDS, f"took {used:.2f} s of CPU"
    assert peak < PEAK_BYTES, f"allocated {peak / 1e6:.1f} MB at the peak"
    return message


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny Hugging Face GPT-2 folder (safetensors) with kjv-tiny's tokenizer files."""
    folder = oracle.write_random_hf_folder(tmp_path_factory.mktemp("hf"), TINY)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(KJV / name, folder / name)
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(folder, out)
    return out


# --------------------------------------------------------------------------------------
# Values of the wrong JSON type or out of range, and what the JSON itself can do
# --------------------------------------------------------------------------------------

NOT_AN_INT = {"string": "12", "list": [12], "object": {"n": 12}, "fraction": 12.5, "bool": True,
              "NaN": float("nan"), "Infinity": float("inf")}
BAD_INTS = {**NOT_AN_INT, "negative": -3, "2**31": 2**31, "50 digits": 10**50}
NOT_A_POSITIVE_FLOAT = {"string": "1e-5", "list": [1e-5], "object": {}, "bool": True, "NaN": float("nan"),
                        "Infinity": float("inf"), "-Infinity": float("-inf"), "zero": 0, "negative": -1e-5,
                        "50 digits": 10**50}
BAD_TOKEN_IDS = {"string": "7", "list of strings": ["7"], "nested list": [[7]], "fraction": 7.5, "bool": True,
                 "negative": -1, "2**31": 2**31, "50 digits": 10**50, "NaN": float("nan")}
CONFIG_CASES = (
    [(field, label, value) for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner")
     for label, value in BAD_INTS.items()]
    + [("layer_norm_epsilon", label, value) for label, value in NOT_A_POSITIVE_FLOAT.items()]
    + [("activation_function", label, value) for label, value in {"int": 1, "list": ["gelu"], "unknown": "tanh"}.items()]
    + [(field, label, value) for field in ("bos_token_id", "eos_token_id") for label, value in BAD_TOKEN_IDS.items()]
    + [("model_type", label, value) for label, value in {"list": ["gpt2"], "int": 2, "other": "llama"}.items()]
)


@pytest.mark.parametrize("field,label,value", CONFIG_CASES, ids=[f"{f}-{lab}" for f, lab, _ in CONFIG_CASES])
def test_config_field_of_wrong_type_or_range(hf_folder, tmp_path, field, label, value):
    folder = copy_of(hf_folder, tmp_path)
    config = TINY.to_dict()
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))             # NaN / Infinity as Python writes them
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), ConfigError,
                         folder / "config.json", field)


DEEP = "[" * 100_000 + "]" * 100_000
NOT_JSON_FILES = {
    "deeply nested": (DEEP.encode(), "nested too deeply"),
    "not UTF-8": (b'{"n_embd": "\xff\xfe"}', "not UTF-8"),
    "truncated": (b'{"n_embd": 32, "n_la', "not valid JSON"),
    "a list": (b"[1, 2]", "expected a JSON object"),
    "huge": (b" " * (2 * 1024 * 1024) + b"{}", "bytes"),
}


@pytest.mark.parametrize("case", sorted(NOT_JSON_FILES))
def test_config_file_that_is_not_a_config(hf_folder, tmp_path, case):
    folder = copy_of(hf_folder, tmp_path)
    content, fragment = NOT_JSON_FILES[case]
    (folder / "config.json").write_bytes(content)
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), ConfigError,
                         folder / "config.json", fragment)


def test_config_json_that_is_a_directory(hf_folder, tmp_path):
    folder = copy_of(hf_folder, tmp_path)
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), ConfigError,
                         folder / "config.json", "directory")


def test_layer_count_far_beyond_the_checkpoint_fails_before_tables_are_built(hf_folder, tmp_path):
    folder = copy_of(hf_folder, tmp_path)
    config = TINY.to_dict()
    config["n_layer"] = 2**31 - 1                 # valid for a config; 12 names per layer would be 25e9
    (folder / "config.json").write_text(json.dumps(config))
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), CheckpointMismatchError,
                         folder, "n_layer=2147483647")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.uint8])
def test_non_float_tensor_where_weights_belong_is_refused(hf_folder, tmp_path, dtype):
    folder = copy_of(hf_folder, tmp_path)
    tensors = {name: np.zeros(shape, np.float32) for name, shape in _hf_shapes(TINY).items()}
    tensors["h.1.mlp.c_fc.weight"] = np.ones(tensors["h.1.mlp.c_fc.weight"].shape, dtype)
    write_safetensors(folder / "model.safetensors", tensors)
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), CheckpointMismatchError,
                         "h.1.mlp.c_fc.weight", f"stored as {np.dtype(dtype)}")


# --------------------------------------------------------------------------------------
# Tokenizer files
# --------------------------------------------------------------------------------------

def kjv_vocab() -> dict:
    return json.loads((KJV / "vocab.json").read_text(encoding="utf-8"))


def kjv_merges_text() -> str:
    return (KJV / "merges.txt").read_text(encoding="utf-8")


def vocab_with(token_value) -> dict:
    vocab = kjv_vocab()
    vocab["Ġthe"] = token_value
    return vocab


VOCAB_CASES = {
    **{f"id {label}": (json.dumps(vocab_with(value)).encode(), "Ġthe") for label, value in BAD_TOKEN_IDS.items()},
    "a list": (b'["a", "b"]', "non-empty JSON object"),
    "empty": (b"{}", "non-empty JSON object"),
    "deeply nested": (DEEP.encode(), "nested too deeply"),
    "not UTF-8": (b'{"\xff": 1}', "not UTF-8"),
    "id far beyond the vocabulary": (json.dumps(vocab_with(2**31 - 2)).encode(), "largest id 2147483646"),
}


@pytest.mark.parametrize("layout", [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")])
@pytest.mark.parametrize("case", sorted(VOCAB_CASES))
def test_vocabulary_file(tmp_path, layout, case):
    content, fragment = VOCAB_CASES[case]
    (tmp_path / layout[0]).write_bytes(content)
    (tmp_path / layout[1]).write_text(kjv_merges_text(), encoding="utf-8")
    assert_clean_failure(lambda: Tokenizer.from_pretrained(tmp_path), TokenizerError, layout[0], fragment)


MERGES_CASES = {
    "empty": (b"", "no merges"),
    "header only": (b"#version: 0.2\n", "no merges"),
    "blank lines only": (b"\n\n\r\n", "no merges"),
    "three tokens on a line": (b"#version: 0.2\n\xc4\xa0 t x\n", "line 2"),
    "not UTF-8": (b"#version: 0.2\n\xff \xfe\n", "not UTF-8"),
    "merge of unknown tokens": (b"#version: 0.2\nzzzz qqqq\n", "has no id"),
    "huge": (b"a b\n" * (17 * 1024 * 1024), "bytes"),
}


@pytest.mark.parametrize("case", sorted(MERGES_CASES))
def test_merges_file(tmp_path, case):
    content, fragment = MERGES_CASES[case]
    shutil.copy(KJV / "vocab.json", tmp_path / "vocab.json")
    (tmp_path / "merges.txt").write_bytes(content)
    assert_clean_failure(lambda: Tokenizer.from_pretrained(tmp_path), TokenizerError, "merges.txt", fragment)


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt"])
def test_tokenizer_file_that_is_a_directory(tmp_path, name):
    for other in ("vocab.json", "merges.txt"):
        shutil.copy(KJV / other, tmp_path / other)
    (tmp_path / name).unlink()
    (tmp_path / name).mkdir()
    # A directory is not a tokenizer file: the layout is incomplete, and the message says which.
    assert_clean_failure(lambda: Tokenizer.from_pretrained(tmp_path), TokenizerError, tmp_path)
    assert_clean_failure(lambda: Tokenizer.from_pretrained(tmp_path / name), TokenizerError, name)


def tokenizer_json(**changes) -> dict:
    merges = [line.split(" ") for line in kjv_merges_text().splitlines()[1:] if line]
    obj = {"model": {"type": "BPE", "vocab": kjv_vocab(), "merges": merges},
           "added_tokens": [{"id": 4095, "content": "<|endoftext|>", "special": True}]}
    for path, value in changes.items():
        node = obj
        *parents, last = path.split(".")
        for key in parents:
            node = node[key] if isinstance(node, dict) else node[int(key)]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return obj


TOKENIZER_JSON_CASES = {
    "model a list": ({"model": []}, "'model'"),
    "model.vocab a list": ({"model.vocab": ["a"]}, "model.vocab"),
    "model.merges an object": ({"model.merges": {"a": "b"}}, "model.merges"),
    "model.merges empty": ({"model.merges": []}, "no merges"),
    "a merge of three": ({"model.merges.0": ["a", "b", "c"]}, "model.merges[0]"),
    "a merge of numbers": ({"model.merges.0": [1, 2]}, "model.merges[0]"),
    "added_tokens an int": ({"added_tokens": 5}, "added_tokens"),
    "added_tokens an object": ({"added_tokens": {"id": 1}}, "added_tokens"),
    "added token not an object": ({"added_tokens.0": "x"}, "added_tokens[0]"),
    **{f"added token id {label}": ({"added_tokens.0.id": value}, "added_tokens[0]")
       for label, value in BAD_TOKEN_IDS.items()},
    "model.dropout": ({"model.dropout": 0.1}, "model.dropout"),
}


@pytest.mark.parametrize("case", sorted(TOKENIZER_JSON_CASES))
def test_tokenizer_json(tmp_path, case):
    changes, fragment = TOKENIZER_JSON_CASES[case]
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json(**changes)), encoding="utf-8")
    assert_clean_failure(lambda: Tokenizer.from_pretrained(tmp_path), TokenizerError, "tokenizer.json", fragment)


def test_tokenizer_json_deeply_nested(tmp_path):
    (tmp_path / "tokenizer.json").write_text(DEEP)
    assert_clean_failure(lambda: Tokenizer.from_pretrained(tmp_path), TokenizerError, "tokenizer.json",
                         "nested too deeply")


# --------------------------------------------------------------------------------------
# safetensors headers
# --------------------------------------------------------------------------------------

def raw_safetensors(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


def entry_json(shape, offsets, dtype="F32") -> bytes:
    return json.dumps({"x": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}).encode()


SAFETENSORS_CASES = {
    "deeply nested": (DEEP.encode(), "nested too deeply"),
    "shape of 40 dimensions": (entry_json([1] * 40, [0, 4]), "40 dimensions"),
    "huge dimensions": (entry_json([2**62, 2**62], [0, 16]), "larger than any array"),
    "empty, with huge dimensions": (entry_json([0, 2**62, 4], [0, 0]), "larger than any array"),
    "empty, with a dimension beyond int64": (entry_json([0, 2**63], [0, 0]), "larger than any array"),
    "dimension of 50 digits": (entry_json([10**50], [0, 16]), "shape must be"),
    "offset of 50 digits": (entry_json([4], [0, 10**50]), "data_offsets must be"),
    "offsets past the data": (entry_json([2**40], [0, 2**42]), "past the end"),
    "NaN in the shape": (entry_json([float("nan")], [0, 16]), "shape must be"),
    "dtype a list": (entry_json([4], [0, 16], dtype=["F32"]), "unknown dtype"),
    "metadata not a dict": (b'{"__metadata__": [1]}', "__metadata__"),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_safetensors_header(hf_folder, tmp_path, case):
    folder = copy_of(hf_folder, tmp_path)
    header, fragment = SAFETENSORS_CASES[case]
    raw_safetensors(folder / "model.safetensors", header, bytes(16))
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), SafetensorsError,
                         folder / "model.safetensors", fragment)


INDEX_CASES = {
    "deeply nested": (DEEP, "nested too deeply"),
    "not UTF-8": ('{"weight_map": {"\udcff": 1}}', "not UTF-8"),
    "weight_map a list": ('{"weight_map": ["a"]}', "weight_map"),
    "shard a number": ('{"weight_map": {"wte.weight": 1e999}}', "weight_map['wte.weight']"),
    "shard outside the folder": ('{"weight_map": {"wte.weight": "../x.safetensors"}}', "plain file name"),
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_sharded_checkpoint_index(hf_folder, tmp_path, case):
    from fastgpt.loaders import CheckpointIndexError

    folder = copy_of(hf_folder, tmp_path)
    (folder / "model.safetensors").unlink()
    text, fragment = INDEX_CASES[case]
    (folder / "model.safetensors.index.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), CheckpointIndexError,
                         "model.safetensors.index.json", fragment)


def test_safetensors_that_is_a_directory(tmp_path):
    from fastgpt.loaders import read_safetensors

    (tmp_path / "x.safetensors").mkdir()
    assert_clean_failure(lambda: read_safetensors(tmp_path / "x.safetensors"), SafetensorsError, "directory")


# --------------------------------------------------------------------------------------
# Folders written by `fastgpt convert`
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    write_converted(out, TINY, Model.random(TINY, dtype="int8", backend="numpy").weights)
    return out


def rewrite_converted(path: Path, metadata=None, tensors=None):
    """Write the converted file again with some __metadata__ strings and tensors replaced."""
    from fastgpt.convert import _read_raw
    from fastgpt.loaders import read_metadata

    meta, stored, dtypes = read_metadata(path), {}, {}
    for name, (st_dtype, arr) in _read_raw(path).items():
        stored[name] = (arr.view(np.float16) if st_dtype == "F16" else arr).copy()
        if st_dtype == "BF16":
            dtypes[name] = "BF16"
    meta.update(metadata or {})
    stored.update(tensors or {})
    write_safetensors(path, stored, metadata=meta, dtypes=dtypes)


CONVERTED_CASES = {
    "config deeply nested": ({"config": DEEP}, ConvertedFileError, "nested too deeply"),
    "config not JSON": ({"config": "{"}, ConvertedFileError, "'config' metadata"),
    "config field of the wrong type": ({"config": json.dumps({**TINY.to_dict(), "n_head": "2"})},
                                       ConvertedFileError, "n_head"),
    "format version a long string": ({"fastgpt_format": "9" * 10_000}, ConvertedFileError, "fastgpt_format"),
    "unknown dtype": ({"fastgpt_dtype": "int4"}, ConvertedFileError, "fastgpt_dtype"),
    "tied flag": ({"fastgpt_tied_head": "yes"}, ConvertedFileError, "fastgpt_tied_head"),
    "int8 block": ({"fastgpt_int8_block": "64"}, ConvertedFileError, "fastgpt_int8_block"),
}


@pytest.mark.parametrize("case", sorted(CONVERTED_CASES))
def test_converted_metadata(converted_folder, tmp_path, case):
    folder = copy_of(converted_folder, tmp_path)
    changes, error, fragment = CONVERTED_CASES[case]
    rewrite_converted(folder / "model.safetensors", metadata=changes)
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), error,
                         folder / "model.safetensors", fragment)


def test_converted_layer_count_beyond_the_file(converted_folder, tmp_path):
    folder = copy_of(converted_folder, tmp_path)
    big = {**TINY.to_dict(), "n_layer": 2**31 - 1}
    (folder / "config.json").write_text(json.dumps(big))
    rewrite_converted(folder / "model.safetensors", metadata={"config": json.dumps(big)})
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), ConvertedFileError,
                         "n_layer=2147483647")


def test_converted_tensor_of_another_dtype(converted_folder, tmp_path):
    folder = copy_of(converted_folder, tmp_path)
    q = np.zeros(Model.random(TINY, backend="numpy", dtype="int8").weights.blocks[0].mlp_fc_w.shape, np.float32)
    rewrite_converted(folder / "model.safetensors", tensors={"blocks.0.mlp_fc_w.q": q})
    assert_clean_failure(lambda: Model.from_pretrained(folder, backend="numpy"), ConvertedFileError,
                         "blocks.0.mlp_fc_w.q", "dtype F32, expected I8")


# --------------------------------------------------------------------------------------
# OpenAI's release: hparams.json and the TensorFlow checkpoint
# --------------------------------------------------------------------------------------

TF_DATA = Path(__file__).parent / "data" / "tf-gpt2-tiny"
HPARAMS_CASES = (
    [(field, label, value) for field in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
     for label, value in BAD_INTS.items()]
)


@pytest.mark.parametrize("field,label,value", HPARAMS_CASES, ids=[f"{f}-{lab}" for f, lab, _ in HPARAMS_CASES])
def test_hparams_field(tmp_path, field, label, value):
    folder = tmp_path / "124M"
    shutil.copytree(TF_DATA, folder)
    hparams = json.loads((TF_DATA / "hparams.json").read_text())
    hparams[field] = value
    (folder / "hparams.json").write_text(json.dumps(hparams))
    assert_clean_failure(lambda: load_encoder_hparams_and_params("124M", tmp_path), ConfigError,
                         folder / "hparams.json", field)


@pytest.mark.parametrize("case", sorted(NOT_JSON_FILES))
def test_hparams_file_that_is_not_hparams(tmp_path, case):
    folder = tmp_path / "124M"
    shutil.copytree(TF_DATA, folder)
    content, fragment = NOT_JSON_FILES[case]
    (folder / "hparams.json").write_bytes(content)
    assert_clean_failure(lambda: load_encoder_hparams_and_params("124M", tmp_path), ConfigError,
                         folder / "hparams.json", fragment)


def test_hparams_directory_and_layer_count_beyond_the_checkpoint(tmp_path):
    folder = tmp_path / "124M"
    shutil.copytree(TF_DATA, folder)
    hparams = json.loads((TF_DATA / "hparams.json").read_text())
    (folder / "hparams.json").write_text(json.dumps({**hparams, "n_layer": 2**31 - 1}))
    assert_clean_failure(lambda: load_encoder_hparams_and_params("124M", tmp_path), TFCheckpointError,
                         "n_layer=2147483647")
    (folder / "hparams.json").unlink()
    (folder / "hparams.json").mkdir()
    assert_clean_failure(lambda: load_encoder_hparams_and_params("124M", tmp_path), ConfigError, "directory")


def tf_case(tmp_path, **entry_fields):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    fields = dict(dtype=1, shape=(2, 3), offset=0, size=24)
    fields.update(entry_fields)
    return write_ckpt(tmp_path / "ckpt", {"x": entry(**fields)}, arr.tobytes())


TF_CASES = {
    "40 dimensions": (dict(shape=(1,) * 40, size=4), "40 dimensions"),
    "huge dimensions": (dict(shape=(2**40, 2**40)), "larger than any array"),
    "dimensions not matching the size": (dict(shape=(4, 4)), "size 24 bytes"),
    "empty, with huge dimensions": (dict(shape=(0, 2**62, 4), size=0), "larger than any array"),
    "negative dimension": (dict(shape=(-2, 3)), "negative shape"),
    "negative offset": (dict(offset=2**64 - 8), "offset"),
    "offset past the data": (dict(offset=2**62), "outside"),
    "shard beyond the header's": (dict(shard=2**40), "shard"),
    "unknown dtype": (dict(dtype=99), "DataType 99"),
}


@pytest.mark.parametrize("case", sorted(TF_CASES))
def test_tf_checkpoint_entry(tmp_path, case):
    fields, fragment = TF_CASES[case]
    prefix = tf_case(tmp_path, **fields)
    assert_clean_failure(lambda: read_tf_checkpoint(prefix), TFCheckpointError, "'x'", fragment)


def test_tf_checkpoint_with_absurd_shard_count(tmp_path):
    arr = np.arange(6, dtype=np.float32)
    prefix = write_ckpt(tmp_path / "ckpt", {"x": f32_entry(arr, 0)}, arr.tobytes(),
                        header=bundle_header(num_shards=2**62))
    assert_clean_failure(lambda: read_tf_checkpoint(prefix), TFCheckpointError, "missing")


def test_tf_index_that_is_a_directory(tmp_path):
    (tmp_path / "model.ckpt.index").mkdir()
    assert_clean_failure(lambda: read_tf_checkpoint(tmp_path), TFCheckpointError, "no *.index file")


# --------------------------------------------------------------------------------------
# Non-finite weights: found on request (loading does not read every page of a mapped file)
# --------------------------------------------------------------------------------------

def test_nonfinite_weights_are_named(hf_folder, tmp_path):
    folder = copy_of(hf_folder, tmp_path)
    rng = np.random.default_rng(1)
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in _hf_shapes(TINY).items()}
    tensors["h.1.mlp.c_fc.weight"][3, 5] = np.nan
    tensors["wpe.weight"][-1, -1] = -np.inf
    write_safetensors(folder / "model.safetensors", tensors)
    model = Model.from_pretrained(folder, backend="numpy")        # loading itself does not scan
    assert model.weights.nonfinite_tensors() == ["wpe", "blocks.1.mlp_fc_w"]
    for dtype in ("bfloat16", "float16"):
        quantized = Model.random(TINY, backend="numpy", dtype=dtype).weights
        quantized.blocks[0].attn_proj_w.data[0, 0] = 0x7F80 if dtype == "bfloat16" else 0x7C00   # +Inf
        assert quantized.nonfinite_tensors() == ["blocks.0.attn_proj_w"], dtype
    int8 = Model.random(TINY, backend="numpy", dtype="int8").weights
    int8.wte.scales[1, 0] = 0x7E00                                   # a NaN scale
    assert int8.nonfinite_tensors() == ["wte"]


def test_loading_errors_are_weights_errors():
    # The classes above, by family: one `except WeightsError` catches every unusable checkpoint.
    for cls in (SafetensorsError, CheckpointMismatchError, ConvertedFileError, TFCheckpointError):
        assert issubclass(cls, WeightsError) and issubclass(cls, ValueError)
    for cls in (ConfigError, TokenizerError):
        assert issubclass(cls, ValueError)
