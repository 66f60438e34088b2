"""Accuracy of the 16-bit and 8-bit weight formats, as a Markdown table for the README.

For a model folder (default: the bundled kjv-tiny) and a text (default: its valid.txt), per
dtype (float32, bfloat16, float16, int8):

- perplexity over the text (fastgpt.perplexity: non-overlapping windows of n_positions tokens
  unless --stride is given), and its change against float32;
- top-1 agreement: the share of scored positions whose argmax token equals float32's;
- NMSE of the logits against float32's over those positions;
- and the NMSE of the logits of a random GPT-2 124M-shaped model (seed 0) against its float32
  logits on a random prompt: the formats' error at full width, where no trained model is needed.

    python tools/quant_accuracy.py [--model DIR] [--text FILE] [--backend cython] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fastgpt import Model, Tokenizer
from fastgpt.config import PRESETS
from fastgpt.quant import DTYPES
from fastgpt.registry import resolve_model_path


def nmse(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(((got - want) ** 2).sum() / (want ** 2).sum())


def windows(n_tokens: int, length: int):
    """Non-overlapping windows [begin, end) covering the tokens (the perplexity's default)."""
    return [(b, min(b + length, n_tokens)) for b in range(0, n_tokens - 1, length) if min(b + length, n_tokens) - b >= 2]


def window_logits(model, ids, length):
    """(positions, V) logits of every window's positions but the last (those that predict a token)."""
    return np.concatenate([model.forward(ids[b:e])[:-1] for b, e in windows(ids.size, length)])


def perplexity(model, ids, length, stride):
    try:
        from fastgpt.perplexity import perplexity_of_ids
    except ImportError:  # older fastgpt: the same non-overlapping windows, computed here
        perplexity_of_ids = None
    if perplexity_of_ids is not None:
        r = perplexity_of_ids(model, ids, max_length=length, stride=stride)
        return r.perplexity, r.scored_tokens
    nll, n = 0.0, 0
    for b, e in windows(ids.size, length):
        x = model.forward(ids[b:e]).astype(np.float64)
        x -= x.max(-1, keepdims=True)
        logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
        nll -= logp[np.arange(e - b - 1), ids[b + 1:e]].sum()
        n += e - b - 1
    return float(np.exp(nll / n)), n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="kjv-tiny", help="model folder or bundled name (default: kjv-tiny)")
    p.add_argument("--text", default=None, help="text to score (default: the model folder's valid.txt)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--stride", type=int, default=None, help="perplexity window stride (default: non-overlapping)")
    p.add_argument("--random", default="gpt2", choices=list(PRESETS) + ["none"],
                   help="shapes of the random model for the full-width NMSE (default gpt2 = 124M; none: skip)")
    p.add_argument("--random-tokens", type=int, default=128)
    args = p.parse_args()

    folder = resolve_model_path(args.model)
    text_path = Path(args.text) if args.text else folder / "valid.txt"
    tok = Tokenizer.from_pretrained(folder)
    ids = np.asarray(tok.encode(text_path.read_text(encoding="utf-8"), allowed_special="all"), np.int64)
    rows = {}
    ref_logits = ref_top = None
    for dtype in DTYPES:
        t0 = time.perf_counter()
        model = Model.from_pretrained(folder, backend=args.backend, num_threads=args.threads, dtype=dtype)
        length = model.config.n_positions
        ppl, scored = perplexity(model, ids, length, args.stride)
        logits = window_logits(model, ids, length)                    # (positions, V)
        top = logits.argmax(-1)
        if dtype == "float32":
            ref_logits, ref_top = logits, top
        rows[dtype] = {"ppl": ppl, "scored": scored, "mb": model.weights.nbytes() / 1e6,
                       "top1": float((top == ref_top).mean()), "nmse": nmse(logits, ref_logits),
                       "seconds": time.perf_counter() - t0, "backend": model.backend.name}
        print(f"  {dtype}: perplexity {ppl:.4f} over {scored} tokens ({rows[dtype]['seconds']:.1f} s)", flush=True)

    if args.random != "none":
        config = PRESETS[args.random]
        prompt = np.random.default_rng(0).integers(0, config.vocab_size, args.random_tokens)
        want = None
        for dtype in DTYPES:
            model = Model.random(config, seed=0, backend=args.backend, num_threads=args.threads, dtype=dtype)
            got = model.forward(prompt)
            want = got if dtype == "float32" else want
            rows[dtype]["random_nmse"] = nmse(got, want)
            rows[dtype]["random_top1"] = float((got.argmax(-1) == want.argmax(-1)).mean())
            rows[dtype]["random_mb"] = model.weights.nbytes() / 1e6
            del model

    base = rows["float32"]["ppl"]
    print()
    print(f"Model `{folder.name}` ({rows['float32']['scored']} tokens of `{text_path.name}` scored, windows of "
          f"{length} tokens{'' if args.stride is None else f', stride {args.stride}'}; backend {rows['float32']['backend']})"
          + (f"; random {args.random}-shaped model, seed 0, {args.random_tokens}-token random prompt." if args.random != "none" else "."))
    print()
    head = "| dtype | weights MB | perplexity | vs float32 | top-1 = float32 | logits NMSE |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if args.random != "none":
        head += f" {args.random} random: weights MB | logits NMSE | top-1 = float32 |"
        sep += "---:|---:|---:|"
    print(head)
    print(sep)
    for dtype, r in rows.items():
        line = (f"| {dtype} | {r['mb']:.2f} | {r['ppl']:.4f} | {100 * (r['ppl'] / base - 1):+.4f}% | "
                f"{100 * r['top1']:.2f}% | {r['nmse']:.2e} |")
        if args.random != "none":
            line += f" {r['random_mb']:.1f} | {r['random_nmse']:.2e} | {100 * r['random_top1']:.2f}% |"
        print(line)


if __name__ == "__main__":
    main()
