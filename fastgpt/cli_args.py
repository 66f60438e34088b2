"""Argument types shared by the command-line modules (cli.py, bench.py, convert.py): each turns a
bad value into the one-line message argparse prints, before anything runs."""

from __future__ import annotations

import argparse


def _int_at_least(text, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
    return value


def positive_int(text):
    return _int_at_least(text, 1, "positive")


def non_negative_int(text):
    return _int_at_least(text, 0, "non-negative")


def positive_int_list(text):
    """``N[,N...]``: positive integers, each listed once, in the order given."""
    values = [positive_int(part.strip()) for part in text.split(",")]
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"each value may appear once, got {text!r}")
    return values
