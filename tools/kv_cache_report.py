"""The 16-bit KV cache's accuracy and speed, as Markdown tables for the README.

Accuracy, on a model folder (default: the bundled kjv-tiny) and a text (default: its valid.txt),
per KV cache dtype (float32, float16, bfloat16), with the weights in --dtype (default float32):
- perplexity over the text (non-overlapping windows of n_positions tokens) and its change
  against the float32 cache;
- top-1 agreement: the share of scored positions whose argmax equals the float32 cache's;
- greedy agreement: --prompts prompts (the text's first tokens at evenly spaced offsets) each
  continued greedily for --greedy-tokens tokens; the share of generated tokens equal to the float32
  cache's at the same place, and how many continuations are identical throughout.

Speed, on a random GPT-2 124M-shaped model (seed 0), weights in each of --speed-dtype: decode
tokens/s at --short and --long cached positions (one token per step, batch 1), every (weights,
cache, context) case interleaved in --rounds rounds; with the bytes a cached position takes.

    python tools/kv_cache_report.py [--model kjv-tiny] [--threads 2] [--speed-dtype int8,float32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from fastgpt import Generator, GenerationConfig, Model, Tokenizer
from fastgpt.config import PRESETS
from fastgpt.kv_cache import KV_DTYPES
from fastgpt.perplexity import perplexity_of_ids
from fastgpt.registry import resolve_model_path

ORDER = ("float32", "float16", "bfloat16")  # the reference first
assert set(ORDER) == set(KV_DTYPES)


def accuracy(folder: Path, text: Path, dtype: str, threads, n_prompts: int, n_greedy: int) -> dict:
    tok = Tokenizer.from_pretrained(folder)
    ids = np.asarray(tok.encode(text.read_text(encoding="utf-8"), allowed_special="all"), np.int64)
    rows, ref = {}, None
    for kv in ORDER:
        model = Model.from_pretrained(folder, num_threads=threads, dtype=dtype, kv_dtype=kv)
        n = model.config.n_positions
        ppl = perplexity_of_ids(model, ids, max_length=n)
        windows = [(b, min(b + n, ids.size)) for b in range(0, ids.size - 1, n) if min(b + n, ids.size) - b >= 2]
        top = np.concatenate([model.forward(ids[b:e])[:-1].argmax(-1) for b, e in windows])
        starts = np.linspace(0, ids.size - 17, n_prompts).astype(int)
        prompts = [ids[s:s + 16].tolist() for s in starts]
        greedy = Generator(model).generate_ids(prompts, config=GenerationConfig(max_new_tokens=n_greedy, eos_token_id=[]))
        greedy = np.array(greedy)                                       # (prompts, n_greedy): no EOS ends one
        if ref is None:
            ref = (ppl.perplexity, top, greedy)
        rows[kv] = {"ppl": ppl.perplexity, "scored": ppl.scored_tokens, "ppl_change": ppl.perplexity / ref[0] - 1,
                    "top1": float((top == ref[1]).mean()), "greedy_tokens": float((greedy == ref[2]).mean()),
                    "greedy_identical": int((greedy == ref[2]).all(axis=1).sum()),
                    "bytes_per_position": model.new_cache(max_len=1).bytes_per_position()}
        print(f"  {kv}: perplexity {ppl.perplexity:.4f}", flush=True)
    return rows


def speed(dtypes, threads, short: int, long: int, rounds: int, new_tokens: int) -> dict:
    config = PRESETS["gpt2"]
    models = {(d, kv): Model.random(config, seed=0, num_threads=threads, dtype=d, kv_dtype=kv)
              for d in dtypes for kv in ORDER}
    prompts = {P: np.random.default_rng(0).integers(0, config.vocab_size, P) for P in (short, long)}
    samples = {(d, kv, P): [] for (d, kv) in models for P in (short, long)}

    def run(model, P):
        cache = model.new_cache(max_len=P + new_tokens)
        token = np.array([int(np.argmax(model.forward(prompts[P], cache=cache, last_only=True)))])
        t0 = time.perf_counter()
        for _ in range(new_tokens - 1):
            token[0] = int(np.argmax(model.forward(token, cache=cache, last_only=True)))
        return (new_tokens - 1) / (time.perf_counter() - t0)

    for case in samples:                       # warm-up
        run(models[case[:2]], case[2])
    for r in range(rounds):
        for case in samples:
            time.sleep(0.3)
            samples[case].append(run(models[case[:2]], case[2]))
        print(f"  speed round {r + 1}/{rounds}", flush=True)
    return {case: statistics.median(v) for case, v in samples.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="kjv-tiny")
    p.add_argument("--text", default=None, help="text to score (default: the model folder's valid.txt)")
    p.add_argument("--dtype", default="float32", help="the weights' dtype for the accuracy table")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--greedy-tokens", type=int, default=64)
    p.add_argument("--speed-dtype", default="int8,float32", help="weights of the speed table (empty: skip)")
    p.add_argument("--short", type=int, default=16)
    p.add_argument("--long", type=int, default=960)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    folder = resolve_model_path(args.model)
    text = Path(args.text) if args.text else folder / "valid.txt"
    acc = accuracy(folder, text, args.dtype, args.threads, args.prompts, args.greedy_tokens)
    print(f"\nModel `{folder.name}`, {args.dtype} weights, {acc['float32']['scored']} tokens of `{text.name}`; "
          f"greedy: {args.prompts} prompts of 16 tokens x {args.greedy_tokens} new tokens.\n")
    print("| KV cache | bytes per position | perplexity | vs float32 cache | top-1 = float32 cache | "
          "greedy tokens = float32 cache | identical continuations |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kv, r in acc.items():
        print(f"| {kv} | {r['bytes_per_position']} | {r['ppl']:.4f} | {100 * r['ppl_change']:+.4f}% | "
              f"{100 * r['top1']:.2f}% | {100 * r['greedy_tokens']:.2f}% | {r['greedy_identical']}/{args.prompts} |")
    if args.speed_dtype:
        dtypes = args.speed_dtype.split(",")
        tps = speed(dtypes, args.threads, args.short, args.long, args.rounds, args.new_tokens)
        per_position = Model.random(PRESETS["gpt2"], backend="numpy", kv_dtype="float32").new_cache(max_len=1)
        print(f"\nRandom GPT-2 124M (a float32 position takes {per_position.bytes_per_position() / 1e3:.1f} KB); "
              f"decode tokens/s, batch 1, medians of {args.rounds} interleaved rounds.\n")
        print("| weights | KV cache | at " + f"{args.short} positions | at {args.long} positions | "
              f"{args.long} vs {args.short} |")
        print("|---|---|---:|---:|---:|")
        for d in dtypes:
            for kv in ORDER:
                a, b = tps[d, kv, args.short], tps[d, kv, args.long]
                print(f"| {d} | {kv} | {a:.0f} | {b:.0f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
