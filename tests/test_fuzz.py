"""Fuzzing every reader: a mutated valid file loads what an independent reading of it gives (for
formats with checksums: the original tensors) or raises the package's own error, never anything
else (no IndexError, OverflowError, MemoryError, RecursionError, crash...).

Mutations are seeded and reproducible: truncations, bit flips, inserted or deleted bytes, and
field mutations (a JSON value or a protobuf field replaced by a hostile one, the file otherwise
kept valid, checksums included). The tokenizer is also checked property-based (hypothesis)
against tiktoken on random Unicode text.

Budget: FUZZ_CASES cases per reader (a few hundred: seconds in all). Set FASTGPT_FUZZ_CASES to
run more by hand, e.g. ``FASTGPT_FUZZ_CASES=20000 pytest tests/test_fuzz.py``; the seeds then
also differ from CI's.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oracle
from fastgpt import GPT2Config, Model, Tokenizer
from fastgpt.compat.picogpt import load_encoder_hparams_and_params
from fastgpt.config import ConfigError
from fastgpt.convert import write_converted
from fastgpt.loaders import WeightsError, read_safetensors, write_safetensors
from fastgpt.loaders.gpt2 import load_pretrained
from fastgpt.loaders.tf_checkpoint import TFCheckpointReader, read_tf_checkpoint
from fastgpt.registry import BUNDLED_DIR
from fastgpt.tokenizer import TokenizerError
from tf_writer import bundle_header, entry, write_ckpt

LONG_RUN = "FASTGPT_FUZZ_CASES" in os.environ
FUZZ_CASES = int(os.environ.get("FASTGPT_FUZZ_CASES", "300"))
SEEDS = range(FUZZ_CASES) if not LONG_RUN else [random.randrange(2**32) for _ in range(FUZZ_CASES)]
PACKAGE_ERRORS = (WeightsError, ConfigError, TokenizerError)

TINY = GPT2Config(vocab_size=4096, n_positions=16, n_embd=32, n_layer=2, n_head=2)
KJV = BUNDLED_DIR / "kjv-tiny"
TF_DATA = Path(__file__).parent / "data" / "tf-gpt2-tiny"

# Values a field mutation puts in place of a JSON value.
HOSTILE_JSON = [-1, 0, 1, 3, 2**31, 2**63, 2**64 + 1, 10**50, -(10**50), 0.5, -0.0, float("nan"), float("inf"),
                "", "x", "F32", "gpt2", [], [0], [-1, 2**63], [[1]], {}, {"a": 1}, None, True, False,
                json.loads("[" * 50 + "]" * 50)]


# --------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng: random.Random, start: int = 0, end: int | None = None) -> tuple[bytes, str]:
    """One random byte-level mutation inside data[start:end] (truncation anywhere)."""
    end = len(data) if end is None else end
    buf = bytearray(data)
    kind = rng.choice(["truncate", "flip", "flip", "byte", "insert", "delete"])
    if kind == "truncate":
        cut = rng.randrange(len(data))
        return bytes(buf[:cut]), f"truncated to {cut} bytes"
    i = rng.randrange(start, end)
    if kind == "flip":
        flips = [(rng.randrange(start, end), rng.randrange(8)) for _ in range(rng.randint(1, 3))]
        for pos, bit in flips:
            buf[pos] ^= 1 << bit
        return bytes(buf), f"bits flipped at {flips}"
    if kind == "byte":
        value = rng.choice([0, 0xFF, 0x7F, 0x80, ord('"'), ord("{"), ord("9"), ord("-"), rng.randrange(256)])
        buf[i] = value
        return bytes(buf), f"byte {i} set to {value:#x}"
    if kind == "insert":
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return bytes(buf[:i] + junk + buf[i:]), f"{junk!r} inserted at {i}"
    n = rng.randint(1, 8)
    return bytes(buf[:i] + buf[i + n:]), f"{n} bytes deleted at {i}"


def json_paths(value, path=()):
    """Every path (tuple of keys / indices) to a value inside a JSON document, the root first."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from json_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:64]):                     # long lists: their start is enough
            yield from json_paths(v, path + (i,))


def mutate_json(doc, rng: random.Random):
    """A copy of doc with one value replaced, one key deleted, or one key added; and a description."""
    doc = json.loads(json.dumps(doc))
    paths = list(json_paths(doc))[1:]
    path = rng.choice(paths)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    kind = rng.choice(["replace", "replace", "replace", "delete", "add"])
    if kind == "delete":
        del parent[path[-1]]
        return doc, f"deleted {list(path)}"
    value = rng.choice(HOSTILE_JSON)
    if kind == "add" and isinstance(parent, dict):
        parent[f"extra{rng.randrange(3)}"] = value
        return doc, f"added {value!r} under {list(path[:-1])}"
    parent[path[-1]] = value
    return doc, f"{list(path)} = {value!r}"


def check_reader(seed: int, what: str, read, expect):
    """read() must raise one of PACKAGE_ERRORS, or return something expect(result) accepts."""
    try:
        result = read()
    except PACKAGE_ERRORS:
        return "refused"
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"seed {seed}, {what}: {type(exc).__name__}: {exc}")
    expect(result)
    return "loaded"


def same_arrays(got: dict, want: dict, where: str):
    assert list(got) == list(want) or sorted(got) == sorted(want), f"{where}: names {sorted(got)} vs {sorted(want)}"
    for name in want:
        a, b = np.asarray(got[name]), np.asarray(want[name])
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {name} {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        assert a.tobytes() == b.tobytes(), f"{where}: {name} differs"


def summary(outcomes: list[str]) -> str:
    return f"{outcomes.count('refused')} refused, {outcomes.count('loaded')} loaded"


# --------------------------------------------------------------------------------------
# safetensors: against a straightforward reading of the mutated bytes, and the reference library
# --------------------------------------------------------------------------------------

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def plain_safetensors_read(data: bytes) -> dict:
    """What the header says the tensors are, read without validation (only used once our
    reader has accepted the file), 16-bit floats widened as read_safetensors does."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        arr = np.frombuffer(body[begin:end], _DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "F16":
            arr = arr.astype(np.float32)
        elif info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr
    return out


@pytest.fixture(scope="module")
def safetensors_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("st") / "base.safetensors"
    rng = np.random.default_rng(0)
    write_safetensors(path, {
        "w": rng.standard_normal((4, 6)).astype(np.float32), "h": rng.standard_normal(5).astype(np.float16),
        "b": rng.integers(0, 2**16, (3, 2), dtype=np.uint16), "i": np.arange(3, dtype=np.int64),
        "m": np.array([True, False]), "s": np.array(2.5, np.float32), "e": np.zeros((0, 3), np.uint8),
    }, metadata={"format": "np", "note": "fuzz"}, dtypes={"b": "BF16"})
    return path.read_bytes()


def test_safetensors_reader(tmp_path, safetensors_bytes):
    base = safetensors_bytes
    header_end = 8 + int.from_bytes(base[:8], "little")
    header = json.loads(base[8:header_end])
    path = tmp_path / "x.safetensors"
    outcomes = []
    for seed in SEEDS:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            doc, what = mutate_json(header, rng)
            text = json.dumps(doc).encode()
            data = len(text).to_bytes(8, "little") + text + base[header_end:]
        else:
            data, what = mutate_bytes(base, rng, 0, header_end)
        path.write_bytes(data)

        def expect(tensors, data=data, what=what, seed=seed):
            same_arrays(tensors, plain_safetensors_read(data), f"seed {seed}, {what}")
            try:
                from safetensors.numpy import load
                reference = load(data)
            except Exception:  # noqa: BLE001 - the reference refusing is allowed (it refuses gaps we accept)
                return
            for name, arr in reference.items():
                if arr.dtype.kind == "f" and arr.dtype.itemsize == 2:
                    arr = arr.astype(np.float32)
                np.testing.assert_array_equal(tensors[name].view(np.uint8), arr.view(np.uint8), err_msg=f"seed {seed}")
        outcomes.append(check_reader(seed, what, lambda: read_safetensors(path), expect))
    print(summary(outcomes))
    assert "refused" in outcomes and "loaded" in outcomes


# --------------------------------------------------------------------------------------
# Folders written by `fastgpt convert`: header mutations must load the original weights or fail
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """dtype -> (folder, the weights written)."""
    made = {}
    for dtype in ("float32", "bfloat16", "int8"):
        out = tmp_path_factory.mktemp(f"conv-{dtype}")
        weights = Model.random(TINY, backend="numpy", dtype=dtype).weights
        write_converted(out, TINY, weights)
        made[dtype] = out, dict(weights.named_tensors())
    return made


def _weight_arrays(named: dict) -> dict:
    """name -> plain arrays of a weights' named tensors (a quantized weight's data and scales)."""
    out = {}
    for name, arr in named.items():
        if hasattr(arr, "format"):
            out[name + ".data"] = arr.data
            if arr.scales is not None:
                out[name + ".scales"] = arr.scales
        else:
            out[name] = arr
    return out


def test_converted_reader(tmp_path, converted):
    outcomes = []
    for seed in SEEDS:
        rng = random.Random(seed)
        dtype = rng.choice(sorted(converted))
        source, want = converted[dtype]
        folder = tmp_path / f"case{seed % 4}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(source, folder)
        base = (source / "model.safetensors").read_bytes()
        header_end = 8 + int.from_bytes(base[:8], "little")
        if rng.random() < 0.5:
            doc, what = mutate_json(json.loads(base[8:header_end]), rng)
            text = json.dumps(doc).encode()
            data = len(text).to_bytes(8, "little") + text + base[header_end:]
        else:
            # The data section has no checksum (safetensors has none): mutations stay in the header.
            data, what = mutate_bytes(base, rng, 0, header_end)
        (folder / "model.safetensors").write_bytes(data)

        def expect(loaded, want=want, what=f"{dtype} {what}", seed=seed):
            same_arrays(_weight_arrays(dict(loaded[1].named_tensors())), _weight_arrays(want), f"seed {seed}, {what}")
        outcomes.append(check_reader(seed, f"{dtype} {what}", lambda: load_pretrained(folder), expect))
    print(summary(outcomes))
    assert "refused" in outcomes and "loaded" in outcomes


# --------------------------------------------------------------------------------------
# config.json and hparams.json: a config is accepted only if the checkpoint still fits it
# --------------------------------------------------------------------------------------

def mutated_json_bytes(base: bytes, rng: random.Random) -> tuple[bytes, str]:
    if rng.random() < 0.6:
        doc, what = mutate_json(json.loads(base), rng)
        return json.dumps(doc).encode(), what
    return mutate_bytes(base, rng)


def fuzz_json_file(path: Path, read, arrays_of, want: dict) -> list[str]:
    """Mutate the JSON file at path case after case; read() must refuse, or load arrays_of(result) == want."""
    base = path.read_bytes()
    outcomes = []
    for seed in SEEDS:
        data, what = mutated_json_bytes(base, random.Random(seed))
        path.write_bytes(data)

        def expect(result, what=what, seed=seed):
            same_arrays(arrays_of(result), want, f"seed {seed}, {what}")
        outcomes.append(check_reader(seed, what, read, expect))
    path.write_bytes(base)
    return outcomes


def test_config_json(tmp_path):
    folder = oracle.write_random_hf_folder(tmp_path, TINY)

    def arrays(model):
        return _weight_arrays(dict(model.weights.named_tensors()))
    want = arrays(Model.from_pretrained(folder, backend="numpy"))
    outcomes = fuzz_json_file(folder / "config.json", lambda: Model.from_pretrained(folder, backend="numpy"),
                              arrays, want)
    print(summary(outcomes))
    assert "refused" in outcomes and "loaded" in outcomes


def test_hparams_json(tmp_path):
    shutil.copytree(TF_DATA, tmp_path / "124M")

    def load():
        return load_encoder_hparams_and_params("124M", tmp_path)

    def arrays(loaded):
        return _flat_params(loaded[2])
    outcomes = fuzz_json_file(tmp_path / "124M" / "hparams.json", load, arrays, arrays(load()))
    print(summary(outcomes))
    assert "refused" in outcomes and "loaded" in outcomes


def _flat_params(tree, prefix="") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat_params(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat_params(sub, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): tree}


# --------------------------------------------------------------------------------------
# TensorFlow checkpoints: the index and data carry crc32c checksums, so raw mutations must be
# refused or harmless; field mutations are written with valid checksums (tests/tf_writer.py)
# --------------------------------------------------------------------------------------

HOSTILE_INTS = [0, 1, 2, 7, 24, 2**31, 2**62, 2**63 - 1, 2**64 - 1, 2**64 - 24]


def _mutated_entry_fields(e, rng):
    fields = dict(dtype=e.dtype_enum, shape=e.shape, offset=e.offset, size=e.size, shard=e.shard_id, crc=e.crc32c)
    key = rng.choice(["dtype", "shape", "offset", "size", "shard", "crc"])
    if key == "dtype":
        fields["dtype"] = rng.choice([0, 1, 2, 3, 7, 14, 19, 20, 24, 99, 2**40])
    elif key == "shape":
        fields["shape"] = rng.choice([(), (0,), (2**40, 2**40), (1,) * 40, tuple(reversed(e.shape)),
                                      (2**64 - 1,), e.shape + (1,), (math.prod(e.shape),)])
    elif key == "crc":
        fields["crc"] = rng.choice([None, 0, 2**32 - 1])
    else:
        fields[key] = rng.choice(HOSTILE_INTS)
    return fields, f"{e.name}: {key} = {fields[key]!r}"


def _plain_tf_read(fields_by_name: dict, data: bytes, big_endian: bool) -> dict:
    """The tensors the (accepted) entries describe, read straight from the data file."""
    dtypes = {1: "f4", 2: "f8", 3: "i4", 9: "i8", 19: "f2"}
    out = {}
    for name, f in fields_by_name.items():
        stored = np.dtype(dtypes[f["dtype"]]).newbyteorder(">" if big_endian else "<")
        arr = np.frombuffer(data[f["offset"]:f["offset"] + f["size"]], stored).reshape(f["shape"])
        out[name] = arr.astype(stored.newbyteorder("="))
    return out


def test_tf_checkpoint(tmp_path):
    reader = TFCheckpointReader(TF_DATA)
    want = read_tf_checkpoint(TF_DATA)
    index = (TF_DATA / "model.ckpt.index").read_bytes()
    data = (TF_DATA / "model.ckpt.data-00000-of-00001").read_bytes()
    outcomes = []
    for seed in SEEDS:
        rng = random.Random(seed)
        folder = tmp_path / f"case{seed % 4}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        kind = rng.choice(["index", "data", "entry", "entry", "header"])
        big_endian = False
        fields = {e.name: dict(dtype=e.dtype_enum, shape=e.shape, offset=e.offset, size=e.size, shard=e.shard_id,
                               crc=e.crc32c) for e in reader.entries.values()}
        expected = want
        if kind in ("index", "data"):
            mutated, what = mutate_bytes(index if kind == "index" else data, rng)
            (folder / "model.ckpt.index").write_bytes(mutated if kind == "index" else index)
            (folder / "model.ckpt.data-00000-of-00001").write_bytes(mutated if kind == "data" else data)
            what = f"{kind} {what}"
            prefix = folder / "model.ckpt"
        else:
            header = None
            if kind == "entry":
                name = rng.choice(sorted(fields))
                fields[name], what = _mutated_entry_fields(reader.entries[name], rng)
            else:
                options = dict(num_shards=rng.choice([0, 1, 2, 2**40]), endianness=rng.choice([0, 1, 2]),
                               min_consumer=rng.choice([0, 1, 2]))
                header, what = bundle_header(**options), f"bundle header {options}"
                big_endian = options["endianness"] == 1
            prefix = write_ckpt(folder, {n: entry(**f) for n, f in fields.items()}, data, header=header)
            expected = None

        def expect(tensors, expected=expected, fields=fields, what=what, seed=seed, big_endian=big_endian):
            same_arrays(tensors, expected if expected is not None else _plain_tf_read(fields, data, big_endian),
                        f"seed {seed}, {what}")
        outcomes.append(check_reader(seed, what, lambda: read_tf_checkpoint(prefix), expect))
    print(summary(outcomes))
    assert "refused" in outcomes and "loaded" in outcomes


# --------------------------------------------------------------------------------------
# Tokenizer files: refused, or a working tokenizer (byte-level BPE always round-trips)
# --------------------------------------------------------------------------------------

SAMPLE = "In the beginning God created the heaven and the earth. 1611 ÆØÅ 漢字 😀 <|endoftext|>\n\n  x"


def test_tokenizer_files(tmp_path):
    vocab = json.loads((KJV / "vocab.json").read_text(encoding="utf-8"))
    merges = (KJV / "merges.txt").read_bytes()
    outcomes = []
    for seed in SEEDS:
        rng = random.Random(seed)
        which = rng.choice(["vocab", "merges"])
        if which == "vocab":
            if rng.random() < 0.5:
                # Field mutations on a sample of entries (the whole vocabulary is 4096 of them).
                keys = rng.sample(sorted(vocab), 8)
                doc, what = mutate_json({k: vocab[k] for k in keys}, rng)
                text = json.dumps({**{k: v for k, v in vocab.items() if k not in keys}, **doc})
                vocab_bytes = text.encode()
            else:
                vocab_bytes, what = mutate_bytes(json.dumps(vocab).encode(), rng)
            merges_bytes = merges
        else:
            vocab_bytes = (KJV / "vocab.json").read_bytes()
            merges_bytes, what = mutate_bytes(merges, rng)
        (tmp_path / "vocab.json").write_bytes(vocab_bytes)
        (tmp_path / "merges.txt").write_bytes(merges_bytes)

        def expect(tok, what=what, seed=seed):
            ids = tok.encode(SAMPLE)
            assert tok.decode(ids) == SAMPLE, f"seed {seed}, {which} {what}: no round trip"
        outcomes.append(check_reader(seed, f"{which} {what}", lambda: Tokenizer.from_pretrained(tmp_path), expect))
    print(summary(outcomes))
    assert "refused" in outcomes and "loaded" in outcomes


# --------------------------------------------------------------------------------------
# The tokenizer against tiktoken, property-based
# --------------------------------------------------------------------------------------

# Assigned code points (not Cn) and no surrogates (Cs: not encodable text), by this Python's
# Unicode tables; letters, marks and numbers are weighted up by mixing in ASCII-heavy text.
TEXT = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=80) | st.text(
    st.sampled_from("abc XYZ 019 'st 're \n\t.,!?-"), max_size=80)


@functools.lru_cache(maxsize=None)
def gpt2_pair():
    return Tokenizer.gpt2(), oracle.tiktoken_gpt2()


@settings(max_examples=FUZZ_CASES, deadline=None, database=None, derandomize=not LONG_RUN)
@given(st.lists(TEXT, min_size=1, max_size=4).map("".join))
def test_tokenizer_matches_tiktoken_on_random_text(text):
    tok, reference = gpt2_pair()
    ids = tok.encode(text)
    want = reference.encode_ordinary(text)
    assert ids == want, f"{text!r}: {ids} != tiktoken's {want}"
    assert tok.decode(ids) == text
