"""The ``fastgpt`` command: generate, info (and bench, perplexity, convert as they land).

User errors (a bad path, a bad flag value, a corrupt checkpoint, a request too large for the
machine) print one line to stderr and exit with status 2; only genuine bugs show a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from .cli_args import (UsageError, add_model_args, load_model, load_model_and_tokenizer, model_name, non_negative_int,
                       positive_int)
from .interrupts import interrupts_held


class _Parser(argparse.ArgumentParser):
    """argparse, with a malformed flag reported in one line (argparse prints the usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """Decoding flags; None (left out) keeps GenerationConfig's neutral default."""
    g = p.add_argument_group("decoding (greedy unless --do-sample; transformers' semantics)")
    g.add_argument("--do-sample", action="store_true", default=None,
                   help="sample instead of taking the argmax; --temperature, --top-k, --top-p and "
                        "--min-p act only with it (without it they are ignored, with a warning)")
    g.add_argument("--temperature", type=float, help="divide logits by T > 0 before the filters (default 1)")
    g.add_argument("--top-k", type=non_negative_int, help="keep the K most likely tokens (0: off)")
    g.add_argument("--top-p", type=float, help="keep the smallest set of mass >= P, in (0, 1] (1: off)")
    g.add_argument("--min-p", type=float, help="drop tokens below P times the top probability (0: off)")
    g.add_argument("--repetition-penalty", type=float,
                   help="divide positive / multiply negative logits of seen tokens (1: off)")
    g.add_argument("--presence-penalty", type=float, help="subtract from generated tokens' logits (OpenAI; 0: off)")
    g.add_argument("--frequency-penalty", type=float,
                   help="subtract count x this from generated tokens' logits (OpenAI; 0: off)")
    g.add_argument("--no-repeat-ngram-size", type=non_negative_int, help="never repeat an n-gram of this size (0: off)")
    g.add_argument("--logit-bias", type=_logit_bias_item, action="append", metavar="ID=VALUE",
                   help="add VALUE to token ID's logit (-inf bans it); repeatable")
    g.add_argument("--min-new-tokens", type=non_negative_int, help="no end-of-text before this many tokens")
    g.add_argument("--eos-token-id", type=non_negative_int, action="append", metavar="ID",
                   help="end a sequence at this token (default: the model's); repeatable")
    g.add_argument("--ignore-eos", action="store_true", help="never end at an end-of-text token")
    g.add_argument("--stop", action="append", metavar="STR",
                   help="end before this text (not printed); \\n, \\t, \\r are unescaped; repeatable")
    g.add_argument("--seed", type=non_negative_int, help="seed for sampling: same seed, same text (default: random)")
    g.add_argument("--num-return-sequences", type=positive_int, help="samples per prompt (with --do-sample)")
    g.add_argument("--truncate", choices=["left"],
                   help="drop a too-long prompt's first tokens instead of failing (a note goes to stderr)")


def _logit_bias_item(text):
    """``ID=VALUE`` -> (int id, float bias); ``-inf`` bans the token."""
    key, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        token, bias = int(key), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TOKEN_ID=BIAS such as 50256=-inf or 198=2.5, got {text!r}") from None
    return token, bias


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _unescape(text: str) -> str:
    r"""Turn the two characters ``\n``, ``\t``, ``\r``, ``\\`` into what they name (shells pass them literally)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# generate's decoding flags -> GenerationConfig fields; a flag left out keeps the neutral default.
_GENERATION_FLAGS = ("max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p",
                     "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
                     "no_repeat_ngram_size", "seed", "num_return_sequences", "truncate")


def _generation_config(args):
    from .generate import GenerationConfig

    options = {name: getattr(args, name) for name in _GENERATION_FLAGS if getattr(args, name) is not None}
    if args.logit_bias:
        options["logit_bias"] = dict(args.logit_bias)
    if args.ignore_eos and args.eos_token_id:
        raise UsageError("--ignore-eos and --eos-token-id contradict each other: give one")
    if args.ignore_eos:
        options["eos_token_id"] = []
    elif args.eos_token_id:
        options["eos_token_id"] = list(args.eos_token_id)
    if args.stop:
        options["stop"] = [_unescape(s) for s in args.stop]
    config = GenerationConfig(**options)
    # Legal for the library (transformers accepts both too) but almost surely not what was meant.
    if config.min_new_tokens > config.max_new_tokens:
        _note(args, f"warning: --min-new-tokens {config.min_new_tokens} is more than --max-new-tokens "
                    f"{config.max_new_tokens}: generation stops at {config.max_new_tokens} tokens")
    if args.seed is not None and not config.do_sample:
        _note(args, "warning: --seed is ignored without --do-sample (greedy decoding has no randomness)")
    return config


def _note(args, message: str) -> None:
    print(f"fastgpt {args.command}: {message}", file=sys.stderr)


def _note_truncation(args, result, which: str, config) -> None:
    if result.prompt_tokens_dropped:
        _note(args, f"note: {which} did not fit with max_new_tokens={config.max_new_tokens}: dropped its first "
                    f"{result.prompt_tokens_dropped} tokens (--truncate left)")


def cmd_generate(args) -> int:
    import warnings

    from .generate import Generator

    config = _generation_config(args)          # bad flag values fail here, before the model loads
    model, tok = load_model_and_tokenizer(args)
    gen = Generator(model, tok)
    out = sys.stdout
    with warnings.catch_warnings():
        # Library warnings (e.g. sampling flags without --do-sample) as one stderr line each.
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = lambda message, *rest: _note(args, f"warning: {message}")
        if len(args.prompt) == 1 and config.num_return_sequences == 1:
            # One prompt: stream pieces as they become final (whole characters, no stop text).
            pieces = gen.stream(args.prompt[0], config=config)
            if args.echo:
                out.write(args.prompt[0])
            while True:
                try:
                    piece = next(pieces)
                except StopIteration as done:
                    result = done.value
                    break
                out.write(piece)
                out.flush()
            out.write("\n")
            _note_truncation(args, result, "the prompt", config)
            return 0
        # Several prompts (or sequences): one batch, then one block per completion.
        results = gen.generate(args.prompt, config=config, return_result=True)
        n = config.num_return_sequences
        for i, result in enumerate(results):
            p = i // n
            label = f"{p + 1}" if n == 1 else f"{p + 1}.{i % n + 1}"
            if i:
                out.write("\n")
            out.write(f"--- [{label}] ---\n")
            out.write((args.prompt[p] if args.echo else "") + result.text + "\n")
            if i % n == 0:
                _note_truncation(args, result, f"prompt {p + 1}", config)
    return 0


def cmd_info(args) -> int:
    from . import show_config

    model = load_model(args)        # a folder of weights without tokenizer files is still a model
    cfg = model.config
    rows = [
        ("model", model_name(args)),
        ("layers / width / heads", f"{cfg.n_layer} / {cfg.n_embd} / {cfg.n_head}"),
        ("feed-forward width", cfg.d_ff),
        ("context (n_positions)", cfg.n_positions),
        ("vocabulary", cfg.vocab_size),
        ("activation", cfg.activation_function),
        ("parameters", f"{model.num_parameters():,}"),
        ("weight bytes", f"{model.weights.nbytes() / 1e6:.1f} MB"),
        ("KV cache", f"{model.kv_dtype}, {model.new_cache(max_len=1).bytes_per_position() / 1e3:.1f} KB per position"),
        ("tied LM head", model.weights.tied_head),
        # Read here, not at load: loading maps the file and never touches most of it.
        ("weights with NaN/Inf", ", ".join(model.weights.nonfinite_tensors()) or "none"),
        ("backend", model.backend.name),
        ("threads", model.num_threads),
    ]
    rows += [(k.replace("_", " "), v) for k, v in show_config().items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_perplexity(args) -> int:
    from pathlib import Path

    from .perplexity import perplexity

    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    model, tok = load_model_and_tokenizer(args)
    result = perplexity(model, tok, text, max_length=args.max_length, stride=args.stride)
    print(f"perplexity {result.perplexity:.4f}  (mean NLL {result.mean_nll:.5f} nats over "
          f"{result.scored_tokens} tokens, {result.windows} windows)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastgpt", description="Fast, exact GPT-2 inference on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="continue a prompt, streaming tokens as they arrive",
                         description="Continue PROMPT, streaming the text as it is generated. Several "
                                     "prompts run as one batch and print one block each. Greedy unless "
                                     "--do-sample; options follow transformers' generate.")
    add_model_args(gen)
    gen.add_argument("prompt", nargs="+", help="the text to continue (several: a batch)")
    gen.add_argument("--max-new-tokens", "-n", type=non_negative_int, default=64,
                     help="tokens to generate at most (default: 64)")
    gen.add_argument("--echo", action="store_true", help="print the prompt before the continuation")
    add_generation_args(gen)
    gen.set_defaults(func=cmd_generate)

    info = sub.add_parser("info", help="print a model's config, size, backend and threads")
    add_model_args(info)
    info.set_defaults(func=cmd_info)

    ppl = sub.add_parser("perplexity", help="perplexity of a text file (sliding window)")
    add_model_args(ppl)
    ppl.add_argument("file", help="a UTF-8 text file")
    ppl.add_argument("--max-length", type=positive_int, default=None, help="window length (default: n_positions)")
    ppl.add_argument("--stride", type=positive_int, default=None,
                     help="tokens between window starts (default: max length, no overlap)")
    ppl.set_defaults(func=cmd_perplexity)

    from .bench import add_bench_parser

    add_bench_parser(sub)

    from .convert import add_convert_parser

    add_convert_parser(sub)

    from .serving.serve import add_serve_parser

    add_serve_parser(sub)

    from .serving.bench import add_bench_serve_parser

    add_bench_serve_parser(sub)
    return parser


def main(argv=None) -> int:
    try:
        with interrupts_held():    # the subcommands' modules load here
            parser = build_parser()
    except KeyboardInterrupt:
        return 130
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as cat does, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, FileNotFoundError, OSError) as exc:
        # ValueError covers every input error fastgpt raises (config, weights, tokens, lengths,
        # memory); a message listing several problems is joined into the one line.
        message = "; ".join(line.strip().rstrip(":;") for line in str(exc).splitlines() if line.strip())
        print(f"fastgpt {args.command}: error: {message or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
