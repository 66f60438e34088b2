"""Sweep of out = x @ w.T + b over batch rows N: our kernels against NumPy's BLAS.

Two measurements, both interleaved (ours, BLAS, ours, BLAS, ...) and reported as medians:

- ``cache``: one weight matrix per GPT-2 shape, reused every call, so it stays in L2/L3.
  Reported in GFLOP/s (2*N*O*I per call).
- ``dram``: a pass over distinct matrices larger than the L3 (12 MLP-sized matrices, 113 MB,
  and the LM head, 154 MB), so the weights come from DRAM as they do in decoding.
  Reported in GB/s of weights read, beside `_system.read_sum` over a buffer of the same size
  (the machine's read bandwidth for this thread count).

Columns: ``matvec`` = the streaming row kernel (_linear.linear), ``gemm`` = the packed GEMM
(_linear.gemm), ``auto`` = what CythonBackend.linear picks, ``blas`` = np.matmul + bias.

    python bench/linear_sweep.py --threads 1
    python bench/linear_sweep.py --threads 2 --mode dram --n 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastgpt.cython_backend import CythonBackend
from fastgpt.kernels import _linear, _system
from fastgpt.threads import ThreadSettings

# (O, I, bias): GPT-2 124M's four block linears and the (bias-free) LM head
SHAPES = {"qkv": (2304, 768, True), "proj": (768, 768, True), "fc": (3072, 768, True),
          "mlp_proj": (768, 3072, True), "lm_head": (50257, 768, False)}
DEFAULT_N = [1, 2, 3, 4, 5, 8, 12, 16, 32, 64, 128, 256, 512]


def blas_linear(x, w, b, out):
    np.matmul(x, w.T, out=out)                                  # (N, O)
    if b is not None:
        out += b
    return out


def make_paths(threads, n):
    backend = CythonBackend(ThreadSettings(threads))
    paths = {"matvec": lambda x, w, b, out: _linear.linear(x, w, b, out, threads),
             "gemm": lambda x, w, b, out: _linear.gemm(x, w, b, out, threads),
             "auto": backend.linear,
             "blas": blas_linear}
    if not _linear.gemm_available():
        del paths["gemm"]
    if n > 32:  # the row kernel re-reads each weight tile once per 3 rows: pointless to time at large N
        del paths["matvec"]
    return paths


CLOCK = time.perf_counter


def interleaved(calls, repeat, min_time):
    """calls: name -> zero-argument callable. Median seconds per call of each, measured in turn."""
    for f in calls.values():  # warm-up (and page-in)
        f()
    times = {name: [] for name in calls}
    for _ in range(repeat):
        for name, f in calls.items():
            reps, t0 = 0, CLOCK()
            while True:
                f()
                reps += 1
                dt = CLOCK() - t0
                if dt >= min_time:
                    break
            times[name].append(dt / reps)
    return {name: statistics.median(t) for name, t in times.items()}


def sweep_cache(threads, ns, shapes, repeat, rng):
    print(f"# cache-resident weights, {threads} thread(s), GFLOP/s (median of {repeat})")
    for shape in shapes:
        O, I, has_bias = SHAPES[shape]
        w = rng.standard_normal((O, I), dtype=np.float32)       # (O, I)
        b = rng.standard_normal(O, dtype=np.float32) if has_bias else None
        header = None
        for n in ns:
            x = rng.standard_normal((n, I), dtype=np.float32)   # (N, I)
            out = np.empty((n, O), np.float32)                   # (N, O)
            paths = make_paths(threads, n)
            if header is None:
                header = ["matvec", "gemm", "auto", "blas"]
                print(f"{shape} O={O} I={I}\n{'N':>5} " + " ".join(f"{h:>8}" for h in header))
            t = interleaved({k: (lambda f=f: f(x, w, b, out)) for k, f in paths.items()}, repeat, 0.02)
            gf = {k: 2.0 * n * O * I / v / 1e9 for k, v in t.items()}
            print(f"{n:>5} " + " ".join(f"{gf[h]:8.1f}" if h in gf else f"{'-':>8}" for h in header), flush=True)


def sweep_dram(threads, ns, repeat, rng):
    print(f"# weights from DRAM, {threads} thread(s), GB/s of weights read (median of {repeat})")
    sets = {"12 x fc (3072, 768)": [rng.standard_normal((3072, 768), dtype=np.float32) for _ in range(12)],
            "lm_head (50257, 768)": [rng.standard_normal((50257, 768), dtype=np.float32)]}
    for name, ws in sets.items():
        nbytes = sum(w.nbytes for w in ws)
        flat = np.concatenate([w.ravel() for w in ws])           # same size, for the read probe
        t_read = interleaved({"read": lambda: _system.read_sum(flat, threads)}, repeat, 0.0)["read"]
        del flat
        print(f"{name}: {nbytes / 1e6:.0f} MB; read_sum {nbytes / t_read / 1e9:.1f} GB/s")
        header = ["matvec", "gemm", "auto", "blas"]
        print(f"{'N':>5} " + " ".join(f"{h:>8}" for h in header) + "   (GB/s; GFLOP/s of auto)")
        I = ws[0].shape[1]
        for n in ns:
            x = rng.standard_normal((n, I), dtype=np.float32)
            outs = [np.empty((n, w.shape[0]), np.float32) for w in ws]
            paths = make_paths(threads, n)

            def run_all(f):
                for w, out in zip(ws, outs):
                    f(x, w, None, out)

            t = interleaved({k: (lambda f=f: run_all(f)) for k, f in paths.items()}, repeat, 0.0)
            gbs = {k: nbytes / v / 1e9 for k, v in t.items()}
            gflops = 2.0 * n * (nbytes / 4) / t["auto"] / 1e9
            print(f"{n:>5} " + " ".join(f"{gbs[h]:8.1f}" if h in gbs else f"{'-':>8}" for h in header)
                  + f"   {gflops:6.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", choices=["cache", "dram", "both"], default="both")
    ap.add_argument("--n", type=int, nargs="+", default=DEFAULT_N)
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["qkv", "proj", "fc", "mlp_proj"])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time by this thread's CPU time, not wall time: fairer on a shared machine, "
                         "but only meaningful with --threads 1 (other threads' work is not counted)")
    args = ap.parse_args()
    if args.cpu_time:
        if args.threads != 1:
            ap.error("--cpu-time needs --threads 1")
        global CLOCK
        CLOCK = time.thread_time
    rng = np.random.default_rng(0)
    clock = "thread CPU time" if args.cpu_time else "wall time"
    print(f"simd={_system.simd_name()} openmp={_system.openmp_enabled()} threads={args.threads} clock={clock}")
    with threadpool_limits(args.threads, user_api="blas"):
        if args.mode in ("cache", "both"):
            sweep_cache(args.threads, args.n, args.shapes, args.repeat, rng)
        if args.mode in ("dram", "both"):
            sweep_dram(args.threads, [n for n in args.n if n <= 64], args.repeat, rng)


if __name__ == "__main__":
    main()
