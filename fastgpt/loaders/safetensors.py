"""Read and write .safetensors files with NumPy alone.

Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 N,
then N bytes of UTF-8 JSON, then the data section. The JSON maps each tensor name to
``{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}``, offsets counted from
the start of the data section; the optional key ``"__metadata__"`` maps str -> str.

Why our own reader: the file is memory-mapped once and every tensor stored in a dtype
NumPy has natively (F32 above all) is returned as a read-only view of that map. Loading
GPT-2 therefore copies nothing, pages come in on first touch, and processes share the
page cache. F16 and BF16 are widened to float32 (a copy), because the model computes in
float32 and NumPy has no bfloat16.

Nothing in the header is trusted. Every dtype, shape and byte range is checked before a
view is made: a bad offset would otherwise be an out-of-bounds read, or worse, weights
that load without error and are silently wrong. Gaps between tensors are tolerated
(harmless to us, though the reference implementation rejects them); overlaps are not.

Non-goals: FP8 dtypes; converting float32 to bfloat16 on write (pass the uint16 bit
patterns with ``dtypes={name: "BF16"}``); big-endian hosts beyond correct values (the
views stay little-endian dtypes, which NumPy handles, but more slowly).
"""

import json
import math
import mmap
import os
import secrets
from collections import namedtuple

import numpy as np

from .. import jsonfile
from ..jsonfile import short_repr
from .errors import SafetensorsError, raise_if_lfs_pointer, shape_problem

__all__ = ["read_safetensors", "read_metadata", "write_safetensors", "SafetensorsError"]

# safetensors dtype name -> NumPy dtype of the bytes on disk (always little-endian).
# BF16 is read as its raw uint16 bits and widened in _to_array.
_DISK_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

# (NumPy kind, itemsize) -> safetensors dtype name, for writing. Keyed this way so that
# native and explicitly little-/big-endian arrays map to the same name.
_NAME_FOR_NUMPY = {
    (dt.kind, dt.itemsize): name for name, dt in _DISK_DTYPES.items() if name != "BF16"
}

# The only non-natural name a writer may request: bfloat16 has no NumPy dtype, so its
# bit patterns travel as uint16.
_DTYPE_OVERRIDES = {"BF16": "U16"}

_METADATA_KEY = "__metadata__"
_LEN_BYTES = 8
# The reference implementation caps the header at 100 MB too; a larger length is a
# corrupt or foreign file, and we must not try to read (or allocate) that much.
_MAX_HEADER_BYTES = 100_000_000

_Entry = namedtuple("_Entry", "name dtype shape begin end")


def read_safetensors(path):
    """Return ``{name: array}`` for every tensor in the .safetensors file at ``path``.

    Tensors stored as F32, F64, I64, I32, I16, I8, U64, U32, U16, U8 or BOOL are
    read-only views of a memory map of the file (no copy); the map stays open as long as
    any returned array is alive. F16 and BF16 tensors are converted to float32 arrays,
    also marked read-only. Raises SafetensorsError, naming the file and tensor, if the
    file is malformed, and FileNotFoundError if it does not exist.
    """
    path = os.fspath(path)
    with open_file(path) as f:
        header_len, entries, _ = _read_header(path, f)
        if not entries:
            return {}
        # Map through the same open file the header came from. ACCESS_READ makes every
        # view read-only: weights are shared, and a stray in-place op must fail loudly
        # rather than write through to the file (or the page cache of other processes).
        file_map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    needed = _LEN_BYTES + header_len + max(e.end for e in entries)
    if len(file_map) < needed:
        # The header was checked against the size at open; if the file has shrunk since,
        # touching a page past its end would be SIGBUS, not an exception.
        raise SafetensorsError(
            f"{path}: file shrank to {len(file_map)} bytes while being opened, but its "
            f"tensors need {needed}; is another process writing it?"
        )
    data__b = np.frombuffer(file_map, dtype=np.uint8)[_LEN_BYTES + header_len :]
    return {e.name: _to_array(data__b, e) for e in entries}


def read_metadata(path):
    """Return the ``__metadata__`` dict (str -> str) of a .safetensors file, or ``{}``.

    The whole header is validated, as in read_safetensors; no tensor data is read.
    """
    path = os.fspath(path)
    with open_file(path) as f:
        _, _, metadata = _read_header(path, f)
    return metadata


def open_file(path):
    """``open(path, "rb")``, with a directory reported as a SafetensorsError."""
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise SafetensorsError(f"{path}: is a directory, expected a .safetensors file") from None


def write_safetensors(path, tensors, metadata=None, dtypes=None):
    """Write ``tensors`` ({name: ndarray}) to ``path`` as a .safetensors file.

    Supported array dtypes: float64/32/16, int64/32/16/8, uint64/32/16/8, bool. To store
    bfloat16, pass the raw bit patterns as a uint16 array and ``dtypes={name: "BF16"}``.
    ``metadata`` is an optional str -> str dict stored as ``__metadata__``.

    Data is written little-endian and C-contiguous. The header lists tensors by name;
    the data section orders them by item size (largest first), then name, so that with
    the header padded to a multiple of 8 bytes every tensor starts aligned to its item
    size and maps to an aligned view (the reference writer does the same). The file is
    written to a temporary name and renamed into place, so a reader that has the old
    file mapped never sees it change under it, and a failed write leaves no half file.
    """
    path = os.fspath(path)
    dtypes = {} if dtypes is None else dict(dtypes)
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors must be a dict of name -> ndarray, got {type(tensors).__name__}")
    unknown = sorted(set(dtypes) - set(tensors))
    if unknown:
        raise ValueError(f"dtypes names tensors that are not being written: {unknown}")

    arrays = {}  # name -> (safetensors dtype name, little-endian C-contiguous array)
    for name, value in tensors.items():
        if not isinstance(name, str) or name == _METADATA_KEY:
            raise ValueError(f"tensor names must be str and not {_METADATA_KEY!r}, got {name!r}")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"tensor {name!r} must be a numpy.ndarray, got {type(value).__name__}")
        arrays[name] = _prepare_for_write(name, value, dtypes.get(name))

    header = {}
    if metadata is not None:
        _check_metadata(metadata, lambda msg: TypeError(f"metadata: {msg}"))
        header[_METADATA_KEY] = dict(metadata)
    order = sorted(arrays, key=lambda n: (-arrays[n][1].dtype.itemsize, n))
    offset = 0
    for name in order:
        dtype_name, arr = arrays[name]
        header[name] = {
            "dtype": dtype_name,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    # Spaces are valid JSON whitespace; padding to 8 keeps the data section 8-aligned.
    header_bytes += b" " * (-len(header_bytes) % 8)

    # Not tempfile.mkstemp: it creates mode 0600, and the renamed file would keep it.
    tmp_path = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp_path, "xb") as f:
            f.write(len(header_bytes).to_bytes(_LEN_BYTES, "little"))
            f.write(header_bytes)
            for name in order:
                arr = arrays[name][1]
                if arr.nbytes:
                    f.write(arr.reshape(-1).view(np.uint8).data)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def _prepare_for_write(name, arr, override):
    """Return (safetensors dtype name, little-endian C-contiguous copy or view of arr)."""
    natural = _NAME_FOR_NUMPY.get((arr.dtype.kind, arr.dtype.itemsize))
    if natural is None:
        raise TypeError(
            f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors by this "
            f"writer; supported: {sorted(_DISK_DTYPES[n].name for n in _NAME_FOR_NUMPY.values())}"
        )
    dtype_name = natural
    if override is not None and override != natural:
        if _DTYPE_OVERRIDES.get(override) != natural:
            raise ValueError(
                f"tensor {name!r}: cannot write a {arr.dtype} array as {override!r}; "
                f"the only override is 'BF16', for uint16 arrays holding bfloat16 bits"
            )
        dtype_name = override
    disk = _DISK_DTYPES[natural]
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    return dtype_name, arr.astype(disk, order="C", copy=False)


def _read_header(path, f):
    """Validate the header of the open file ``f``; return (header_len, entries, metadata).

    ``entries`` is a list of _Entry sorted by begin offset.
    """
    raise_if_lfs_pointer(path, SafetensorsError)
    file_size = os.fstat(f.fileno()).st_size
    if file_size < _LEN_BYTES:
        raise SafetensorsError(
            f"{path}: file is {file_size} bytes, shorter than the 8-byte header length "
            f"prefix; it is truncated or not a safetensors file"
        )
    header_len = int.from_bytes(f.read(_LEN_BYTES), "little")
    if header_len > _MAX_HEADER_BYTES:
        raise SafetensorsError(
            f"{path}: header length {header_len} exceeds the {_MAX_HEADER_BYTES}-byte "
            f"limit; the file is corrupt or not a safetensors file"
        )
    if header_len > file_size - _LEN_BYTES:
        raise SafetensorsError(
            f"{path}: header length {header_len} is larger than the "
            f"{file_size - _LEN_BYTES} bytes that follow it; the file is truncated"
        )
    header_bytes = f.read(header_len)
    data_len = file_size - _LEN_BYTES - header_len

    try:
        text = header_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"{path}: header is not valid UTF-8 ({e})") from e
    header = jsonfile.loads(text, SafetensorsError, f"{path}: header", object_pairs_hook=_no_duplicate_keys)
    if not isinstance(header, dict):
        raise SafetensorsError(
            f"{path}: header must be a JSON object, got {type(header).__name__}"
        )

    metadata = header.pop(_METADATA_KEY, None)
    if metadata is None:
        metadata = {}
    _check_metadata(metadata, lambda msg: SafetensorsError(f"{path}: {_METADATA_KEY}: {msg}"))

    entries = [_parse_entry(path, name, info, data_len) for name, info in header.items()]
    _check_no_overlap(path, entries)
    entries.sort(key=lambda e: (e.begin, e.end))
    return header_len, entries, dict(metadata)


def _parse_entry(path, name, info, data_len):
    def fail(msg):
        return SafetensorsError(f"{path}: tensor {short_repr(name, 200)}: {msg}")

    if not isinstance(info, dict):
        raise fail(f"entry must be a JSON object, got {short_repr(info)}")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            raise fail(f"entry has no {key!r} (it has {short_repr(sorted(info))})")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DISK_DTYPES:
        raise fail(f"unknown dtype {short_repr(dtype)}; expected one of {sorted(_DISK_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_nonneg_int(d) for d in shape):
        raise fail(f"shape must be a list of non-negative ints, got {short_repr(shape)}")
    problem = shape_problem(shape, _DISK_DTYPES[dtype].itemsize)
    if problem:
        raise fail(problem)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_nonneg_int(o) for o in offsets)
    ):
        raise fail(f"data_offsets must be [begin, end] with non-negative ints, got {short_repr(offsets)}")
    begin, end = offsets
    if begin > end:
        raise fail(f"data_offsets [{begin}, {end}] has begin > end")
    # Python ints: a hostile shape cannot overflow this product.
    needed = math.prod(shape) * _DISK_DTYPES[dtype].itemsize
    if end - begin != needed:
        raise fail(
            f"data_offsets [{begin}, {end}] span {end - begin} bytes, but dtype {dtype} "
            f"with shape {shape} needs {needed} bytes"
        )
    if end > data_len:
        raise fail(
            f"data_offsets [{begin}, {end}] run past the end of the data section "
            f"({data_len} bytes); the file is truncated or the header is wrong"
        )
    return _Entry(name, dtype, tuple(shape), begin, end)


def _check_no_overlap(path, entries):
    # Zero-byte tensors occupy nothing and may sit anywhere, so they are left out.
    spans = sorted((e for e in entries if e.end > e.begin), key=lambda e: (e.begin, e.end))
    for prev, cur in zip(spans, spans[1:]):
        if cur.begin < prev.end:
            raise SafetensorsError(
                f"{path}: tensor {cur.name!r}: data_offsets [{cur.begin}, {cur.end}] "
                f"overlap tensor {prev.name!r} at [{prev.begin}, {prev.end}]"
            )


def _to_array(data__b, entry):
    raw = data__b[entry.begin : entry.end].view(_DISK_DTYPES[entry.dtype]).reshape(entry.shape)
    if entry.dtype == "F16":
        arr = raw.astype(np.float32)
    elif entry.dtype == "BF16":
        # bfloat16 is the top half of a float32: put the 16 bits in the high half of a
        # uint32 and reinterpret. Exact, including NaN payloads, inf and subnormals.
        arr = (raw.astype(np.uint32) << 16).view(np.float32)
    else:
        return raw  # a read-only view of the map
    arr.flags.writeable = False  # same contract for every dtype
    return arr


def _check_metadata(metadata, make_error):
    if not isinstance(metadata, dict):
        raise make_error(f"must be a dict of str -> str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise make_error(f"must map str -> str, but has {short_repr(key)}: {short_repr(value)}")


def _is_nonneg_int(x):
    # bool is an int subclass; JSON true/false in a shape is corruption, not 1/0.
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _no_duplicate_keys(pairs):
    # json.loads keeps the last duplicate silently; two entries for one tensor name
    # mean the header is corrupt, and which one "wins" must not be an accident.
    seen, dupes = set(), set()
    for key, _ in pairs:
        (dupes if key in seen else seen).add(key)
    if dupes:
        raise ValueError(f"duplicate keys {sorted(dupes)}")
    return dict(pairs)
