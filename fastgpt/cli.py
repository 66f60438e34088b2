"""The ``fastgpt`` command: generate, info (and bench, perplexity, convert as they land).

User errors (a bad path, a bad flag value, a corrupt checkpoint) print one line to stderr and
exit with status 2; only genuine bugs show a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .backend import BACKENDS
from .registry import DEFAULT_MODEL, bundled_models


class UsageError(ValueError):
    """A command-line mistake to report in one line."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def add_model_args(p: argparse.ArgumentParser, model_required: bool = False) -> None:
    p.add_argument("--model", "-m", required=model_required,
                   help="a Hugging Face GPT-2 folder or a bundled model name"
                        + ("" if model_required else f" (default: {DEFAULT_MODEL})"))
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="kernels to run (default: auto)")
    p.add_argument("--threads", type=_positive_int, default=None, help="threads for kernels and BLAS (default: all cores)")


def _model_name(args) -> str:
    if args.model:
        return args.model
    if DEFAULT_MODEL in bundled_models():
        return DEFAULT_MODEL
    raise UsageError(
        "no --model given and no bundled model in this install: pass --model DIR, a Hugging Face "
        "GPT-2 folder (config.json, model.safetensors, vocab.json, merges.txt), e.g. one saved by "
        "transformers' save_pretrained"
    )


def load_model_and_tokenizer(args):
    from .model import Model
    from .tokenizer import Tokenizer

    name = _model_name(args)
    model = Model.from_pretrained(name, backend=args.backend, num_threads=args.threads)
    return model, Tokenizer.from_pretrained(name)


def cmd_generate(args) -> int:
    from .generate import Generator

    model, tok = load_model_and_tokenizer(args)
    gen = Generator(model, tok)
    out = sys.stdout
    if args.echo:
        out.write(args.prompt)
    for piece in gen.stream(args.prompt, max_new_tokens=args.max_new_tokens):
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0


def cmd_info(args) -> int:
    from . import show_config

    model, tok = load_model_and_tokenizer(args)
    cfg = model.config
    rows = [
        ("model", _model_name(args)),
        ("layers / width / heads", f"{cfg.n_layer} / {cfg.n_embd} / {cfg.n_head}"),
        ("feed-forward width", cfg.d_ff),
        ("context (n_positions)", cfg.n_positions),
        ("vocabulary", cfg.vocab_size),
        ("activation", cfg.activation_function),
        ("parameters", f"{model.num_parameters():,}"),
        ("weight bytes", f"{model.weights.nbytes() / 1e6:.1f} MB"),
        ("tied LM head", model.weights.tied_head),
        ("backend", model.backend.name),
        ("threads", model.num_threads),
    ]
    rows += [(k.replace("_", " "), v) for k, v in show_config().items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgpt", description="Fast, exact GPT-2 inference on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="continue a prompt, streaming tokens as they arrive")
    add_model_args(gen)
    gen.add_argument("prompt", help="the text to continue")
    gen.add_argument("--max-new-tokens", "-n", type=_non_negative_int, default=64)
    gen.add_argument("--echo", action="store_true", help="print the prompt before the continuation")
    gen.set_defaults(func=cmd_generate)

    info = sub.add_parser("info", help="print a model's config, size, backend and threads")
    add_model_args(info)
    info.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as exc:
        # ValueError covers every input error fastgpt raises (config, weights, tokens, lengths).
        message = str(exc).splitlines()
        print(f"fastgpt {args.command}: error: {message[0] if message else type(exc).__name__}", file=sys.stderr)
        for line in message[1:]:
            print(f"  {line.strip()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
