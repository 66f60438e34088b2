"""A minimal writer of TensorFlow's checkpoint index format (LevelDB table + BundleEntryProto),
written independently of fastgpt's parser: the tests make corrupt and hostile checkpoints with it.
"""

from pathlib import Path

import numpy as np

from fastgpt.loaders.tf_checkpoint import _mask_crc, crc32c


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, value) -> bytes:
    if isinstance(value, bytes):
        return varint(num << 3 | 2) + varint(len(value)) + value
    return varint(num << 3) + varint(value)


def entry(dtype, shape, offset, size, shard=0, crc=None, sliced=False) -> bytes:
    dims = b"".join(field(2, field(1, d) if d else b"") for d in shape)
    msg = field(1, dtype) + field(2, dims) + (field(3, shard) if shard else b"")
    msg += (field(4, offset) if offset else b"") + (field(5, size) if size else b"")
    if crc is not None:
        msg += varint(6 << 3 | 5) + crc.to_bytes(4, "little")
    if sliced:
        msg += field(7, b"")
    return msg


def bundle_header(num_shards=1, endianness=0, min_consumer=0) -> bytes:
    version = field(1, 1) + (field(2, min_consumer) if min_consumer else b"")
    return field(1, num_shards) + (field(2, endianness) if endianness else b"") + field(3, version)


def block(pairs) -> bytes:
    out, prev = b"", b""
    for key, value in pairs:
        shared = 0
        while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
            shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        prev = key
    return out + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")


def table(pairs, compression=0) -> bytes:
    def with_trailer(block):
        kind = bytes([compression])
        return block + kind + _mask_crc(crc32c(block + kind)).to_bytes(4, "little")

    data = block(pairs)
    out = with_trailer(data)
    meta = block([])
    meta_handle = varint(len(out)) + varint(len(meta))
    out += with_trailer(meta)
    index = block([(pairs[-1][0] + b"\x00", varint(0) + varint(len(data)))])
    index_handle = varint(len(out)) + varint(len(index))
    out += with_trailer(index)
    footer = (meta_handle + index_handle).ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    return out + footer


def write_ckpt(folder: Path, entries: dict, data: bytes, header=None, compression=0) -> Path:
    """entries: name -> entry(...) bytes. Returns the prefix."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / "x.ckpt"
    pairs = [(b"", header or bundle_header())] + sorted((k.encode(), v) for k, v in entries.items())
    (folder / "x.ckpt.index").write_bytes(table(pairs, compression))
    (folder / "x.ckpt.data-00000-of-00001").write_bytes(data)
    return prefix


def f32_entry(arr: np.ndarray, offset: int, **kw) -> bytes:
    raw = np.ascontiguousarray(arr, "<f4").tobytes()
    return entry(1, arr.shape, offset, len(raw), crc=_mask_crc(crc32c(raw)), **kw)
