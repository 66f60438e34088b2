"""Soak: 1000 mixed calls on the bundled model leave the process's memory where warm-up left it.

The calls cycle through every dtype and the ways a model is used: generate (greedy and sampled,
one prompt and a batch), a stream abandoned after a few pieces, forward with a cache (prefill
then decode steps) and forward without one. RSS is sampled every SAMPLE_EVERY calls after a
garbage collection; after warm-up it must stay within RSS_GROWTH_BOUND of the warm-up level.
What a leak per call would cost here: a KV cache of kjv-tiny is 1.3 MB, a decode workspace
~40 kB, so 800 leaked calls would add 30 MB to 1 GB; allocator noise stays in the low MB.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys

import numpy as np
import pytest

from fastgpt import Model, Tokenizer
from fastgpt.backend import kernels_available
from fastgpt.generate import Generator
from fastgpt.quant import DTYPES

CALLS = 1000
WARM_UP = 200
SAMPLE_EVERY = 50
RSS_GROWTH_BOUND = 24_000_000

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_flat_over_1000_mixed_calls():
    backend = "cython" if kernels_available() else "numpy"
    tok = Tokenizer.from_pretrained("kjv-tiny")
    gens = [Generator(Model.from_pretrained("kjv-tiny", backend=backend, dtype=d, num_threads=1), tok) for d in DTYPES]
    rng = np.random.default_rng(0)
    prompts = ["And God said", "In the beginning", "The LORD is my shepherd; I shall not want."]

    def generate(gen, k):
        gen.generate(prompts[k % 3], max_new_tokens=6, do_sample=bool(k % 2), seed=k)

    def generate_batch(gen, k):
        gen.generate(prompts, max_new_tokens=4, do_sample=True, top_k=20, seed=k, num_return_sequences=2)

    def abandoned_stream(gen, k):
        pieces = gen.stream(prompts[k % 3], max_new_tokens=20, do_sample=True, seed=k)
        for _ in itertools.islice(pieces, 2):
            pass                                       # then dropped with its cache mid-generation

    def forward_with_cache(gen, k):
        model = gen.model
        cache = model.new_cache(batch_size=2, max_len=40)
        logits = model.forward(rng.integers(0, 4096, (2, 16)), cache=cache, last_only=True)
        for _ in range(4):
            logits = model.forward(np.argmax(logits, axis=-1)[:, None], cache=cache, last_only=True)

    def forward_without_cache(gen, k):
        gen.model.forward(rng.integers(0, 4096, 24 + k % 8))

    kinds = [generate, generate_batch, abandoned_stream, forward_with_cache, forward_without_cache]
    samples = []
    for k in range(CALLS):
        kinds[k % len(kinds)](gens[(k // len(kinds)) % len(gens)], k)
        if (k + 1) % SAMPLE_EVERY == 0:
            gc.collect()
            samples.append((k + 1, rss_bytes()))
    base = next(rss for calls, rss in samples if calls == WARM_UP)
    after = [(calls, rss) for calls, rss in samples if calls > WARM_UP]
    print("calls -> RSS (MB):", ", ".join(f"{calls}: {rss / 1e6:.1f}" for calls, rss in samples))
    growth = max(rss for _, rss in after) - base
    assert growth <= RSS_GROWTH_BOUND, f"RSS grew {growth / 1e6:.1f} MB after warm-up (bound {RSS_GROWTH_BOUND / 1e6:.0f})"
