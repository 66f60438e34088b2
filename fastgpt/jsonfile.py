"""Reading the small text files that describe a model (config.json, vocab.json, merges.txt,
tokenizer.json, hparams.json, a shard index) without trusting them.

``json.loads`` alone lets hostile input through in several ways, each of which here becomes the
caller's own ``ValueError`` subclass naming the file: a directory or an unreadable path
(``OSError``), a file far larger than any such file (read whole, it would cost memory before
anything is checked), bytes that are not UTF-8, and nesting deep enough to exhaust the
recursion limit (``RecursionError``, not a ``ValueError``). An integer literal too long for any
field becomes a ``HugeInteger`` (not an ``int``), so that the field's own check refuses it and
names the field, as it does for the ``NaN`` / ``Infinity`` floats Python's parser accepts.

Non-goals: checking what the values mean (each reader checks its own fields, floats for
finiteness included).
"""

from __future__ import annotations

import json
import os
import reprlib

#: Largest description file read: GPT-2's tokenizer.json is 1.4 MB and vocabularies of 250k
#: tokens stay under 20 MB; the limit only stops a file from being read whole by mistake.
MAX_TEXT_BYTES = 64 * 1024 * 1024


def read_text(path, error: type[ValueError], max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of the file at ``path``; ``error`` (naming the file) for a missing or
    unreadable path, a directory, a file over ``max_bytes`` or bytes that are not UTF-8."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            # The size first, so that an oversized file is refused unread; the bounded read
            # covers files whose size the OS does not know in advance (pipes, /proc).
            fits = os.fstat(f.fileno()).st_size <= max_bytes
            data = _read_at_most(f, max_bytes + 1) if fits else b""
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not fits or len(data) > max_bytes:
        raise error(f"{path}: more than {max_bytes} bytes, far more than this kind of file holds; "
                    "it is not the file it is named after")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 200

#: Digits beyond which an integer literal is a HugeInteger; Python's int() refuses 4300 anyway.
MAX_INT_DIGITS = 40


class HugeInteger:
    """An integer literal of more than MAX_INT_DIGITS digits, kept as text: no field takes one."""

    def __init__(self, text: str):
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"


def loads(text: str, error: type[ValueError], where: str, object_pairs_hook=None):
    """``json.loads(text)`` with every failure as ``error`` naming ``where``."""
    try:
        return json.loads(text, parse_int=_parse_int, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply to be a model file") from None
    except ValueError as exc:  # JSONDecodeError, or object_pairs_hook's refusal
        raise error(f"{where}: not valid JSON ({exc})") from None


def read_json(path, error: type[ValueError], max_bytes: int = MAX_TEXT_BYTES, object_pairs_hook=None):
    """The parsed JSON file at ``path`` (see ``read_text`` and ``loads`` for what is refused)."""
    return loads(read_text(path, error, max_bytes), error, os.fspath(path), object_pairs_hook)


def short_repr(value, limit: int = 80) -> str:
    """repr of a value read from a file, cut to ``limit`` characters for an error message: a
    hostile field may be megabytes long (reprlib never builds the whole repr)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read_at_most(f, n: int) -> bytes:
    # In pieces: f.read(n) would allocate all n bytes up front, however short the file.
    pieces, total = [], 0
    while total < n:
        piece = f.read(min(1 << 20, n - total))
        if not piece:
            break
        pieces.append(piece)
        total += len(piece)
    return b"".join(pieces)


def _parse_int(text: str) -> int | HugeInteger:
    return int(text) if len(text) <= MAX_INT_DIGITS else HugeInteger(text)
