"""``fastgpt convert DIR OUT --dtype D``: save a model's weights in fastgpt's layout and dtype.

Quantizing GPT-2 124M takes a few seconds and transposes its matrices; a converted folder
skips both: its arrays are memory-mapped as stored, so loading is instant and the pages are
shared between processes. OUT is an ordinary model folder: ``config.json``, the tokenizer
files copied from DIR, and ``model.safetensors`` holding fastgpt's own tensors:

- float32 tensors (norms, biases, wpe, and every matrix for ``--dtype float32``): ``NAME``, F32.
- bfloat16 / float16 matrices: ``NAME``, BF16 / F16 (the format's bits, as other readers expect).
- int8 matrices: ``NAME.q`` I8 (out, in) and ``NAME.scales`` F16 (out, in / 32).

NAME is the fastgpt field: ``wte``, ``wpe``, ``ln_f_g``, ``ln_f_b``, ``lm_head`` (only when untied),
``blocks.{i}.{field}`` (fastgpt/weights.py); matrices are [out, in]. The ``__metadata__`` says
what the file is: ``fastgpt_format`` (this layout's version, "1"), ``fastgpt_dtype``,
``fastgpt_int8_block``, ``fastgpt_tied_head`` and ``config`` (the GPT2Config as JSON). Every
tensor starts 64-byte aligned in the file (and so in memory): zero tensors ``NAME.pad`` fill the
gaps and the ``fastgpt_pad`` metadata string (spaces) aligns the data section. The
loader trusts none of it: version, dtype, config, and every tensor's presence, dtype and shape
are checked, and any mismatch is a ConvertedFileError naming the file and the tensor.

Non-goals: converting between quantized formats (it would round twice), sharding, other
model families.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import os
import secrets
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np

from . import jsonfile
from .jsonfile import short_repr
from .config import ConfigError, GPT2Config
from .loaders.errors import WeightsError
from .quant import (ALIGN, DTYPES, INT8_BLOCK, LINEAR_FIELDS, QuantizedWeight, aligned, check_dtype, quantize_weights,
                    weights_dtype)
from .weights import BlockWeights, GPT2Weights

FORMAT_VERSION = "1"
WEIGHTS_FILE = "model.safetensors"
#: Zero tensors that only align the next tensor (see _pad_to_alignment); ignored when loading.
PAD_SUFFIX = ".pad"
#: Config fields that a converted file need not agree on with its folder's config.json.
TOKEN_ID_FIELDS = frozenset({"bos_token_id", "eos_token_id"})
#: Copied from the source folder when present, so that OUT works as a model folder on its own.
SIDE_FILES = ("config.json", "vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")

# Storage of a matrix per dtype: suffix -> safetensors dtype.
_MATRIX_PARTS = {
    "float32": {"": "F32"},
    "bfloat16": {"": "BF16"},
    "float16": {"": "F16"},
    "int8": {".q": "I8", ".scales": "F16"},
}
_BLOCK_FIELDS = [f.name for f in dataclasses.fields(BlockWeights)]


class ConvertedFileError(WeightsError):
    """A fastgpt-converted folder whose metadata and tensors do not agree (names file and tensor)."""


# -- writing ---------------------------------------------------------------------------------------
def _matrix_tensors(name, w):
    """{tensor name: array} and {tensor name: safetensors dtype override} of one matrix."""
    if not isinstance(w, QuantizedWeight):
        return {name: w}, {}
    if w.format == "bfloat16":
        return {name: w.data}, {name: "BF16"}
    if w.format == "float16":
        return {name: w.data.view(np.float16)}, {}
    return {f"{name}.q": w.data, f"{name}.scales": w.scales.view(np.float16)}, {}


def weights_to_tensors(weights: GPT2Weights) -> tuple[dict, dict]:
    """fastgpt's weights as safetensors tensors (see the module docstring) and dtype overrides."""
    tensors, dtypes = {}, {}

    def put(name, arr, matrix=False):
        if arr is None:
            return
        t, d = _matrix_tensors(name, arr) if matrix else ({name: arr}, {})
        tensors.update(t)
        dtypes.update(d)

    put("wte", weights.wte, matrix=True)
    put("wpe", weights.wpe)
    put("ln_f_g", weights.ln_f_g)
    put("ln_f_b", weights.ln_f_b)
    if not weights.tied_head:
        put("lm_head", weights.lm_head, matrix=True)
    for i, blk in enumerate(weights.blocks):
        for field in _BLOCK_FIELDS:
            put(f"blocks.{i}.{field}", getattr(blk, field), matrix=field in LINEAR_FIELDS)
    return tensors, dtypes


def write_converted(out, config: GPT2Config, weights: GPT2Weights, source: str = "") -> Path:
    """Write ``weights`` (any dtype) to ``out/model.safetensors`` with fastgpt's metadata, and
    ``out/config.json`` if the folder has none. Returns the weights file's path."""
    from .loaders.safetensors import write_safetensors

    weights.validate(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors, dtypes = weights_to_tensors(weights)
    metadata = {
        "fastgpt_format": FORMAT_VERSION,
        "fastgpt_dtype": weights_dtype(weights),
        "fastgpt_int8_block": str(INT8_BLOCK),
        "fastgpt_tied_head": "1" if weights.tied_head else "0",
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "source": str(source),
    }
    tensors, dtypes = _pad_to_alignment(tensors, dtypes)
    path = out / WEIGHTS_FILE
    # Twice if needed: the second time a metadata string of spaces makes the data section start
    # at a multiple of ALIGN (the header's length is only known once written).
    metadata["fastgpt_pad"] = ""
    write_safetensors(path, tensors, metadata=metadata, dtypes=dtypes)
    spaces = _header_padding_needed(path)
    if spaces:
        metadata["fastgpt_pad"] = " " * spaces
        write_safetensors(path, tensors, metadata=metadata, dtypes=dtypes)
    if not (out / "config.json").is_file():
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _pad_to_alignment(tensors: dict, dtypes: dict) -> tuple[dict, dict]:
    """Add a zero tensor "NAME.pad" after every tensor whose size is not a multiple of ALIGN.

    write_safetensors lays tensors out by item size, then name, with no gaps; "NAME.pad" has
    NAME's item size and sorts right after it, so every tensor then starts at a multiple of
    ALIGN from the data section (the kernels' rows are aligned; quant.ALIGN says why).
    """
    tensors, dtypes = dict(tensors), dict(dtypes)
    for name, arr in list(tensors.items()):
        rem = arr.nbytes % ALIGN
        if rem:
            tensors[name + PAD_SUFFIX] = np.zeros((ALIGN - rem) // arr.itemsize, arr.dtype)
            if name in dtypes:
                dtypes[name + PAD_SUFFIX] = dtypes[name]
    return tensors, dtypes


def _header_padding_needed(path) -> int:
    """Spaces to add to the metadata so that the data section of ``path`` starts ALIGN-aligned."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = f.read(header_len)
    unpadded = len(header.rstrip(b" "))                            # the writer pads with spaces
    return (-(8 + unpadded)) % ALIGN


def convert(src, out, dtype: str, force: bool = False) -> Path:
    """Load the model at ``src`` (folder or bundled name), hold it in ``dtype``, write it to ``out``.

    ``out`` must be new or empty unless ``force``: a model already there (swapped arguments, a
    second conversion into the same folder, whose stale tokenizer files would win) is not
    replaced by accident. The folder is written beside ``out`` and renamed into place at the end,
    so a failure (a full disk) leaves ``out`` as it was."""
    from .loaders.gpt2 import load_pretrained
    from .registry import resolve_model_path

    check_dtype(dtype)
    folder = resolve_model_path(src)
    out = Path(out)
    if out.exists() and out.resolve() == folder.resolve():
        raise ValueError(f"OUT {out} is the source folder; write the converted model to a new folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"OUT {out} exists and is not a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        raise ValueError(f"OUT {out} is not empty (it holds {', '.join(held[:4])}{', ...' if len(held) > 4 else ''}); "
                         "give a new or empty folder, or --force to replace it")
    config, weights = load_pretrained(folder)
    weights = quantize_weights(weights, dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    staging, old = out.parent / f".{out.name}.tmp-{tag}", out.parent / f".{out.name}.old-{tag}"
    try:
        staging.mkdir()
        for name in SIDE_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, staging / name)
        write_converted(staging, config, weights, source=str(folder))
        if out.exists():
            out.rename(old)
        try:
            staging.rename(out)
        except OSError:
            if old.exists():                            # put the previous OUT back
                old.rename(out)
            raise
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror or exc} (while writing {out})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out / WEIGHTS_FILE


# -- reading ---------------------------------------------------------------------------------------
def is_converted(folder) -> bool:
    """Whether ``folder`` holds a fastgpt-converted model.safetensors (reads only its header)."""
    from .loaders.safetensors import read_metadata

    path = Path(folder) / WEIGHTS_FILE
    return path.is_file() and "fastgpt_format" in read_metadata(path)


def _read_raw(path) -> dict:
    """{name: (safetensors dtype, read-only view of the memory map)}: F16 / BF16 stay 16-bit.

    read_safetensors widens 16-bit tensors to float32 copies, which is what Hugging Face files
    need and exactly what a converted file must avoid; the header is validated by the same code.
    """
    from .loaders import safetensors as st

    path = os.fspath(path)
    with st.open_file(path) as f:
        header_len, entries, _ = st._read_header(path, f)
        if not entries:
            return {}
        file_map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    needed = st._LEN_BYTES + header_len + max(e.end for e in entries)
    if len(file_map) < needed:
        raise ConvertedFileError(f"{path}: file shrank to {len(file_map)} bytes while being opened; is another "
                                 "process writing it?")
    data = np.frombuffer(file_map, dtype=np.uint8)[st._LEN_BYTES + header_len:]
    return {e.name: (e.dtype, data[e.begin:e.end].view(st._DISK_DTYPES[e.dtype]).reshape(e.shape)) for e in entries}


def _expected_tensors(config: GPT2Config, dtype: str, tied: bool) -> dict:
    """{tensor name: (safetensors dtype, shape)} that a converted file of this config must hold."""
    shapes = GPT2Weights.expected_shapes(None, config)
    want = {}

    def matrix(name, shape):
        for suffix, st_dtype in _MATRIX_PARTS[dtype].items():
            s = (shape[0], shape[1] // INT8_BLOCK) if suffix == ".scales" else shape
            want[name + suffix] = (st_dtype, s)

    matrix("wte", shapes["wte"])
    if not tied:
        matrix("lm_head", shapes["lm_head"])
    for name in ("wpe", "ln_f_g", "ln_f_b"):
        want[name] = ("F32", shapes[name])
    for i in range(config.n_layer):
        for field, shape in shapes["block"].items():
            if field in LINEAR_FIELDS:
                matrix(f"blocks.{i}.{field}", shape)
            else:
                want[f"blocks.{i}.{field}"] = ("F32", shape)
    return want


def load_converted(folder) -> tuple[GPT2Config, GPT2Weights]:
    """Load a folder written by ``fastgpt convert``: its arrays stay memory-mapped views."""
    from .loaders.safetensors import read_metadata

    folder = Path(folder)
    path = folder / WEIGHTS_FILE

    def fail(msg):
        return ConvertedFileError(f"{path}: {msg}")

    meta = read_metadata(path)
    version = meta.get("fastgpt_format")
    if version != FORMAT_VERSION:
        raise fail(f"fastgpt_format is {short_repr(version)}; this fastgpt reads version {FORMAT_VERSION!r} "
                   "(convert the original checkpoint again)")
    dtype = meta.get("fastgpt_dtype")
    if dtype not in DTYPES:
        raise fail(f"fastgpt_dtype is {short_repr(dtype)}; expected one of {', '.join(DTYPES)}")
    if dtype == "int8" and meta.get("fastgpt_int8_block") != str(INT8_BLOCK):
        raise fail(f"fastgpt_int8_block is {short_repr(meta.get('fastgpt_int8_block'))}; this fastgpt uses {INT8_BLOCK}")
    tied = {"1": True, "0": False}.get(meta.get("fastgpt_tied_head"))
    if tied is None:
        raise fail(f"fastgpt_tied_head is {short_repr(meta.get('fastgpt_tied_head'))}; expected '1' or '0'")
    config = GPT2Config.from_pretrained(folder)
    try:
        stored = GPT2Config.from_dict(jsonfile.loads(meta.get("config", ""), ConfigError, "config"),
                                      source=f"{path} metadata")
    except ConfigError as exc:
        raise fail(f"its 'config' metadata is not a valid GPT-2 config ({exc})") from None
    # Only what shapes the weights or the arithmetic must match: the special token ids are the
    # folder's to edit, as in any Hugging Face folder.
    ours, theirs = stored.to_dict(), config.to_dict()
    diff = {k: (v, theirs[k]) for k, v in ours.items() if theirs[k] != v and k not in TOKEN_ID_FIELDS}
    if diff:
        raise fail(f"written for a different config than {folder / 'config.json'}: "
                   + ", ".join(f"{k}={a!r} in the file, {b!r} in config.json" for k, (a, b) in diff.items()))

    raw = _read_raw(path)
    # Before the table of expected tensors is built: its size follows n_layer from config.json.
    if config.n_layer > len(raw):
        raise fail(f"config.json says n_layer={config.n_layer}, but the file holds only {len(raw)} tensors")
    want = _expected_tensors(config, dtype, tied)
    problems = []
    for name, (st_dtype, shape) in want.items():
        if name not in raw:
            problems.append(f"tensor {name!r}: missing (a {dtype} file needs {st_dtype} {shape})")
        elif raw[name][0] != st_dtype:
            problems.append(f"tensor {name!r}: dtype {raw[name][0]}, expected {st_dtype} for {dtype} weights")
        elif raw[name][1].shape != shape:
            problems.append(f"tensor {name!r}: shape {raw[name][1].shape}, expected {shape}")
    pads = {n for n in raw if n.endswith(PAD_SUFFIX) and n[: -len(PAD_SUFFIX)] in want}
    problems += [f"tensor {name!r}: unexpected in a {dtype} file" for name in sorted(set(raw) - set(want) - pads)]
    if problems:
        raise fail("does not match its metadata and config.json:\n  " + "\n  ".join(problems))

    def matrix(name):
        # A file written elsewhere may leave a matrix unaligned: then (only then) it is copied.
        if dtype == "float32":
            return raw[name][1]
        if dtype == "int8":
            scales = raw[name + ".scales"][1].view(np.uint16)
            with np.errstate(invalid="ignore"):
                bad = ~(scales.view(np.float16) >= 0) | np.isinf(scales.view(np.float16))
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise fail(f"tensor {name + '.scales'!r}: scale {scales.view(np.float16)[r, c]} at [{r}, {c}] "
                           "is not a finite non-negative number")
            return QuantizedWeight("int8", aligned(raw[name + ".q"][1]), aligned(scales))
        return QuantizedWeight(dtype, aligned(raw[name][1].view(np.uint16)))

    wte = matrix("wte")
    blocks = [
        BlockWeights(**{f: matrix(f"blocks.{i}.{f}") if f in LINEAR_FIELDS else raw[f"blocks.{i}.{f}"][1]
                        for f in _BLOCK_FIELDS})
        for i in range(config.n_layer)
    ]
    weights = GPT2Weights(wte=wte, wpe=raw["wpe"][1], blocks=blocks, ln_f_g=raw["ln_f_g"][1],
                          ln_f_b=raw["ln_f_b"][1], lm_head=wte if tied else matrix("lm_head"))
    try:
        weights.validate(config)
    except ValueError as exc:
        raise fail(str(exc)) from None
    return config, weights


# -- command line ----------------------------------------------------------------------------------
def cmd_convert(args) -> int:
    t0 = time.perf_counter()
    # SIGTERM as an exception, so that convert's cleanup runs (its staging folder, beside OUT)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_signal) if main_thread else None
    try:
        path = convert(args.model, args.out, args.dtype, force=args.force)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.1f} MB, {args.dtype}) in {time.perf_counter() - t0:.1f} s; "
          f"load it with --model {args.out}")
    return 0


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def add_convert_parser(subparsers):
    """Register ``convert`` on the CLI's subparsers; returns the subparser."""
    p = subparsers.add_parser(
        "convert", help="save a model's weights in bfloat16, float16 or int8, to load instantly",
        description="Load the GPT-2 model DIR, quantize its matrices to --dtype (linear weights, embeddings "
                    "and the tied LM head; norms and biases stay float32) and write OUT: model.safetensors "
                    "in fastgpt's layout plus DIR's config and tokenizer files. OUT then loads "
                    "memory-mapped, with no conversion, like any model folder.",
    )
    p.add_argument("model", metavar="DIR", help="a Hugging Face GPT-2 folder or a bundled model name")
    p.add_argument("out", metavar="OUT", help="the folder to write: new or empty, unless --force")
    p.add_argument("--force", action="store_true",
                   help="replace OUT if it is not empty (written beside it, then swapped in)")
    p.add_argument("--dtype", required=True, choices=DTYPES, help="what to hold the matrices in")
    p.set_defaults(func=cmd_convert)
    return p
