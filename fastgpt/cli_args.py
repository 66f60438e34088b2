"""Command-line pieces shared by the ``fastgpt`` commands (generate, bench, serve, ...).

Argument types, the model flags and loading what they name. A module of its own so that the
commands' modules can import it without importing ``cli.py``, which imports them all.
"""

from __future__ import annotations

import argparse
import math

from .backend import BACKENDS
from .kv_cache import KV_DTYPES
from .quant import DTYPES
from .registry import DEFAULT_MODEL, bundled_models
from .threads import MAX_THREADS


class UsageError(ValueError):
    """A command-line mistake to report in one line."""


def _bounded_int(lo: int, what: str, hi: int | None = None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            wanted = f"a {what} integer" if hi is None else f"a {what} in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    parse.__name__ = f"{what.replace('-', '_').replace(' ', '_')}_int"    # argparse names the type in errors
    return parse


def finite_float(lo: float, what: str, lo_open: bool = False):
    """An argparse type: a finite float >= lo (> lo when lo_open), named `what` in its error."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < lo or (lo_open and value == lo):
            raise argparse.ArgumentTypeError(f"expected a {what} number, got {text!r}")
        return value
    parse.__name__ = f"{what.replace('-', '_')}_float"
    return parse


positive_int = _bounded_int(1, "positive")
non_negative_int = _bounded_int(0, "non-negative")
thread_count = _bounded_int(1, "thread count", MAX_THREADS)
port_number = _bounded_int(0, "port", 65535)


def positive_int_list(text):
    """``N[,N...]``: positive integers, each listed once, in the order given."""
    values = [positive_int(part.strip()) for part in text.split(",")]
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"each value may appear once, got {text!r}")
    return values


def add_model_args(p: argparse.ArgumentParser, model_required: bool = False) -> None:
    p.add_argument("--model", "-m", required=model_required,
                   help="a Hugging Face GPT-2 folder or a bundled model name"
                        + ("" if model_required else f" (default: {DEFAULT_MODEL})"))
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="kernels to run (default: auto)")
    p.add_argument("--threads", type=thread_count, default=None, help="threads for kernels and BLAS (default: all cores)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="hold the weight matrices in this dtype (default: as stored: float32, or a converted folder's)")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, default=None,
                   help="hold the KV cache in this dtype (default: float32 with float32 weights, float16 with "
                        "16/8-bit ones)")


def check_writable(path) -> None:
    """UsageError unless ``path`` (None: nothing to check) can be written: before a run, not after it."""
    if path is None:
        return
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def model_name(args) -> str:
    if args.model is not None:
        if not args.model.strip():           # an unset "$MODEL" must not mean the bundled model
            raise UsageError("--model is empty: give a model folder or a bundled model's name")
        return args.model
    if DEFAULT_MODEL in bundled_models():
        return DEFAULT_MODEL
    raise UsageError(
        "no --model given and no bundled model in this install: pass --model DIR, a Hugging Face "
        "GPT-2 folder (config.json, model.safetensors, vocab.json, merges.txt), e.g. one saved by "
        "transformers' save_pretrained"
    )


def load_model(args):
    from .model import Model

    return Model.from_pretrained(model_name(args), backend=args.backend, num_threads=args.threads,
                                 dtype=args.dtype, kv_dtype=args.kv_dtype)


def load_model_and_tokenizer(args):
    from .tokenizer import Tokenizer

    model = load_model(args)
    return model, Tokenizer.from_pretrained(model_name(args))
