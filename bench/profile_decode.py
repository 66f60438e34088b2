"""How much of a decode step is Python overhead: time outside compiled kernels and BLAS.

The compiled backend runs a decode step as one call (kernels/_decode.pyx): the overhead is the
step time minus the time inside that call, timed around it.

Then the same steps op by op (``fuse_decode = False``, what the NumPy backend always does),
under cProfile, split into time inside fastgpt's compiled kernels, time inside NumPy's matmul
(BLAS), and the rest (Python code, NumPy glue, argument checks). Cython functions are
invisible to cProfile, so kernel time is the own time of the one-line methods of
cython_backend.py that call them (their few Python bytecodes count as kernel time). cProfile
adds its own cost per Python call, so the overhead it reports is an upper bound.

    python bench/profile_decode.py [--threads N] [--steps N] [--backend cython|numpy]
"""

import argparse
import cProfile
import pstats
import time

import numpy as np

from fastgpt import Model
from fastgpt.config import PRESETS


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--backend", default="cython")
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()

    import dataclasses

    config = dataclasses.replace(PRESETS["gpt2"], n_layer=args.layers)
    model = Model.random(config, seed=0, backend=args.backend, num_threads=args.threads)
    cache = model.new_cache(batch_size=1, max_len=16 + 3 * args.steps)
    model.forward(np.arange(16), cache=cache, last_only=True)
    token = np.zeros(1, np.int64)
    for _ in range(args.steps // 4):  # warm-up
        model.forward(token, cache=cache, last_only=True)

    fused = fused_step_times(model, cache, token, args.steps)
    if hasattr(model.backend, "fuse_decode"):
        model.backend.fuse_decode = False
    cache.reset()
    model.forward(np.arange(16), cache=cache, last_only=True)
    start = time.perf_counter()
    for _ in range(args.steps):
        model.forward(token, cache=cache, last_only=True)
    plain = (time.perf_counter() - start) / args.steps

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.steps):
        model.forward(token, cache=cache, last_only=True)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # tottime of every function
    kernels = blas = 0.0
    for (filename, _, name), row in stats.stats.items():
        if filename.endswith("cython_backend.py"):
            kernels += row[2]
        elif "matmul" in name:
            blas += row[2]
    per = 1e3 / args.steps

    # Second measure, without a profiler: the same steps with every backend op replaced by a
    # no-op that returns its output buffer. What remains is the time outside the kernels.
    real_ops = {}
    for op in ("layer_norm", "activation", "linear", "attention", "add"):
        real_ops[op] = getattr(model.backend, op)
        setattr(model.backend, op, lambda *a, **k: k["out"] if "out" in k else a[-1])
    cache.reset()
    model.forward(np.arange(16), cache=cache, last_only=True)
    start = time.perf_counter()
    for _ in range(args.steps):
        model.forward(token, cache=cache, last_only=True)
    hollow = (time.perf_counter() - start) / args.steps
    for op, fn in real_ops.items():
        setattr(model.backend, op, fn)

    print(f"backend {model.backend.name}, threads {model.num_threads}, {args.steps} decode steps")
    if fused is not None:
        step, inside = fused
        print(f"fused step (one call)        {step * 1e3:7.3f} ms")
        print(f"  inside the call            {inside * 1e3:7.3f} ms")
        print(f"  Python overhead            {(step - inside) * 1e3:7.3f} ms")
        print("op by op:")
    print(f"step time without profiler   {plain * 1e3:7.3f} ms")
    print(f"step time under profiler     {total * per:7.3f} ms")
    print(f"  compiled kernels           {kernels * per:7.3f} ms")
    print(f"  BLAS (numpy matmul)        {blas * per:7.3f} ms")
    print(f"  Python overhead            {(total - kernels - blas) * per:7.3f} ms (upper bound)")
    print(f"step time with no-op kernels {hollow * 1e3:7.3f} ms (Python overhead, no profiler)")


def fused_step_times(model, cache, token, steps):
    """(step time, time inside the fused call) per decode step, or None if the backend has none."""
    if model.backend.decoder(model.weights, model.config, cache, cache.workspace(1), 1) is None:
        return None
    inside = [0.0]
    find = model.backend.decoder

    class Timed:  # times the fused call from the Python side
        def __init__(self, decoder):
            self.decoder = decoder

        def step(self, rows, slots):
            t0 = time.perf_counter()
            logits = self.decoder.step(rows, slots)
            inside[0] += time.perf_counter() - t0
            return logits

    model.backend.decoder = lambda *a: Timed(find(*a))
    start = time.perf_counter()
    for _ in range(steps):
        model.forward(token, cache=cache, last_only=True)
    total = time.perf_counter() - start
    del model.backend.decoder
    return total / steps, inside[0] / steps


if __name__ == "__main__":
    main()
