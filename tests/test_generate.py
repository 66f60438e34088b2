"""Tests for fastgpt.generate: decoding controls end to end, seeds, batches, stop strings,
streaming, log-probabilities and prompt truncation.

The processors themselves are tested against transformers in test_sampling.py; here the
question is whether Generator wires them correctly. Two kinds of models:

* the random "small" Hugging Face checkpoint from tests/oracle.py (vocabulary 500), run on every
  backend, with a toy byte-level tokenizer whose 500 ids cover that vocabulary;
* ``ScriptedModel``, a stand-in whose argmax follows a fixed token script, to drive the
  text layer (stop strings, UTF-8 streaming) through exact, hand-picked token sequences.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from oracle import LOGITS_ATOL
from fastgpt import GPT2Config, Model, Tokenizer
from fastgpt.generate import GenerationConfig, GenerationResult, Generator
from fastgpt.kv_cache import KVCache
from fastgpt.sampling import log_softmax
from fastgpt.tokenizer import bytes_to_unicode

# Log-probabilities of the same logits recomputed by a different path (full forward vs
# cached decode, batch vs alone): float32 logits agree to LOGITS_ATOL, and log_softmax
# moves each entry by at most twice the largest logit difference.
LOGPROB_ATOL = 2 * LOGITS_ATOL


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def toy_tokenizer() -> Tokenizer:
    """Byte-level BPE with exactly 500 ids: 256 bytes, <|endoftext|> = 256, 243 letter pairs.

    Covers the "small" checkpoint's vocabulary, so every id it generates decodes, and
    single bytes >= 0x80 split multi-byte characters across tokens.
    """
    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    vocab["<|endoftext|>"] = 256
    merges = list(itertools.islice(itertools.product("etaoinshrdlcumwfgypbvkjxqz", repeat=2), 243))
    for a, b in merges:
        vocab[a + b] = len(vocab)
    assert len(vocab) == 500
    return Tokenizer(vocab, merges)


def byte_tokenizer() -> Tokenizer:
    """One token per UTF-8 byte (ids 0..255) and <|endoftext|> = 256."""
    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    vocab["<|endoftext|>"] = 256
    return Tokenizer(vocab, [])


class ScriptedModel:
    """Stands in for Model: step s of a call makes ``script[s]`` every row's argmax.

    After the script it emits EOS. Only the members Generator uses exist.
    """

    prefill_chunk = 512
    kv_dtype = "float32"

    def __init__(self, script, vocab_size=50257, eos_token_id=50256):
        self.config = GPT2Config(vocab_size=vocab_size, n_positions=1024, n_embd=8, n_layer=1,
                                 n_head=2, eos_token_id=eos_token_id)
        self.script = [int(t) for t in script]
        self.step = 0

    def new_cache(self, batch_size=1, max_len=None):
        self.step = 0
        return KVCache(self.config, batch_size=batch_size, max_len=max_len)

    def forward(self, ids, cache=None, last_only=False):
        ids = np.asarray(ids)
        token = self.script[self.step] if self.step < len(self.script) else self.config.eos_token_id
        self.step += 1
        logits = np.zeros((ids.shape[0], self.config.vocab_size), np.float32)   # (B, V)
        logits[:, token] = 10.0
        return logits


@pytest.fixture(scope="module")
def toy_tok():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def gpt2_tok():
    return Tokenizer.gpt2()


@pytest.fixture
def small(hf_checkpoint, backend):
    folder, hf = hf_checkpoint("small")
    return Model.from_pretrained(folder, backend=backend), hf


def hf_generate(hf, prompt_ids, max_new_tokens, **kwargs):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        out = hf.generate(
            torch.as_tensor([list(prompt_ids)]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, **kwargs,
        )
    return out[0, len(prompt_ids):].tolist()


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


PROMPTS = ["Hello, world", "The cat sat on the mat and looked", "Hi"]   # 3 lengths


# --------------------------------------------------------------------------------------
# The promised public contract
# --------------------------------------------------------------------------------------


def test_public_contract(small, toy_tok):
    model, _ = small
    gen = Generator(model, toy_tok)
    text = gen.generate("Hello", max_new_tokens=12)
    ids = gen.generate_ids(toy_tok.encode("Hello"), max_new_tokens=8)
    pieces = list(gen.stream("Hello", max_new_tokens=12))
    assert isinstance(text, str) and isinstance(ids, list) and all(type(t) is int for t in ids)
    assert len(ids) == 8                        # config eos 50256 is outside this vocabulary
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == text == toy_tok.decode(gen.generate_ids(toy_tok.encode("Hello"), 12))
    assert gen.generate_ids(toy_tok.encode("Hello"), 8) == ids          # positional max_new_tokens
    assert list(gen.iter_ids(toy_tok.encode("Hello"), 8)) == ids


# --------------------------------------------------------------------------------------
# Against transformers' generate, on every backend
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    dict(repetition_penalty=1.3),
    dict(no_repeat_ngram_size=2),
    dict(repetition_penalty=0.8, no_repeat_ngram_size=3),
], ids=["rep1.3", "ngram2", "rep0.8+ngram3"])
def test_greedy_with_processors_equals_transformers(small, toy_tok, options):
    model, hf = small
    prompt = toy_tok.encode(PROMPTS[0])
    ours = Generator(model).generate_ids(prompt, 40, **options)
    ref = hf_generate(hf, prompt, 40, **options)
    print(options, "ours", ours[:12], "ref", ref[:12])
    assert ours == ref, f"first difference at step {first_difference(ours, ref)}"


def test_top_k_1_sampling_equals_greedy(small, toy_tok):
    model, _ = small
    gen = Generator(model, toy_tok)
    greedy = gen.generate_ids(toy_tok.encode(PROMPTS[1]), 24, repetition_penalty=1.2)
    sampled = gen.generate_ids(toy_tok.encode(PROMPTS[1]), 24, repetition_penalty=1.2,
                               do_sample=True, top_k=1, temperature=0.7, seed=5)
    assert sampled == greedy


# --------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------


def test_same_seed_same_output_and_no_global_rng(small, toy_tok):
    model, _ = small
    gen = Generator(model, toy_tok)
    opts = dict(do_sample=True, temperature=1.3, top_p=0.95, min_p=0.01, max_new_tokens=30)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = gen.generate(PROMPTS[0], seed=7, **opts)
    b = gen.generate(PROMPTS[0], seed=7, **opts)
    c = gen.generate(PROMPTS[0], seed=8, **opts)
    print(repr(a), repr(c))
    assert a == b
    assert a != c
    assert np.array_equal(np.random.get_state()[1], state), "the global RNG was used"
    # Row 0 of a batch draws from the same stream as a single prompt with that seed.
    batch = gen.generate([PROMPTS[0], PROMPTS[2]], seed=7, **opts)
    assert batch[0] == a


def test_num_return_sequences_groups_rows_per_prompt(small, toy_tok):
    model, _ = small
    gen = Generator(model, toy_tok)
    out = gen.generate(PROMPTS[:2], max_new_tokens=10, do_sample=True, temperature=1.5,
                       num_return_sequences=3, seed=1, return_result=True)
    assert len(out) == 6 and all(isinstance(r, GenerationResult) for r in out)
    assert len({tuple(r.token_ids) for r in out[:3]}) > 1          # samples differ
    again = gen.generate(PROMPTS[:2], max_new_tokens=10, do_sample=True, temperature=1.5,
                         num_return_sequences=3, seed=1)
    assert again == [r.text for r in out]
    one = gen.generate(PROMPTS[0], max_new_tokens=10, do_sample=True, temperature=1.5,
                       num_return_sequences=2, seed=1)
    assert isinstance(one, list) and len(one) == 2


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def test_batch_equals_one_by_one(small, toy_tok):
    model, _ = small
    gen = Generator(model, toy_tok)
    prompts = [toy_tok.encode(p) for p in PROMPTS]
    assert len({len(p) for p in prompts}) == 3
    opts = dict(no_repeat_ngram_size=2, return_logprobs=True)     # per-row processor state
    batch = gen.generate_ids(prompts, 20, **opts)
    for p, row in zip(prompts, batch):
        alone = gen.generate_ids(p, 20, **opts)
        assert row.token_ids == alone.token_ids
        diff = np.abs(np.subtract(row.logprobs, alone.logprobs)).max()
        print(f"prompt of {len(p)} tokens: max logprob diff batch vs alone {diff:.2e}")
        assert diff <= LOGPROB_ATOL

    # The prefill logits themselves: left padding + per-row positions = running alone.
    P = max(len(p) for p in prompts)
    cache = model.new_cache(batch_size=3, max_len=P)
    cache.set_left_padding([P - len(p) for p in prompts])
    ids = np.zeros((3, P), np.int64)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):] = p
    batch_logits = model.forward(ids, cache=cache, last_only=True).copy()   # (3, V)
    for b, p in enumerate(prompts):
        alone = model.forward(np.asarray(p))[-1]                           # (V,)
        diff = np.abs(batch_logits[b] - alone).max()
        print(f"row {b}: max prefill logit diff {diff:.2e}")
        assert diff <= LOGITS_ATOL


def test_rows_finish_independently(small, toy_tok):
    model, _ = small
    gen = Generator(model, toy_tok)
    prompts = [toy_tok.encode(p) for p in PROMPTS]
    opts = dict(no_repeat_ngram_size=2, max_new_tokens=16)
    free = gen.generate_ids(prompts, **opts)
    # An EOS id that ends one row early and never occurs in another row.
    eos, early, late = next(
        (t, b, c) for b, c in itertools.permutations(range(3), 2)
        for t in free[b][2:] if t not in free[c]
    )
    results = gen.generate_ids(prompts, eos_token_id=eos, return_result=True, **opts)
    for p, r in zip(prompts, results):
        alone = gen.generate_ids(p, eos_token_id=eos, return_result=True, **opts)
        assert r.token_ids == alone.token_ids and r.finish_reason == alone.finish_reason
    assert results[early].finish_reason == "eos" and results[early].token_ids[-1] == eos
    assert len(results[early].token_ids) < 16
    assert results[early].text == toy_tok.decode(results[early].token_ids[:-1])   # text: no EOS
    assert results[late].finish_reason == "length" and results[late].token_ids == free[late]


def test_logit_bias_and_list_of_eos(small, toy_tok):
    model, _ = small
    gen = Generator(model, toy_tok)
    forced = toy_tok.encode("q")[0]
    out = gen.generate_ids([toy_tok.encode(p) for p in PROMPTS], 5, logit_bias={forced: 100.0})
    assert out == [[forced] * 5] * 3
    stop_ids = gen.generate_ids(toy_tok.encode(PROMPTS[0]), 5, logit_bias={forced: 100.0},
                                eos_token_id=[7, forced], return_result=True)
    assert stop_ids.token_ids == [forced] and stop_ids.finish_reason == "eos" and stop_ids.text == ""


# --------------------------------------------------------------------------------------
# Stop strings
# --------------------------------------------------------------------------------------


def test_stop_string_across_a_token_boundary_real_model(small, toy_tok):
    model, _ = small
    gen = Generator(model, toy_tok)
    opts = dict(no_repeat_ngram_size=2, max_new_tokens=30)
    full = gen.generate(PROMPTS[0], return_result=True, **opts)
    dec = toy_tok.decoder()
    pieces = [dec.push(t) for t in full.token_ids]                # per-token text
    starts = np.cumsum([0] + [len(p) for p in pieces])            # text offset of each token
    # Tokens k and k+1 whose text is non-empty; the stop string is the last character of
    # token k + the first of token k+1, and its first occurrence is at that boundary.
    for k in range(len(pieces) - 1):
        a, b = pieces[k], pieces[k + 1]
        if a and b and "\ufffd" not in a[-1] + b[0]:
            stop = a[-1] + b[0]
            if full.text.find(stop) == starts[k + 1] - 1:
                break
    else:
        pytest.fail(f"no token boundary to test in {pieces}")
    print(f"stop {stop!r} spans tokens {k} and {k + 1}: {a!r} | {b!r}")
    r = gen.generate(PROMPTS[0], stop=stop, return_result=True, **opts)
    assert r.finish_reason == "stop"
    assert r.text == full.text[: starts[k + 1] - 1]
    assert r.token_ids == full.token_ids[: k + 2]                 # up to the completing token
    streamed = "".join(gen.stream(PROMPTS[0], stop=stop, **opts))
    assert streamed == r.text
    # In a batch the row stops on its own; the other row runs as it would alone.
    batch = gen.generate([PROMPTS[0], PROMPTS[1]], stop=stop, return_result=True, **opts)
    assert batch[0] == r
    assert batch[1] == gen.generate(PROMPTS[1], stop=stop, return_result=True, **opts)


def test_stop_strings_scripted(gpt2_tok):
    script = gpt2_tok.encode(" Hello world. Goodbye world.")
    assert [gpt2_tok.decode([t]) for t in script[:2]] == [" Hello", " world"]
    gen = Generator(ScriptedModel(script), gpt2_tok)
    full = gen.generate("x", max_new_tokens=20, return_result=True)
    assert full.text == " Hello world. Goodbye world." and full.finish_reason == "eos"
    assert full.token_ids == script + [50256]

    r = gen.generate("x", max_new_tokens=20, stop="lo wo", return_result=True)   # spans 2 tokens
    assert (r.text, r.finish_reason, r.token_ids) == (" Hel", "stop", script[:2])
    pieces = list(gen.stream("x", max_new_tokens=20, stop="lo wo"))
    assert "".join(pieces) == " Hel" and not any("lo" in p for p in pieces)

    r = gen.generate("x", max_new_tokens=20, stop=["Goodbye", "."], return_result=True)
    assert r.text == " Hello world"                               # the earliest match wins
    r = gen.generate("x", max_new_tokens=20, stop=["world!", "x"], return_result=True)
    assert r.text == full.text and r.finish_reason == "eos"       # prompt text is not matched
    assert "".join(gen.stream("x", max_new_tokens=20, stop="world!")) == full.text
    r = gen.generate("x", max_new_tokens=2, stop="xyz", return_result=True)
    assert (r.text, r.finish_reason) == (" Hello world", "length")


def test_stop_in_prompt_lets_a_stop_string_begin_in_the_prompt(gpt2_tok):
    script = gpt2_tok.encode(" Hello world. Goodbye world.")
    gen = Generator(ScriptedModel(script), gpt2_tok)
    full = gen.generate("ab", max_new_tokens=20, return_result=True)
    r = gen.generate("ab", max_new_tokens=20, stop="b H", return_result=True)
    assert r == full                                              # OpenAI's stop: generated text only
    r = gen.generate("ab", max_new_tokens=20, stop="b H", stop_in_prompt=True, return_result=True)
    assert (r.text, r.finish_reason, r.token_ids) == ("", "stop", script[:1])   # transformers' stop_strings
    # " Hello" might still become "b Hello!" with the prompt's "b": held back until " world" rules it out
    pieces = list(gen.stream("ab", max_new_tokens=20, stop="b Hello!", stop_in_prompt=True))
    assert "".join(pieces) == full.text and pieces[0] == " Hello world"
    with pytest.raises(ValueError, match="stop_in_prompt"):
        gen.generate("ab", stop="b", stop_in_prompt="yes")


def test_stream_holds_back_only_possible_stop_prefixes(gpt2_tok):
    script = gpt2_tok.encode(" Hello world. Goodbye world.")
    gen = Generator(ScriptedModel(script), gpt2_tok)
    pieces = list(gen.stream("x", max_new_tokens=20, stop="world!"))
    # "world" could start "world!" so it waits for the next token; the rest flows through.
    assert pieces == [" Hello", " ", "world.", " Goodbye", " ", "world."]


# --------------------------------------------------------------------------------------
# Streaming UTF-8
# --------------------------------------------------------------------------------------


EMOJI_CJK = "Hi 😀 日本語のテキスト 🎉👍🏽 naïve ✓ done"


def test_stream_emoji_and_cjk_gpt2_tokens(gpt2_tok):
    script = gpt2_tok.encode(EMOJI_CJK)
    split = [t for t in script if not _valid_utf8(gpt2_tok.decode_bytes([t]))]
    assert split, "the text should contain characters split across tokens"
    gen = Generator(ScriptedModel(script), gpt2_tok)
    pieces = list(gen.stream("x", max_new_tokens=len(script) + 1))
    print(f"{len(script)} tokens ({len(split)} partial characters) -> pieces {pieces}")
    assert "".join(pieces) == EMOJI_CJK == gpt2_tok.decode(script)
    assert not any("\ufffd" in p for p in pieces)
    assert gen.generate("x", max_new_tokens=len(script) + 1) == EMOJI_CJK


def test_stream_one_byte_per_token_yields_whole_characters():
    tok = byte_tokenizer()
    script = list(EMOJI_CJK.encode("utf-8"))
    gen = Generator(ScriptedModel(script, vocab_size=257, eos_token_id=256), tok)
    pieces = list(gen.stream("x", max_new_tokens=len(script) + 1))
    assert pieces == list(EMOJI_CJK)          # each character exactly when its last byte lands


def test_stream_reassembles_to_decoded_text_real_model(small, toy_tok):
    model, _ = small
    gen = Generator(model, toy_tok)
    opts = dict(do_sample=True, temperature=2.0, seed=3, max_new_tokens=40)
    r = gen.generate_ids(toy_tok.encode(PROMPTS[0]), return_result=True, **opts)
    assert any(t >= 0x80 for t in r.token_ids if t < 256), "want some non-ASCII bytes"
    assert "".join(gen.stream(PROMPTS[0], **opts)) == toy_tok.decode(r.token_ids) == r.text


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --------------------------------------------------------------------------------------
# min_new_tokens, eos options (scripted)
# --------------------------------------------------------------------------------------


def test_min_new_tokens_and_eos_options(gpt2_tok):
    script = gpt2_tok.encode(" Hi")
    gen = Generator(ScriptedModel(script), gpt2_tok)
    assert gen.generate_ids([1], 10) == script + [50256]          # EOS kept in ids ...
    assert gen.generate("x", max_new_tokens=10) == " Hi"          # ... not in text
    ids = gen.generate_ids([1], 10, min_new_tokens=3)
    assert ids == script + [0, 0, 50256]                           # EOS banned for 2 steps
    r = gen.generate("x", max_new_tokens=4, eos_token_id=[], return_result=True)
    assert r.finish_reason == "length" and r.text == " Hi" + "<|endoftext|>" * 3


# --------------------------------------------------------------------------------------
# Log-probabilities
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", [False, True])
def test_logprobs_are_raw_log_softmax(small, toy_tok, sample):
    model, _ = small
    gen = Generator(model, toy_tok)
    prompt = toy_tok.encode(PROMPTS[1])
    opts = dict(do_sample=True, temperature=0.5, top_k=20, seed=2) if sample else {}
    r = gen.generate_ids(prompt, 8, top_logprobs=5, repetition_penalty=1.2, **opts)
    assert len(r.logprobs) == len(r.top_logprobs) == len(r.token_ids) == 8
    # Raw distribution: one full forward over prompt + generated, no cache, no processors.
    full = model.forward(np.asarray(prompt + r.token_ids[:-1]))           # (L, V)
    lp = log_softmax(full[len(prompt) - 1:])                               # (8, V)
    want = lp[np.arange(8), r.token_ids]
    print("logprobs", np.round(r.logprobs, 4), "max diff", np.abs(want - r.logprobs).max())
    np.testing.assert_allclose(r.logprobs, want, atol=LOGPROB_ATOL)
    for step, top in enumerate(r.top_logprobs):
        ids, values = list(top), list(top.values())
        assert len(top) == 5 and values == sorted(values, reverse=True)
        np.testing.assert_allclose(values, lp[step, ids], atol=LOGPROB_ATOL)
        assert values[0] >= r.logprobs[step] - LOGPROB_ATOL
        if r.token_ids[step] in top:
            assert top[r.token_ids[step]] == r.logprobs[step]


# --------------------------------------------------------------------------------------
# Long prompts
# --------------------------------------------------------------------------------------


def test_too_long_prompt_errors_or_truncates_left(small):
    model, _ = small
    gen = Generator(model)
    n_ctx = model.config.n_positions                                      # 128
    prompt = [int(t) for t in np.random.default_rng(0).integers(0, 500, n_ctx + 2)]
    with pytest.raises(ValueError, match=rf"{n_ctx + 2} tokens \+ max_new_tokens=8 exceeds .*"
                                         rf"n_positions={n_ctx}.*truncate='left'"):
        gen.generate_ids(prompt, 8)
    r = gen.generate_ids(prompt, 8, truncate="left", return_result=True)
    assert r.prompt_tokens_dropped == 10 and len(r.token_ids) == 8
    assert r.token_ids == gen.generate_ids(prompt[10:], 8)
    batch = gen.generate_ids([prompt, prompt[:5]], 8, truncate="left", return_result=True)
    assert [b.prompt_tokens_dropped for b in batch] == [10, 0]
    assert batch[0].token_ids == r.token_ids
    with pytest.raises(ValueError, match="lower max_new_tokens"):
        gen.generate_ids([1, 2], n_ctx, truncate="left")


# --------------------------------------------------------------------------------------
# Option checks: ValueError naming the option, before the model runs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options,match", [
    (dict(top_p=2.0), "top_p"),
    (dict(do_sample=True, temperature=0.0), "temperature.*do_sample=False"),
    (dict(top_k=-1), "top_k"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(min_new_tokens=1.5), "min_new_tokens"),
    (dict(stop=""), "stop"),
    (dict(stop=["ok", 3]), "stop"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(num_return_sequences=2), "num_return_sequences.*do_sample"),
    (dict(truncate="right"), "truncate"),
    (dict(eos_token_id=10**6), "eos_token_id"),
    (dict(logit_bias={10**6: 1.0}), "logit_bias"),
    (dict(top_logprobs=-1), "top_logprobs"),
])
def test_bad_options_name_themselves(options, match):
    gen = Generator(ScriptedModel([1, 2, 3]), byte_tokenizer())
    with pytest.raises(ValueError, match=match):
        gen.generate("x", **options)
    if "top_logprobs" not in options:
        with pytest.raises(ValueError, match=match):
            gen.stream("x", **options)                   # checked on the call, not on next()


def test_usage_errors():
    gen = Generator(ScriptedModel([1, 2, 3]), None)
    with pytest.raises(TypeError, match="did you mean 'top_p'"):
        gen.generate_ids([1], top_pp=0.5)
    with pytest.raises(TypeError, match="come from generate"):
        gen.iter_ids([1], return_logprobs=True)
    with pytest.raises(ValueError, match="no tokenizer"):
        gen.generate_ids([1], stop="x")
    with pytest.raises(ValueError, match="no tokenizer"):
        gen.generate("x")
    with pytest.raises(ValueError, match="empty"):
        gen.generate_ids([])
    with pytest.raises(ValueError, match=r"prompt 1: token id 50257 at position 1"):
        gen.generate_ids([[1], [2, 50257]])
    with pytest.raises(TypeError, match="prompt_ids"):
        gen.generate_ids("hello")
    with pytest.raises(TypeError, match="GenerationConfig"):
        gen.generate_ids([1], config={"top_p": 0.5})
    r = gen.generate_ids([1], 3, return_result=True)
    assert r.text is None and r.token_ids == [1, 2, 3]


def test_sampling_options_without_do_sample_warn_like_transformers():
    gen = Generator(ScriptedModel([1, 2, 3]), byte_tokenizer())
    with pytest.warns(UserWarning, match=r"temperature=0\.5, top_p=0\.9 are ignored.*do_sample=True"):
        gen.generate_ids([1], 3, temperature=0.5, top_p=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gen.generate_ids([1], 3, do_sample=True, temperature=0.5, top_p=0.9, seed=0)


def test_config_object_and_overrides():
    gen = Generator(ScriptedModel([5, 6, 7, 8]), byte_tokenizer())
    cfg = GenerationConfig(max_new_tokens=2)
    assert gen.generate_ids([1], config=cfg) == [5, 6]
    assert gen.generate_ids([1], 3, config=cfg) == [5, 6, 7]
    assert gen.generate_ids([1], config=cfg, max_new_tokens=1) == [5]
    assert cfg.max_new_tokens == 2                                    # not mutated
    assert gen.generate_ids([1], 0) == []
