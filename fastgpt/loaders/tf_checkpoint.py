"""Read TensorFlow checkpoint V2 bundles (OpenAI's GPT-2 release) with NumPy alone.

A checkpoint ``<prefix>`` is two kinds of file (TensorFlow's ``tensor_bundle`` format):

``<prefix>.index``
    An SSTable (LevelDB's table format, which TensorFlow copies): sorted ``key -> value``
    pairs. Each key is a tensor name and its value a serialized ``BundleEntryProto``
    (dtype, shape, shard_id, offset, size, crc32c). The empty key ``""`` holds the
    ``BundleHeaderProto`` (num_shards, endianness, version) and sorts first.
``<prefix>.data-SSSSS-of-NNNNN``
    The tensors' raw bytes, back to back: tensor ``e`` is bytes ``[e.offset, e.offset +
    e.size)`` of shard ``e.shard_id``, C order, in the header's byte order.

SSTable layout, all integers little-endian::

    [data block][trailer] ... [metaindex block][trailer] [index block][trailer] [footer]

    trailer  1 byte compression type (0 = none, 1 = snappy) + fixed32 masked crc32c of
             the block and that byte
    footer   48 bytes: BlockHandle metaindex, BlockHandle index (each varint64 offset,
             varint64 size), zero padding to 40 bytes, fixed64 magic 0xdb4775248b80fb57
    block    entries, then fixed32 restart offsets [num_restarts], fixed32 num_restarts;
             an entry is varint32 shared, varint32 non_shared, varint32 value_length,
             the key's bytes after the ``shared`` bytes it has in common with the previous
             key, then the value
    index    one entry per data block: a key >= that block's last key -> its BlockHandle

Values are decoded with a minimal protobuf wire-format reader that knows just these
messages; unknown fields are skipped, as protobuf itself does.

Nothing in the files is trusted: the footer magic, every block handle and checksum, each
entry's dtype, shard, offset and ``size == prod(shape) * itemsize`` are checked, and a
problem raises ``TFCheckpointError`` naming the file and the tensor. Tensor data is
memory-mapped and returned as read-only views (no copy); with ``verify_checksums`` each
tensor's crc32c is checked too, by a NumPy CRC that runs many byte lanes at once (a
byte-at-a-time Python CRC would take minutes on GPT-2 1.5B).

Non-goals: writing checkpoints; snappy-compressed index blocks (TensorFlow writes bundle
indexes uncompressed); string, variant, resource and quantized tensors; partitioned
("sliced") variables; the ``.meta`` graph.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np

from ..jsonfile import short_repr
from .errors import WeightsError, raise_if_lfs_pointer, shape_problem

__all__ = [
    "TFCheckpointError",
    "TensorEntry",
    "TFCheckpointReader",
    "resolve_tf_checkpoint",
    "list_tf_checkpoint",
    "read_tf_checkpoint",
    "crc32c",
]


class TFCheckpointError(WeightsError):
    """A TensorFlow checkpoint is missing, malformed, corrupted or uses unsupported features."""


_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48               # 2 BlockHandles of at most 20 bytes each, padded, + magic
_TRAILER_SIZE = 5               # compression type byte + fixed32 masked crc32c
_COMPRESSION = {0: "none", 1: "snappy"}
_BUNDLE_VERSION = 1             # TensorFlow's kTensorBundleVersion; readers check min_consumer

# tensorflow/core/framework/types.proto DataType -> NumPy dtype of the stored bytes
# (little-endian; flipped for a big-endian bundle). bfloat16 is read as uint16 bits and
# widened to float32, because NumPy has no bfloat16.
_DTYPES = {
    1: np.dtype("<f4"),     # DT_FLOAT
    2: np.dtype("<f8"),     # DT_DOUBLE
    3: np.dtype("<i4"),     # DT_INT32
    4: np.dtype("u1"),      # DT_UINT8
    5: np.dtype("<i2"),     # DT_INT16
    6: np.dtype("i1"),      # DT_INT8
    8: np.dtype("<c8"),     # DT_COMPLEX64
    9: np.dtype("<i8"),     # DT_INT64
    10: np.dtype("?"),      # DT_BOOL
    14: np.dtype("<u2"),    # DT_BFLOAT16 (bits)
    17: np.dtype("<u2"),    # DT_UINT16
    18: np.dtype("<c16"),   # DT_COMPLEX128
    19: np.dtype("<f2"),    # DT_HALF
    22: np.dtype("<u4"),    # DT_UINT32
    23: np.dtype("<u8"),    # DT_UINT64
}
_DT_BFLOAT16 = 14
_UNSUPPORTED_DTYPES = {
    7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16", 16: "quint16",
    20: "resource", 21: "variant",
}


# --------------------------------------------------------------------------------------
# crc32c (Castagnoli), as TensorFlow and LevelDB use it.
# --------------------------------------------------------------------------------------

def _crc_table() -> list[int]:
    table = []
    for b in range(256):
        r = b
        for _ in range(8):
            r = (r >> 1) ^ (0x82F63B78 if r & 1 else 0)   # reflected polynomial 0x1EDC6F41
        table.append(r)
    return table


_CRC_TABLE = _crc_table()
_CRC_TABLE_NP = np.array(_CRC_TABLE, np.uint32)
_CRC_FAST_MIN = 4096            # below this many bytes the plain loop is quicker
_crc_table16: np.ndarray | None = None
_shift_tables: dict[int, list[list[int]]] = {}


def _crc_update(reg: int, data: bytes) -> int:
    """Byte-at-a-time register update: the reference the vectorised crc32c is tested against."""
    table = _CRC_TABLE
    for b in data:
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _crc32c_ref(data: bytes) -> int:
    return _crc_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF


def _table16() -> np.ndarray:
    """T16[x]: the register x < 2**16 shifted through two zero bytes, so that two bytes w
    (little-endian) update a register r as T16[(r ^ w) & 0xFFFF] ^ (r >> 16)."""
    global _crc_table16
    if _crc_table16 is None:
        reg = np.arange(1 << 16, dtype=np.uint32)
        for _ in range(2):
            reg = _CRC_TABLE_NP[reg & 0xFF] ^ (reg >> 8)
        _crc_table16 = reg
    return _crc_table16


def _zero_shift_tables(n: int) -> list[list[int]]:
    """Tables z[i][b]: the register (b << 8i) after n zero bytes. Shifting is linear, so any
    register r goes through n zero bytes as z[0][r & 255] ^ z[1][r >> 8 & 255] ^ ... ^ z[3][r >> 24]."""
    if n not in _shift_tables:
        reg = np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]  # (4, 256)
        for _ in range(n):
            reg = _CRC_TABLE_NP[reg & 0xFF] ^ (reg >> 8)
        _shift_tables[n] = reg.tolist()
    return _shift_tables[n]


def crc32c(data) -> int:
    """crc32c of a bytes-like object or an array's bytes (unmasked; 0xE3069283 for b"123456789").

    For long inputs the tail of the message is cut into K lanes of S bytes (S ~ sqrt(n)),
    which NumPy runs side by side, two bytes per step, each lane's register starting at 0.
    The register update is linear in (register, data), so the lanes combine exactly: shift
    the running register (first the head's, computed byte by byte from 0xFFFFFFFF) through
    S zero bytes and xor in the next lane's register.
    """
    buf = data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    n = buf.shape[0]
    if n < _CRC_FAST_MIN:
        return _crc32c_ref(buf.tobytes())
    S = max(64, math.isqrt(n)) & ~1                             # bytes per lane, even
    K = n // S                                                  # lanes
    head = n - K * S                                            # < S bytes, done byte by byte
    words = np.ascontiguousarray(buf[head:].view("<u2").reshape(K, S // 2).T)   # (S/2, K)
    table16 = _table16()
    reg = np.zeros(K, np.uint32)                                # (K,)
    idx = np.empty(K, np.uint32)
    val = np.empty(K, np.uint32)
    for j in range(S // 2):
        np.bitwise_xor(reg, words[j], out=idx)
        np.bitwise_and(idx, 0xFFFF, out=idx)
        np.take(table16, idx, out=val)
        np.right_shift(reg, 16, out=reg)
        np.bitwise_xor(reg, val, out=reg)
    z0, z1, z2, z3 = _zero_shift_tables(S)
    r = _crc_update(0xFFFFFFFF, buf[:head].tobytes())
    for lane_reg in reg.tolist():
        r = z0[r & 0xFF] ^ z1[(r >> 8) & 0xFF] ^ z2[(r >> 16) & 0xFF] ^ z3[r >> 24] ^ lane_reg
    return r ^ 0xFFFFFFFF


def _mask_crc(crc: int) -> int:
    # LevelDB/TensorFlow store checksums "masked", so that a CRC of data holding CRCs is safe.
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------
# Varints and the protobuf wire format (just what the bundle messages use).
# --------------------------------------------------------------------------------------

class _Truncated(Exception):
    """Internal: a varint or field runs past the end of its buffer (caller adds context)."""


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Truncated
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _proto_fields(buf: bytes):
    """Yield (field_number, value) of a serialized message: ints for varint/fixed, bytes
    for length-delimited fields. Groups (wire types 3, 4) are not used by these messages."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > n:
                raise _Truncated
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > n:
                raise _Truncated
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wire == 5:
            if pos + 4 > n:
                raise _Truncated
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise _Truncated  # unknown wire type: not a message we can read
        yield field, value


def _parse_shape(buf: bytes) -> tuple[int, ...] | None:
    """TensorShapeProto: dim = 2 (repeated Dim{size = 1}), unknown_rank = 3. None if unknown."""
    dims = []
    for field, value in _proto_fields(buf):
        if field == 2 and isinstance(value, bytes):
            size = 0
            for f, v in _proto_fields(value):
                if f == 1 and isinstance(v, int):
                    size = _signed64(v)
            dims.append(size)
        elif field == 3 and value:
            return None
    return tuple(dims)


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One tensor's BundleEntryProto, decoded."""

    name: str
    dtype_enum: int           # TensorFlow DataType number
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None        # masked, as stored; None if absent

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype read_tf_checkpoint returns (float32 for bfloat16)."""
        if self.dtype_enum == _DT_BFLOAT16:
            return np.dtype(np.float32)
        return _DTYPES[self.dtype_enum].newbyteorder("=")


# --------------------------------------------------------------------------------------
# Finding the files.
# --------------------------------------------------------------------------------------

_CHECKPOINT_STATE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"\s*$', re.M)


def resolve_tf_checkpoint(path) -> str:
    """The checkpoint prefix for ``path``: a prefix (``.../model.ckpt``), its ``.index`` file,
    or a folder (its ``checkpoint`` state file's model_checkpoint_path, else its only ``*.index``)."""
    path = os.fspath(path)
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if os.path.isfile(path + ".index"):
        return path
    if os.path.isdir(path):
        state = os.path.join(path, "checkpoint")
        if os.path.isfile(state):
            with open(state, encoding="utf-8", errors="replace") as f:
                m = _CHECKPOINT_STATE.search(f.read())
            if m:
                named = m.group(1)
                # Relative paths are relative to the folder; an absolute path from the
                # machine that wrote the checkpoint is tried, then its base name here.
                for prefix in (os.path.join(path, named), os.path.join(path, os.path.basename(named))):
                    if os.path.isfile(prefix + ".index"):
                        return prefix
        indexes = sorted(f[: -len(".index")] for f in os.listdir(path)
                         if f.endswith(".index") and os.path.isfile(os.path.join(path, f)))
        if len(indexes) == 1:
            return os.path.join(path, indexes[0])
        what = f"several checkpoints ({', '.join(indexes)}); pass one prefix" if indexes else "no *.index file"
        raise TFCheckpointError(f"{path}: no TensorFlow checkpoint to read: the folder holds {what}")
    raise FileNotFoundError(
        f"{path}: not a TensorFlow checkpoint: expected a prefix with {path}.index beside it, "
        f"an .index file, or a folder holding one"
    )


# --------------------------------------------------------------------------------------
# The reader.
# --------------------------------------------------------------------------------------

class TFCheckpointReader:
    """Parses ``<prefix>.index`` on construction; ``read(name)`` maps the tensor's bytes."""

    def __init__(self, path):
        self.prefix = resolve_tf_checkpoint(path)
        self.index_path = self.prefix + ".index"
        raise_if_lfs_pointer(self.index_path, TFCheckpointError)
        with open(self.index_path, "rb") as f:
            data = f.read()
        pairs = self._read_table(data)
        if not pairs or pairs[0][0] != b"":
            raise TFCheckpointError(f"{self.index_path}: no bundle header (the empty key); not a checkpoint V2 index")
        self.num_shards, self.big_endian = self._parse_header(pairs[0][1])
        self.entries: dict[str, TensorEntry] = {}
        for key, value in pairs[1:]:
            entry = self._parse_entry(key, value)
            self.entries[entry.name] = entry
        self._maps: dict[int, np.ndarray] = {}

    # -- the SSTable ----------------------------------------------------------------------
    def _error(self, msg: str) -> TFCheckpointError:
        return TFCheckpointError(f"{self.index_path}: {msg}")

    def _block(self, data: bytes, offset: int, size: int, what: str) -> bytes:
        """Block contents at a handle, after checking bounds, compression and checksum."""
        end = offset + size + _TRAILER_SIZE
        if offset < 0 or size < 0 or end > len(data) - _FOOTER_SIZE:
            raise self._error(f"{what} block [{offset}, {offset + size}) lies outside the file's "
                              f"{len(data) - _FOOTER_SIZE} bytes of blocks (truncated or corrupted)")
        block = data[offset:offset + size]
        kind = data[offset + size]
        if kind != 0:
            name = _COMPRESSION.get(kind, f"unknown type {kind}")
            raise self._error(f"{what} block at offset {offset} is compressed ({name}); only uncompressed "
                              "indexes are supported (TensorFlow writes checkpoint indexes uncompressed)")
        stored = int.from_bytes(data[offset + size + 1:end], "little")
        if _mask_crc(crc32c(data[offset:offset + size + 1])) != stored:
            raise self._error(f"checksum mismatch in the {what} block at offset {offset}: the file is corrupted")
        return block

    def _block_entries(self, block: bytes, what: str) -> list[tuple[bytes, bytes]]:
        if len(block) < 4:
            raise self._error(f"{what} block of {len(block)} bytes is too short")
        num_restarts = int.from_bytes(block[-4:], "little")
        limit = len(block) - 4 - 4 * num_restarts                 # entries end where restarts start
        if num_restarts < 1 or limit < 0:
            raise self._error(f"{what} block has an invalid restart count {num_restarts}")
        out, key, pos = [], b"", 0
        try:
            while pos < limit:
                shared, pos = _varint(block, pos)
                non_shared, pos = _varint(block, pos)
                value_len, pos = _varint(block, pos)
                if shared > len(key) or pos + non_shared + value_len > limit:
                    raise _Truncated
                key = key[:shared] + block[pos:pos + non_shared]
                pos += non_shared
                out.append((key, block[pos:pos + value_len]))
                pos += value_len
        except _Truncated:
            raise self._error(f"{what} block has a malformed entry at byte {pos}") from None
        return out

    def _read_table(self, data: bytes) -> list[tuple[bytes, bytes]]:
        if len(data) < _FOOTER_SIZE:
            raise self._error(f"{len(data)} bytes is too short for an SSTable footer ({_FOOTER_SIZE} bytes)")
        footer = data[-_FOOTER_SIZE:]
        magic = int.from_bytes(footer[-8:], "little")
        if magic != _MAGIC:
            raise self._error(f"bad magic number {magic:#018x} (expected {_MAGIC:#018x}); "
                              "not a TensorFlow checkpoint index, or truncated")
        try:
            pos = 0
            _meta_offset, pos = _varint(footer, pos)               # metaindex: unused by bundles
            _meta_size, pos = _varint(footer, pos)
            index_offset, pos = _varint(footer, pos)
            index_size, pos = _varint(footer, pos)
        except _Truncated:
            raise self._error("malformed footer block handles") from None
        pairs = []
        for sep, handle in self._block_entries(self._block(data, index_offset, index_size, "index"), "index"):
            try:
                off, p = _varint(handle, 0)
                size, _ = _varint(handle, p)
            except _Truncated:
                raise self._error(f"malformed block handle for index key {sep!r}") from None
            pairs += self._block_entries(self._block(data, off, size, "data"), "data")
        for (a, _), (b, _) in zip(pairs, pairs[1:]):
            if not a < b:
                raise self._error(f"keys out of order ({a!r} then {b!r}); the index is corrupted")
        return pairs

    # -- the bundle messages -------------------------------------------------------------
    def _parse_header(self, value: bytes) -> tuple[int, bool]:
        num_shards, endianness, min_consumer = 1, 0, 0
        try:
            for field, v in _proto_fields(value):
                if field == 1:
                    num_shards = _signed64(v)
                elif field == 2:
                    endianness = v
                elif field == 3 and isinstance(v, bytes):          # VersionDef
                    for f, x in _proto_fields(v):
                        if f == 2:
                            min_consumer = x
        except _Truncated:
            raise self._error("malformed bundle header") from None
        if num_shards < 1:
            raise self._error(f"bundle header says num_shards={num_shards}")
        if endianness not in (0, 1):
            raise self._error(f"bundle header has unknown endianness {endianness}")
        if min_consumer > _BUNDLE_VERSION:
            raise self._error(f"written by a newer TensorFlow (bundle min_consumer {min_consumer} > "
                              f"{_BUNDLE_VERSION}, the version this reader implements)")
        return num_shards, endianness == 1

    def _parse_entry(self, key: bytes, value: bytes) -> TensorEntry:
        name = key.decode("utf-8", errors="replace")
        dtype, shape, shard_id, offset, size, crc, sliced = 0, (), 0, 0, 0, None, False
        try:
            for field, v in _proto_fields(value):
                if field == 1:
                    dtype = v
                elif field == 2 and isinstance(v, bytes):
                    shape = _parse_shape(v)
                elif field == 3:
                    shard_id = _signed64(v)
                elif field == 4:
                    offset = _signed64(v)
                elif field == 5:
                    size = _signed64(v)
                elif field == 6:
                    crc = v
                elif field == 7:
                    sliced = True
        except _Truncated:
            raise self._error(f"tensor {name!r}: malformed BundleEntryProto") from None
        where = f"tensor {name!r}"
        if sliced:
            raise self._error(f"{where} is a partitioned (sliced) variable, which is not supported")
        if shape is None or any(d < 0 for d in shape):
            raise self._error(f"{where} has an unknown or negative shape {short_repr(shape)}")
        problem = shape_problem(shape, _DTYPES[dtype].itemsize if dtype in _DTYPES else 1)
        if problem:
            raise self._error(f"{where}: {problem}")
        if not 0 <= shard_id < self.num_shards:
            raise self._error(f"{where} is in shard {shard_id}, outside [0, {self.num_shards})")
        if offset < 0 or size < 0:
            raise self._error(f"{where} has offset {offset} and size {size}; both must be >= 0")
        if dtype in _DTYPES:
            expected = math.prod(shape) * _DTYPES[dtype].itemsize
            if size != expected:
                raise self._error(f"{where}: size {size} bytes != prod(shape {list(shape)}) * itemsize "
                                  f"{_DTYPES[dtype].itemsize} = {expected}")
        return TensorEntry(name, dtype, tuple(shape), shard_id, offset, size, crc)

    # -- tensor data ---------------------------------------------------------------------
    def data_path(self, shard_id: int) -> str:
        return f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"

    def _shard(self, shard_id: int) -> np.ndarray:
        if shard_id not in self._maps:
            path = self.data_path(shard_id)
            if not os.path.isfile(path):
                raise TFCheckpointError(f"{path}: data shard {shard_id} of {self.num_shards} is missing "
                                        f"(the index {self.index_path} refers to it)")
            raise_if_lfs_pointer(path, TFCheckpointError)
            if os.path.getsize(path) == 0:
                self._maps[shard_id] = np.zeros(0, np.uint8)       # mmap refuses empty files
            else:
                self._maps[shard_id] = np.memmap(path, dtype=np.uint8, mode="r")
        return self._maps[shard_id]

    def read(self, name: str, verify_checksum: bool = True) -> np.ndarray:
        """The tensor as a read-only array (a view of the mapped data file when possible)."""
        entry = self.entries.get(name)
        if entry is None:
            raise KeyError(f"{self.prefix}: no tensor named {name!r} ({len(self.entries)} tensors)")
        where = f"{self.prefix}: tensor {name!r}"
        if entry.dtype_enum not in _DTYPES:
            kind = _UNSUPPORTED_DTYPES.get(entry.dtype_enum, f"DataType {entry.dtype_enum}")
            raise TFCheckpointError(f"{where} has dtype {kind}, which this reader does not support; "
                                    "read the other tensors with names=[...]")
        shard = self._shard(entry.shard_id)
        if entry.offset + entry.size > shard.shape[0]:
            raise TFCheckpointError(
                f"{where}: bytes [{entry.offset}, {entry.offset + entry.size}) lie outside "
                f"{self.data_path(entry.shard_id)} ({shard.shape[0]} bytes; truncated?)")
        raw = shard[entry.offset:entry.offset + entry.size]          # (size,) uint8 view
        if verify_checksum and entry.crc32c is not None and _mask_crc(crc32c(raw)) != entry.crc32c:
            raise TFCheckpointError(f"{where}: crc32c of its {entry.size} bytes does not match the index; "
                                    f"{self.data_path(entry.shard_id)} is corrupted")
        disk = _DTYPES[entry.dtype_enum]
        if self.big_endian:
            disk = disk.newbyteorder(">")
        arr = np.frombuffer(raw, dtype=disk, count=math.prod(entry.shape)).reshape(entry.shape)
        if entry.dtype_enum == _DT_BFLOAT16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif not disk.isnative:
            arr = arr.astype(disk.newbyteorder("="))
        if arr.flags.writeable:
            arr.flags.writeable = False
        return arr


def list_tf_checkpoint(path) -> dict[str, TensorEntry]:
    """``{name: TensorEntry}`` (dtype, shape, ...) of every tensor, without reading data."""
    return dict(TFCheckpointReader(path).entries)


def read_tf_checkpoint(path, names=None, *, verify_checksums: bool = True) -> dict[str, np.ndarray]:
    """``{name: array}`` for the tensors of a TensorFlow V2 checkpoint (all, or ``names``).

    ``path``: the prefix (``models/124M/model.ckpt``), its ``.index`` file, or the folder.
    Arrays keep the checkpoint's names, shapes and dtypes (bfloat16 becomes float32) and
    are read-only views of the memory-mapped data file. ``verify_checksums`` also checks
    each tensor's crc32c (roughly a second per 200 MB). Raises TFCheckpointError (a
    ValueError) on anything malformed, KeyError for an unknown name in ``names``.
    """
    reader = TFCheckpointReader(path)
    wanted = list(reader.entries) if names is None else list(names)
    return {name: reader.read(name, verify_checksums) for name in wanted}
