"""Decode matvec bandwidth per weight dtype, against the machine's read bandwidth.

For each dtype (float32, bfloat16, float16, int8) a set of GPT-2 124M MLP-shaped matrices
((3072, 768) and (768, 3072), alternating) totalling at least --mbytes of *stored* weights
(default 256 MB, 8x the 32 MB L3) is multiplied by N rows of x, one matrix after the other,
as decoding does. Reported: GB/s of weight bytes streamed, median over --repeat passes, next to
`_system.read_sum` over a float32 buffer of the same size (the read bandwidth at this thread
count). Every measurement is interleaved: dtype A, B, C, D, read_sum, A, B, ...

    python bench/quant_sweep.py --threads 1 2 --n 1
    python bench/quant_sweep.py --threads 2 --n 1 4 8 --prefill 512

--prefill N also times the prefill path (N rows: see kernels/_quant.pyx for which kernel runs per
dtype and N, e.g. the bfloat16 GEMM of csrc/hgemm.c or the int8 GEMM of csrc/qgemm.c) on one
layer's four matrices and prints GFLOP/s per dtype (for int8 with VNNI, integer operations).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fastgpt.kernels import _linear, _quant, _system
from fastgpt.quant import INT8_BLOCK, QuantizedWeight, quantize

DTYPES = ("float32", "bfloat16", "float16", "int8")
SHAPES = [(3072, 768), (768, 3072)]


def random_weight(rng, shape, dtype):
    """A weight of ``shape`` in ``dtype`` with GPT-2-like values, built without a float32 copy for int8."""
    O, I = shape
    if dtype == "int8":
        q = rng.integers(-127, 128, (O, I), dtype=np.int8)
        s = (rng.uniform(1e-4, 1e-3, (O, I // INT8_BLOCK))).astype(np.float16).view(np.uint16)
        return QuantizedWeight("int8", q, s)
    w = rng.standard_normal((O, I), dtype=np.float32) * np.float32(0.02)
    return w if dtype == "float32" else quantize(w, dtype)


def nbytes(w):
    return w.nbytes


def make_set(rng, dtype, mbytes):
    ws, total = [], 0
    while total < mbytes * 1e6:
        w = random_weight(rng, SHAPES[len(ws) % 2], dtype)
        ws.append(w)
        total += nbytes(w)
    return ws, total


def pass_fn(ws, x_by_in, threads):
    outs = {O: np.empty((x_by_in[768].shape[0], O), np.float32) for O in (768, 3072)}

    def run():
        for w in ws:
            O, I = w.shape
            if isinstance(w, np.ndarray):
                _linear.linear(x_by_in[I], w, None, outs[O], threads)
            else:
                _quant.linear(x_by_in[I], w, None, outs[O], threads)
    return run


def timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def sweep_decode(threads, n, sets, repeat, rng):
    x_by_in = {I: rng.standard_normal((n, I), dtype=np.float32) for I in (768, 3072)}
    size = max(total for _, total in sets.values())
    buf = np.ones(int(size) // 4, np.float32)
    calls = {dt: (pass_fn(ws, x_by_in, threads), total) for dt, (ws, total) in sets.items()}
    calls["read_sum"] = (lambda: _system.read_sum(buf, threads), buf.nbytes)
    for f, _ in calls.values():  # warm-up, page-in
        f()
    gbs = {name: [] for name in calls}
    for _ in range(repeat):
        for name, (f, total) in calls.items():
            gbs[name].append(total / timed(f) / 1e9)
    med = {name: statistics.median(v) for name, v in gbs.items()}
    bw = med["read_sum"]
    cells = "  ".join(f"{dt} {med[dt]:5.1f} ({med[dt] / bw:4.0%})" for dt in sets)
    print(f"threads {threads}  N {n}  read_sum {bw:5.1f} GB/s  |  {cells}", flush=True)
    return med


def sweep_prefill(threads, n, repeat, rng):
    C = 768
    layer = [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)]
    x_by_in = {I: rng.standard_normal((n, I), dtype=np.float32) for I in (C, 4 * C)}
    flops = sum(2 * n * O * I for O, I in layer)
    calls = {}
    for dt in DTYPES:
        ws = [random_weight(rng, s, dt) for s in layer]
        outs = [np.empty((n, O), np.float32) for O, _ in layer]

        def run(ws=ws, outs=outs, dt=dt):
            for w, out in zip(ws, outs):
                x = x_by_in[w.shape[1]]
                if dt == "float32":
                    _linear.gemm(x, w, None, out, threads)
                else:
                    _quant.linear(x, w, None, out, threads)
        calls[dt] = run
    for f in calls.values():
        f()
    times = {dt: [] for dt in calls}
    for _ in range(repeat):
        for dt, f in calls.items():
            times[dt].append(timed(f))
    cells = "  ".join(f"{dt} {flops / statistics.median(t) / 1e9:6.1f}" for dt, t in times.items())
    print(f"prefill threads {threads}  N {n}  GFLOP/s (one layer's 4 matrices): {cells}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--n", type=int, nargs="+", default=[1], help="rows of x (decode batch)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    p.add_argument("--mbytes", type=float, default=256, help="stored bytes per dtype's matrix set (MB)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--prefill", type=int, nargs="*", default=[], help="also time prefill with these N")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"quant_level {_quant.quant_level()}, int8 prefill in integers (VNNI) {_quant.qgemm_available()}; matrix sets of >= {args.mbytes:.0f} MB each; "
          f"GB/s of stored weight bytes, median of {args.repeat}, (fraction of read_sum)")
    sets = {dt: make_set(rng, dt, args.mbytes) for dt in args.dtypes}
    for threads in args.threads:
        for n in args.n:
            sweep_decode(threads, n, sets, args.repeat, rng)
    del sets
    for threads in args.threads:
        for n in args.prefill:
            sweep_prefill(threads, n, max(3, args.repeat // 2), rng)


if __name__ == "__main__":
    main()
