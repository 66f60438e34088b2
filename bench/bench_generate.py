"""End to end on a random model with GPT-2 124M shapes: prefill of 128 and 512 tokens, and decode.

Each round starts from a fresh KV cache, as a new generation does (its allocation is untimed,
the first write to its pages is timed, as in real use). Decode is timed alone: the prompt's
prefill happens in the untimed setup. ``extra_info`` holds tokens/s and ms/token, computed
from the median round.
"""

import numpy as np
import pytest

from fastgpt.config import PRESETS

GPT2 = PRESETS["gpt2"]
ROUNDS = 5            # each round is 0.1-3 s at 124M on 2 cores; 5 give a usable median
DECODE_PROMPT = 16
DECODE_TOKENS = 64


def _prompt(n):
    return np.random.default_rng(0).integers(0, GPT2.vocab_size, n, dtype=np.int64)


def _record_rate(benchmark, tokens):
    if benchmark.enabled:
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["tokens_per_s"] = round(tokens / seconds, 2)
        benchmark.extra_info["ms_per_token"] = round(1e3 * seconds / tokens, 3)


@pytest.mark.parametrize("prompt_tokens", [128, 512])
def test_prefill(benchmark, gpt2_model, prompt_tokens):
    benchmark.group = f"prefill {prompt_tokens} tokens"
    model, ids = gpt2_model, _prompt(prompt_tokens)

    def setup():
        return (model.new_cache(batch_size=1, max_len=prompt_tokens),), {}

    def prefill(cache):
        return model.forward(ids, cache=cache, last_only=True)

    benchmark.pedantic(prefill, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    _record_rate(benchmark, prompt_tokens)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "op-by-op"])
def test_decode(benchmark, gpt2_model, fused):
    benchmark.group = f"decode {DECODE_TOKENS} tokens after a {DECODE_PROMPT}-token prompt"
    model, ids = gpt2_model, _prompt(DECODE_PROMPT)
    if not hasattr(model.backend, "fuse_decode"):
        if fused:
            pytest.skip("this backend has no fused decode step: it always runs op by op")
    else:
        model.backend.fuse_decode = fused  # one call per step (kernels/_decode.pyx), or op by op

    def setup():
        cache = model.new_cache(batch_size=1, max_len=DECODE_PROMPT + DECODE_TOKENS)
        logits = model.forward(ids, cache=cache, last_only=True)
        return (cache, int(np.argmax(logits))), {}

    def decode(cache, token):
        # Generator.iter_ids's loop: one forward of one token, then greedy argmax.
        buf = np.empty(1, np.int64)
        for _ in range(DECODE_TOKENS):
            buf[0] = token
            token = int(np.argmax(model.forward(buf, cache=cache, last_only=True)))
        return token

    benchmark.pedantic(decode, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    _record_rate(benchmark, DECODE_TOKENS)
