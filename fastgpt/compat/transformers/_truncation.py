"""Truncation, overflow windows and padding of id lists, as Hugging Face ``tokenizers`` does them.

transformers' GPT-2 tokenizer delegates these to the Rust ``tokenizers`` library
(``utils/truncation.rs``, ``Encoding::truncate``, ``Encoding::merge_with``); this is the
same arithmetic on plain lists, so that ``stride`` windows, pair truncation and the order
of overflowing rows come out identical.
"""

from __future__ import annotations

STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")


class TruncationError(ValueError):
    """The requested truncation cannot be done (as tokenizers' ``TruncationError``)."""


def windows(ids: list[int], max_len: int, stride: int, side: str) -> list[list[int]]:
    """``ids`` cut to ``max_len``: the kept part first, then the overflowing windows, each
    overlapping the previous one by ``stride`` tokens."""
    n = len(ids)
    if max_len >= n:
        return [ids]
    if max_len == 0:
        return [[], ids]
    if not 0 <= stride < max_len:
        raise TruncationError(f"stride={stride} must be smaller than the length kept ({max_len} tokens)")
    step = max_len - stride
    parts = []
    if side == "right":
        for start in range(0, n, step):
            stop = min(start + max_len, n)
            parts.append(ids[start:stop])
            if stop == n:
                break
    else:
        for last in range(n - 1, -1, -step):
            start = max(last + 1 - max_len, 0)
            parts.append(ids[start:last + 1])
            if start == 0:
                break
    return parts


def _pair_lengths(n1: int, n2: int, max_length: int) -> tuple[int, int]:
    """longest_first for a pair: how many tokens each side keeps."""
    short, long = min(n1, n2), max(n1, n2)
    long = short if short > max_length else max(short, max_length - short)
    if short + long > max_length:
        short = max_length // 2
        long = short + max_length % 2
    return (short, long) if n1 <= n2 else (long, short)


def truncate(first: list[int], pair: list[int] | None, strategy: str, max_length: int, stride: int,
             side: str) -> list[tuple[list[int], list[int] | None]]:
    """(first, pair) rows after truncation: the kept row, then overflowing rows in tokenizers' order."""
    total = len(first) + (len(pair) if pair is not None else 0)
    if strategy == "do_not_truncate" or total <= max_length:
        return [(first, pair)]
    to_remove = total - max_length
    if strategy == "longest_first":
        if pair is None:
            return [(w, None) for w in windows(first, max_length, stride, side)]
        n1, n2 = _pair_lengths(len(first), len(pair), max_length)
        return _merge(windows(first, n1, stride, side), windows(pair, n2, stride, side))
    if strategy == "only_second" and pair is None:
        raise TruncationError("truncation='only_second' needs a second sequence (text_pair)")
    target = first if strategy == "only_first" else pair
    if len(target) <= to_remove:
        raise TruncationError(f"truncation={strategy!r}: the sequence to truncate has {len(target)} tokens, too short to "
                              f"bring {total} tokens down to max_length={max_length}")
    cut = windows(target, len(target) - to_remove, stride, side)
    return _merge(cut, [pair]) if strategy == "only_first" else _merge([first], cut)


def _merge(firsts: list[list[int]], pairs: list[list[int] | None]) -> list[tuple]:
    """tokenizers' ``Encoding::merge_with``: every overflowing first with the pair and its
    overflows, then the kept first with the pair's overflows."""
    rows = [(firsts[0], pairs[0])]
    for f in firsts[1:]:
        rows += [(f, p) for p in pairs]
    rows += [(firsts[0], p) for p in pairs[1:]]
    return rows


def padded_length(lengths: list[int], padding: str, max_length: int | None, multiple: int | None) -> int | None:
    """The length rows are padded to, or None for no padding."""
    if padding == "do_not_pad":
        return None
    width = max(lengths, default=0) if padding == "longest" else max_length
    if multiple and width % multiple:
        width = (width // multiple + 1) * multiple
    return width
