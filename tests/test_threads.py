"""One Model / Generator shared by many threads gives, call for call, bitwise what it gives alone.

The compiled kernels release the GIL, so the threads below really run at the same time (the
tests check that calls overlapped). Each test computes every workload serially first (the
oracle), then N threads run M calls each, starting together, and every output must equal its
serial result bit for bit. Covered: both backends, every dtype, the fused decode step and the
op-by-op path, prefill and decode, one row and batches (12 rows: above the fused step's limit,
so the GEMM path), ``Model.forward`` with fresh caches and ``Generator.generate_ids``.

A KVCache belongs to one call at a time: using one from two threads at once must raise
CacheBusyError (a CacheError, so a ValueError), never corrupt the cache.
"""

import threading
import time

import numpy as np
import pytest

from fastgpt import Model
from fastgpt.backend import kernels_available
from fastgpt.generate import Generator
from fastgpt.kv_cache import CacheBusyError
from fastgpt.quant import DTYPES

N_THREADS = 4
CALLS_PER_THREAD = 8
# The reference backend is plain NumPy, ~5x slower here, and the suite must stay quick: it
# gets fewer calls (its kernels release the GIL too, in BLAS).
CALLS_PER_THREAD_NUMPY = 4
# Bounds on the cache-sharing test: attempts stop at the first refusal, or after this long.
SHARED_CACHE_SECONDS = 5.0

# (backend, fuse_decode, num_threads): the NumPy reference has no fused step. One thread per
# call keeps the test quick on a busy machine (an OpenMP team waits for its slowest thread);
# the two-thread engine covers the scratch that is split between a call's OpenMP threads.
ENGINES = [("numpy", False, 1)] + ([("cython", True, 1), ("cython", False, 1)] if kernels_available() else [])
TWO_THREADS = [("cython", True, 2)] if kernels_available() else []


def engine_id(engine):
    backend, fuse, num_threads = engine
    return f"{backend}{'-fused' if fuse else ''}-{num_threads}t"

_models = {}


def shared_model(backend, fuse, num_threads, dtype):
    """kjv-tiny (4 layers x 160, vocabulary 4096, context 256), one object per combination."""
    key = (backend, fuse, num_threads, dtype)
    if key not in _models:
        model = Model.from_pretrained("kjv-tiny", backend=backend, dtype=dtype, num_threads=num_threads)
        if backend == "cython":
            model.backend.fuse_decode = fuse
        _models[key] = model
    return _models[key]


def _ids(seed, shape, vocab=4096):
    return np.random.default_rng(seed).integers(0, vocab, shape)


def prefill(batch, length, seed):
    ids = _ids(seed, (batch, length))

    def run(model):
        return [model.forward(ids).copy()]                      # a fresh cache per call
    return run


def decode(batch, prompt, steps, seed):
    ids = _ids(seed, (batch, prompt))

    def run(model):
        cache = model.new_cache(batch_size=batch, max_len=prompt + steps)
        logits = model.forward(ids, cache=cache, last_only=True)
        out = [logits.copy()]
        for _ in range(steps):
            token = np.argmax(logits, axis=-1).reshape(batch, 1)
            logits = model.forward(token, cache=cache, last_only=True)
            out.append(logits.copy())
        return out
    return run


def generate(prompts, ids_seed, **options):
    prompt_ids = [_ids(ids_seed + k, n).tolist() for k, n in enumerate(prompts)]

    def run(model):
        # The log-probabilities show a wrong logit even where the argmax survives it.
        results = Generator(model).generate_ids(prompt_ids, max_new_tokens=8, eos_token_id=[],
                                                return_logprobs=True, **options)
        return [np.array([r.token_ids for r in results]), np.array([r.logprobs for r in results])]
    return run


# Lengths differ per workload so that shared scratch sized for one call is wrong for another.
FORWARD_WORKLOADS = {
    "prefill-b1-t128": prefill(1, 128, 1),
    "prefill-b3-t48": prefill(3, 48, 2),
    "prefill-b12-t20": prefill(12, 20, 3),
    "decode-b1": decode(1, 64, 6, 4),
    "decode-b4": decode(4, 32, 6, 5),
    "decode-b12": decode(12, 16, 6, 6),
}
GENERATE_WORKLOADS = {
    "greedy-b1": generate([90], 10),
    "greedy-b12": generate([4 + 5 * k for k in range(12)], 20),
    "sample-b3": generate([30, 60, 9], 40, do_sample=True, top_k=40, seed=7),
}


def run_concurrently(model, workloads):
    """Serial results, then N_THREADS threads making calls that cycle through the workloads;
    returns (mismatch descriptions, calls made, most calls in flight at once)."""
    calls_per_thread = CALLS_PER_THREAD_NUMPY if model.backend.name == "numpy" else CALLS_PER_THREAD
    names = list(workloads)
    expected = {name: workloads[name](model) for name in names}
    mismatches, errors = [], []
    in_flight, most_in_flight = [0], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(N_THREADS)

    def worker(t):
        barrier.wait()
        for call in range(calls_per_thread):
            name = names[(t + call) % len(names)]
            with lock:
                in_flight[0] += 1
                most_in_flight[0] = max(most_in_flight[0], in_flight[0])
            try:
                got = workloads[name](model)
            except Exception as exc:  # noqa: BLE001 - reported below with the thread and call
                errors.append(f"thread {t} call {call} {name}: {type(exc).__name__}: {exc}")
                continue
            finally:
                with lock:
                    in_flight[0] -= 1
            for step, (a, b) in enumerate(zip(got, expected[name])):
                if not np.array_equal(a, b):
                    diff = np.abs(a.astype(np.float64) - b)
                    where = np.argwhere(~(a == b))[0].tolist()
                    mismatches.append(f"thread {t} call {call} {name} output {step}: first differs at "
                                      f"{where} ({a[tuple(where)]} vs {b[tuple(where)]}), max |diff| "
                                      f"{np.nanmax(diff) if np.isfinite(diff).any() else 'nan'}")
                    break

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors + mismatches, N_THREADS * calls_per_thread, most_in_flight[0]


def check_concurrent(model, workloads):
    problems, calls, overlap = run_concurrently(model, workloads)
    assert not problems, f"{len(problems)} of {calls} concurrent calls differ from the serial run:\n  " + \
        "\n  ".join(problems[:8])
    assert overlap >= 2, "the calls never overlapped: the test did not exercise sharing"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", ENGINES + TWO_THREADS, ids=engine_id)
def test_forward_from_many_threads_is_bitwise_serial(engine, dtype):
    check_concurrent(shared_model(*engine, dtype), FORWARD_WORKLOADS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", ENGINES, ids=engine_id)
def test_generate_from_many_threads_is_bitwise_serial(engine, dtype):
    check_concurrent(shared_model(*engine, dtype), GENERATE_WORKLOADS)


@pytest.mark.parametrize("engine", ENGINES, ids=engine_id)
def test_one_cache_from_two_threads_is_refused_not_corrupted(engine):
    """Two threads append the same token to one cache, step after step. Each call either runs
    or raises CacheBusyError; at the end the cache must hold exactly what the successful calls
    appended, bitwise what one thread appending that many tokens gives."""
    model = shared_model(*engine, "float32")
    token = np.array([[17]])
    shared = model.new_cache(batch_size=1)
    succeeded, refused, errors = [0, 0], [0, 0], []
    stop = threading.Event()
    deadline = time.monotonic() + SHARED_CACHE_SECONDS

    def worker(t):
        while not stop.is_set() and time.monotonic() < deadline:
            if shared.pos >= shared.max_len - 2:
                break
            try:
                model.forward(token, cache=shared, last_only=True)
                succeeded[t] += 1
            except CacheBusyError:
                refused[t] += 1
                stop.set()
            except Exception as exc:  # noqa: BLE001 - anything else is a failure
                errors.append(f"thread {t}: {type(exc).__name__}: {exc}")
                stop.set()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert sum(refused) >= 1, (f"{sum(succeeded)} calls ran on one cache from two threads and none was refused "
                               f"(in {SHARED_CACHE_SECONDS} s)")
    n = sum(succeeded)
    alone = model.new_cache(batch_size=1)
    for _ in range(n):
        model.forward(token, cache=alone, last_only=True)
    assert shared.pos == alone.pos == n, f"the shared cache holds {shared.pos} tokens after {n} successful calls"
    assert np.array_equal(shared.k[..., :n, :], alone.k[..., :n, :]), "keys corrupted"
    assert np.array_equal(shared.v[..., :n, :], alone.v[..., :n, :]), "values corrupted"
