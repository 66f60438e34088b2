"""The matrix products of one decode step of a batch, per weight dtype and rows per step.

A step of GPT-2 124M multiplies N rows of x (N requests decoding together, or an N-token prompt)
by its 48 block matrices and, for decode, the LM head (--head), one after the other as the model
does, through CythonBackend.linear: the weights of a step come from memory, as in decoding. For
each dtype and N it prints ms per step (median over --repeat steps), the weight stream in GB/s and
the arithmetic in G operations per second (2 N per weight), and the step's time relative to N = 1
of the same dtype (the aggregate speedup of a batch is N / that). Every dtype and N is measured
interleaved (round-robin over the cases, one step each), so that load changes hit them alike.

    python bench/step_products.py --threads 2 --n 1 2 4 8 16 32 64
    python bench/step_products.py --threads 2 --dtype int8 --n 1 16 --head --json out.json

Runs against any install of fastgpt (it uses the backend's public linear), so two builds can be
compared by running it under each, alternately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from fastgpt.config import PRESETS
from fastgpt.cython_backend import CythonBackend
from fastgpt.quant import quantize_weights
from fastgpt.threads import ThreadSettings
from fastgpt.weights import random_weights

DTYPES = ("float32", "bfloat16", "float16", "int8")
MATRICES = ("attn_qkv", "attn_proj", "mlp_fc", "mlp_proj")


def step_matrices(weights, head):
    """(w, b) of every product of one step, in the model's order."""
    mats = [(getattr(blk, f"{m}_w"), getattr(blk, f"{m}_b")) for blk in weights.blocks for m in MATRICES]
    return mats + ([(weights.lm_head, None)] if head else [])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=DTYPES)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--head", action="store_true", help="include the LM head (a decode step; a prompt skips it)")
    p.add_argument("--json", help="also write the medians to this file")
    args = p.parse_args(argv)

    config = PRESETS["gpt2"]
    base = random_weights(config, seed=0)
    backend = CythonBackend(ThreadSettings(args.threads))
    backend.threads.apply()
    rng = np.random.default_rng(0)
    cases = {}
    for dtype in args.dtype:
        mats = step_matrices(quantize_weights(base, dtype), args.head)
        nbytes = sum(w.nbytes for w, _ in mats)
        params = sum(w.shape[0] * w.shape[1] for w, _ in mats)
        for n in args.n:
            xs = {i: rng.standard_normal((n, i), dtype=np.float32) for i in (config.n_embd, config.d_ff)}
            outs = {o: np.empty((n, o), np.float32) for o in {w.shape[0] for w, _ in mats}}
            cases[dtype, n] = (mats, xs, outs, nbytes, params, [])

    def step(mats, xs, outs):
        for w, b in mats:
            backend.linear(xs[w.shape[1]], w, b, outs[w.shape[0]])

    for case in cases.values():  # warm-up: page faults, thread pool, scratch growth
        step(*case[:3])
    for _ in range(args.repeat):
        for mats, xs, outs, _, _, times in cases.values():
            t0 = time.perf_counter()
            step(mats, xs, outs)
            times.append(time.perf_counter() - t0)

    print(f"{args.threads} threads, GPT-2 124M block matrices{' + LM head' if args.head else ''}, "
          f"median of {args.repeat} steps, cases interleaved")
    print(f"{'dtype':>9} {'N':>3} {'ms/step':>8} {'GB/s':>6} {'GOP/s':>7} {'vs N=1':>7} {'x N=1 tok/s':>11}")
    report = []
    for (dtype, n), (_, _, _, nbytes, params, times) in cases.items():
        t = statistics.median(times)
        one = statistics.median(cases[dtype, args.n[0]][5]) if (dtype, args.n[0]) in cases else t
        row = {"dtype": dtype, "n": n, "ms": 1e3 * t, "gb_per_s": nbytes / t / 1e9, "gop_per_s": 2 * n * params / t / 1e9,
               "vs_first_n": t / one, "aggregate_speedup": n * one / t / args.n[0]}
        report.append(row)
        print(f"{dtype:>9} {n:>3} {row['ms']:8.2f} {row['gb_per_s']:6.1f} {row['gop_per_s']:7.0f} "
              f"{row['vs_first_n']:7.2f} {row['aggregate_speedup']:11.1f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"threads": args.threads, "head": args.head, "rows": report}, f, indent=1)


if __name__ == "__main__":
    main()
