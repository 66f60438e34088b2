"""Tests for fastgpt.sampling: each processor against transformers' own processors, the
whole chain against a transformers LogitsProcessorList, the draw (chi-square at a fixed
seed, determinism, independence from the global RNG), argument validation and purity.

The transformers comparisons skip when torch or transformers is missing; the rest is
pure NumPy.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from fastgpt.sampling import (
    SamplingParams,
    apply_logit_bias,
    apply_min_new_tokens,
    apply_min_p,
    apply_no_repeat_ngram,
    apply_presence_frequency_penalty,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    greedy_token,
    log_softmax,
    process_logits,
    sample_token,
)

# Tolerances (habit 10).
# Scores vs transformers: the same float32 operations (x / t, x * p) with the scalar
# rounded to float32 on both sides, so only float32 rounding can differ.
SCORE_RTOL = 1e-6
# log_softmax (float64) vs torch.log_softmax in float64: a few ulps of the log-sum-exp.
LOGPROB_ATOL = 1e-12

# Awkward vocabulary sizes (habit 9).
SIZES = (1, 3, 7, 63, 65, 1023)

# 0.999 quantiles of the chi-square distribution by degrees of freedom (standard table
# values, = scipy.stats.chi2.ppf(0.999, df); scipy is not a test dependency).
CHI2_CRIT_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515}


def make_logits(V, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(V) * 3.0                      # (V,)
    if ties:
        x = np.round(x / 2.0)                             # few distinct values: many ties
    return x.astype(np.float32)


def assert_same_scores(ours, theirs, what=""):
    """Same -inf positions; finite values equal up to float32 rounding. Prints evidence."""
    ours = np.asarray(ours)
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    assert ours.dtype == np.float32, (what, ours.dtype)
    ninf_a, ninf_b = np.isneginf(ours), np.isneginf(theirs)
    if not np.array_equal(ninf_a, ninf_b):
        bad = np.flatnonzero(ninf_a != ninf_b)
        pytest.fail(f"{what}: -inf masks differ at {bad[:10]} (ours -inf: {ninf_a[bad[:10]]})")
    fin = ~ninf_a
    a, b = ours[fin].astype(np.float64), theirs[fin].astype(np.float64)
    err = np.abs(a - b)
    tol = SCORE_RTOL * np.abs(b)
    if np.any(err > tol):
        idx = np.flatnonzero(err > tol)[:5]
        pytest.fail(f"{what}: max diff {err.max():.3g}; first mismatches ours={a[idx]} "
                    f"theirs={b[idx]}")


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    return SimpleNamespace(torch=torch, tf=transformers)


def run_hf(hf, processor, logits, ids=()):
    """Apply one transformers processor to (1, V) scores with input_ids of shape (1, n)."""
    torch = hf.torch
    input_ids = torch.tensor(list(ids), dtype=torch.long).reshape(1, -1)   # (1, n)
    scores = torch.from_numpy(np.array(logits, dtype=np.float32))[None]    # (1, V)
    return processor(input_ids, scores)[0].numpy()


# --------------------------------------------------------------------------------------
# Processors vs transformers.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("V", SIZES)
@pytest.mark.parametrize("t", [0.25, 0.7, 1.0, 1.5, 3.0])
def test_temperature_matches_transformers(hf, V, t):
    x = make_logits(V, seed=V)
    theirs = run_hf(hf, hf.tf.TemperatureLogitsWarper(t), x)
    assert_same_scores(apply_temperature(x, t), theirs, f"temperature={t}")


@pytest.mark.parametrize("V", SIZES)
@pytest.mark.parametrize("k", [1, 2, 5, 50, 2000])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_top_k_matches_transformers(hf, V, k, ties, min_keep):
    x = make_logits(V, seed=V + 1, ties=ties)
    theirs = run_hf(hf, hf.tf.TopKLogitsWarper(top_k=k, min_tokens_to_keep=min_keep), x)
    ours = apply_top_k(x, k, min_tokens_to_keep=min_keep)
    assert_same_scores(ours, theirs, f"top_k={k} ties={ties}")


def test_top_k_keeps_ties_at_the_cut():
    x = np.array([1.0, 3.0, 3.0, 2.0, 3.0, 0.0], dtype=np.float32)
    out = apply_top_k(x, 2)
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(out)), [1, 2, 4])
    out = apply_top_k(x, 4)
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(out)), [1, 2, 3, 4])


@pytest.mark.parametrize("V", SIZES)
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_top_p_matches_transformers(hf, V, p, min_keep):
    # Continuous logits: with exact ties transformers' (unstable) torch.sort decides which
    # tied token survives, see test_top_p_tie_rule.
    x = make_logits(V, seed=V + 2)
    theirs = run_hf(hf, hf.tf.TopPLogitsWarper(top_p=p, min_tokens_to_keep=min_keep), x)
    assert_same_scores(apply_top_p(x, p, min_keep), theirs, f"top_p={p}")


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("scale", [1.0, 3.0, 8.0])
def test_top_p_matches_transformers_full_vocab(hf, p, scale):
    # GPT-2 vocabulary size: exercises the candidate fast path and the full-sort fallback.
    x = (np.random.default_rng(21).standard_normal(50257) * scale).astype(np.float32)
    theirs = run_hf(hf, hf.tf.TopPLogitsWarper(top_p=p), x)
    assert_same_scores(apply_top_p(x, p), theirs, f"top_p={p} scale={scale}")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("p", [0.3, 0.9, 0.99])
@pytest.mark.parametrize("min_keep", [1, 7, 300])
def test_top_p_candidate_path_equals_full_sort(monkeypatch, seed, p, min_keep):
    import fastgpt.sampling as sampling_mod

    rng = np.random.default_rng(seed)
    V = 5000
    x = (rng.standard_normal(V) * rng.choice([1.0, 3.0, 6.0])).astype(np.float32)
    if seed % 2:
        x = np.round(x)                                        # many ties
    if seed % 3 == 0:
        x = apply_top_k(x, 200)                                # many -inf
    fast = apply_top_p(x, p, min_keep)
    monkeypatch.setattr(sampling_mod, "_TOP_P_CANDIDATES", ())
    full = apply_top_p(x, p, min_keep)
    np.testing.assert_array_equal(fast, full)


def test_top_p_hand_made():
    # probs 0.5, 0.25, 0.15, 0.1 (ids 0..3); p=0.7 keeps the smallest set with mass
    # >= 0.7 from the top: {0, 1}.
    x = np.log(np.array([0.5, 0.25, 0.15, 0.1])).astype(np.float32)
    np.testing.assert_array_equal(np.isfinite(apply_top_p(x, 0.7)), [1, 1, 0, 0])
    np.testing.assert_array_equal(np.isfinite(apply_top_p(x, 0.4)), [1, 0, 0, 0])
    np.testing.assert_array_equal(np.isfinite(apply_top_p(x, 0.4, 3)), [1, 1, 1, 0])


def test_top_p_tie_rule():
    # Documented: a stable ascending sort, so among tied logits the lower id goes first.
    x = np.zeros(2, dtype=np.float32)
    np.testing.assert_array_equal(np.isfinite(apply_top_p(x, 0.5)), [False, True])


@pytest.mark.parametrize("V", SIZES)
@pytest.mark.parametrize("min_p", [0.01, 0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("ties,min_keep", [(False, 1), (False, 5), (True, 1)])
def test_min_p_matches_transformers(hf, V, min_p, ties, min_keep):
    # No ties with min_keep > 1: which tied tokens torch.topk keeps is unspecified.
    x = make_logits(V, seed=V + 3, ties=ties)
    theirs = run_hf(hf, hf.tf.MinPLogitsWarper(min_p=min_p, min_tokens_to_keep=min_keep), x)
    assert_same_scores(apply_min_p(x, min_p, min_keep), theirs, f"min_p={min_p}")


@pytest.mark.parametrize("V", [1, 7, 65, 1023])
@pytest.mark.parametrize("penalty", [0.5, 0.8, 1.2, 2.0])
def test_repetition_penalty_matches_transformers(hf, V, penalty):
    x = make_logits(V, seed=V + 4)                        # both signs
    ids = np.random.default_rng(V).integers(0, V, size=25)  # duplicates on purpose
    theirs = run_hf(hf, hf.tf.RepetitionPenaltyLogitsProcessor(penalty), x, ids)
    assert_same_scores(apply_repetition_penalty(x, ids, penalty), theirs, f"penalty={penalty}")
    # A list works the same as an array.
    assert_same_scores(apply_repetition_penalty(x, ids.tolist(), penalty), theirs, "list ids")


def test_repetition_penalty_hand_made():
    x = np.array([2.0, -2.0, 1.0, -1.0], dtype=np.float32)
    out = apply_repetition_penalty(x, [0, 1, 1, 1], 2.0)  # each id once
    np.testing.assert_array_equal(out, [1.0, -4.0, 1.0, -1.0])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("V,alphabet,length", [(8, 5, 40), (1023, 4, 100), (65, 65, 3)])
def test_no_repeat_ngram_matches_transformers(hf, n, seed, V, alphabet, length):
    x = make_logits(V, seed=seed)
    ids = np.random.default_rng(seed + 10).integers(0, alphabet, size=length)
    theirs = run_hf(hf, hf.tf.NoRepeatNGramLogitsProcessor(n), x, ids)
    assert_same_scores(apply_no_repeat_ngram(x, ids, n), theirs, f"n={n}")


def test_no_repeat_ngram_hand_made():
    x = np.zeros(6, dtype=np.float32)
    # Bigrams seen: (1,2) (2,3) (3,1) (1,4) ; last token 1 -> ban 2 and 4.
    out = apply_no_repeat_ngram(x, [1, 2, 3, 1, 4, 1], 2)
    np.testing.assert_array_equal(np.isneginf(out), [0, 0, 1, 0, 1, 0])
    # n=1 bans everything seen; fewer ids than n bans nothing.
    np.testing.assert_array_equal(np.isneginf(apply_no_repeat_ngram(x, [5, 0], 1)),
                                  [1, 0, 0, 0, 0, 1])
    assert not np.isneginf(apply_no_repeat_ngram(x, [1, 2], 3)).any()


CHAIN_CASES = [
    dict(do_sample=False, repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(do_sample=False, min_new_tokens=5, eos_token_id=3),
    dict(do_sample=True, temperature=0.7, top_k=40, top_p=0.9),
    dict(do_sample=True, temperature=1.3, top_p=0.8, min_p=0.05, repetition_penalty=1.2),
    dict(do_sample=True, temperature=0.5, top_k=5, repetition_penalty=0.9,
         no_repeat_ngram_size=3, min_new_tokens=10, eos_token_id=[3, 7]),
    dict(do_sample=True, min_p=0.1, no_repeat_ngram_size=1),
]


@pytest.mark.parametrize("kw", CHAIN_CASES)
def test_chain_matches_transformers_list(hf, kw):
    """process_logits == transformers processors built in _get_logits_processor's order."""
    tf = hf.tf
    V, n_prompt = 1023, 12
    params = SamplingParams(**kw)
    ids = np.random.default_rng(5).integers(0, 20, size=30)          # (L,)
    procs = []
    if params.repetition_penalty != 1.0:
        procs.append(tf.RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.no_repeat_ngram_size > 0:
        procs.append(tf.NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
    if params.min_new_tokens > 0:
        procs.append(tf.MinNewTokensLengthLogitsProcessor(
            n_prompt, params.min_new_tokens, params.eos_token_id))
    if params.do_sample:
        if params.temperature != 1.0:
            procs.append(tf.TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            procs.append(tf.TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            procs.append(tf.TopPLogitsWarper(params.top_p))
        if params.min_p > 0.0:
            procs.append(tf.MinPLogitsWarper(params.min_p))
    for seed in range(3):
        x = make_logits(V, seed=100 + seed)
        theirs = run_hf(hf, tf.LogitsProcessorList(procs), x, ids)
        ours = process_logits(x, params, ids, n_prompt)
        assert_same_scores(ours, theirs, f"chain {kw} seed {seed}")


def test_log_softmax_matches_torch(hf):
    torch = hf.torch
    x = make_logits(1023, seed=7)
    theirs = torch.log_softmax(torch.from_numpy(x).double(), dim=-1).numpy()
    ours = log_softmax(x)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=LOGPROB_ATOL)


# --------------------------------------------------------------------------------------
# Processors without a transformers twin, on hand-made logits.
# --------------------------------------------------------------------------------------


def test_presence_frequency_hand_made():
    x = np.zeros(6, dtype=np.float32)
    out = apply_presence_frequency_penalty(x, [1, 1, 2, 5, 1], presence=0.5, frequency=0.25)
    expected = -np.array([0, 3 * 0.25 + 0.5, 0.25 + 0.5, 0, 0, 0.25 + 0.5], dtype=np.float32)
    np.testing.assert_allclose(out, expected, rtol=SCORE_RTOL)


def test_process_logits_counts_only_generated_for_presence_frequency():
    x = np.zeros(6, dtype=np.float32)
    params = SamplingParams(presence_penalty=1.0, frequency_penalty=0.5)
    # Prompt [1, 1, 3], generated [3, 4, 4]: token 1 is prompt-only -> untouched.
    out = process_logits(x, params, [1, 1, 3, 3, 4, 4], n_prompt=3)
    np.testing.assert_allclose(out, [0, 0, 0, -1.5, -2.0, 0])


def test_logit_bias_hand_made():
    x = np.arange(4, dtype=np.float32)
    out = apply_logit_bias(x, {0: 5.0, 3: -math.inf, 2: -0.5})
    np.testing.assert_array_equal(out, [5.0, 1.0, 1.5, -np.inf])
    np.testing.assert_array_equal(apply_logit_bias(x, None), x)


def test_min_new_tokens_hand_made():
    x = np.zeros(5, dtype=np.float32)
    assert np.isneginf(apply_min_new_tokens(x, 2, 3, 4)[4])
    assert not np.isneginf(apply_min_new_tokens(x, 3, 3, 4)).any()       # reached
    np.testing.assert_array_equal(np.isneginf(apply_min_new_tokens(x, 0, 1, [1, 4])),
                                  [0, 1, 0, 0, 1])
    assert not np.isneginf(apply_min_new_tokens(x, 0, 5, None)).any()    # no eos known
    params = SamplingParams(min_new_tokens=2, eos_token_id=0)
    assert np.isneginf(process_logits(x, params, [1, 2, 3], n_prompt=2)[0])  # 1 generated
    assert process_logits(x, params, [1, 2, 3, 4], n_prompt=2)[0] == 0.0     # 2 generated


def test_greedy_skips_warpers():
    x = make_logits(65, seed=3)
    params = SamplingParams(do_sample=False, temperature=0.5, top_k=1, top_p=0.1, min_p=0.9)
    np.testing.assert_array_equal(process_logits(x, params, [], 0), x)


def test_greedy_token():
    assert greedy_token(np.array([0.0, 2.0, 2.0, 1.0], dtype=np.float32)) == 1  # first tie
    with pytest.raises(ValueError, match="NaN"):
        greedy_token(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="every token"):         # not token 0, itself banned
        greedy_token(np.full(4, -np.inf, dtype=np.float32))


def test_values_past_float32_are_refused_before_they_overflow():
    with pytest.raises(ValueError, match=r"logit_bias\[5\].*float32"):
        SamplingParams(logit_bias={5: 1e300})
    with pytest.raises(ValueError, match=r"logit_bias\[5\].*float32"):
        SamplingParams(logit_bias={5: -1e300})
    SamplingParams(logit_bias={5: -3e38, 6: float("-inf")})      # -inf: the way to ban
    with pytest.raises(ValueError, match="repetition_penalty"):
        SamplingParams(repetition_penalty=1e300)
    with pytest.raises(ValueError, match="temperature or repetition_penalty"):
        sample_token(np.array([0.0, np.inf], dtype=np.float32), np.random.default_rng(0))


def test_log_softmax_stable_and_masked():
    x = np.array([1e4, 0.0, -1e4, -np.inf], dtype=np.float32)
    lp = log_softmax(x)
    assert np.all(np.isfinite(lp[:3])) and np.isneginf(lp[3])
    assert abs(np.exp(lp).sum() - 1.0) < 1e-12
    with pytest.raises(ValueError):
        log_softmax(np.full(3, -np.inf, dtype=np.float32))


# --------------------------------------------------------------------------------------
# The draw.
# --------------------------------------------------------------------------------------

HAND_LOGITS = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -1.0], dtype=np.float32)  # 6 tokens


@pytest.mark.parametrize("kw,n_kept", [
    (dict(top_k=4), 4),
    (dict(top_p=0.8), 3),
    (dict(top_p=0.9, min_p=0.3), 3),
    (dict(temperature=0.7, top_k=5, top_p=0.95), 4),
    (dict(temperature=2.0, min_p=0.2), 6),
    (dict(), 6),
])
def test_sample_chi_square(kw, n_kept):
    # Every case replays the same u stream (seed 1234), so the statistics are correlated;
    # over many seeds the statistic of the no-filter case averages ~df, as it should.
    params = SamplingParams(do_sample=True, **kw)
    z = process_logits(HAND_LOGITS, params, [], 0)                       # (6,)
    probs = np.exp(log_softmax(z))                                       # filtered softmax
    kept = probs > 0
    assert kept.sum() == n_kept
    n = 20000
    rng = np.random.default_rng(1234)
    draws = np.array([sample_token(z, rng) for _ in range(n)])
    counts = np.bincount(draws, minlength=6)
    assert counts[~kept].sum() == 0, f"filtered tokens drawn: {counts}"
    expected = n * probs[kept]
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    crit = CHI2_CRIT_999[n_kept - 1]
    print(f"{kw}: counts={counts} expected={np.round(expected)} chi2={chi2:.2f} < {crit}")
    assert chi2 < crit
    # The statistic has power: a uniform draw over the same kept tokens is rejected.
    wrong = np.full(n_kept, n / n_kept)
    assert float(((counts[kept] - wrong) ** 2 / wrong).sum()) > crit


def test_top_k_1_sampling_is_greedy():
    for seed in range(20):
        x = make_logits(1023, seed=seed)
        ids = np.random.default_rng(seed).integers(0, 1023, size=10)
        base = dict(repetition_penalty=1.3, presence_penalty=0.3)
        z_greedy = process_logits(x, SamplingParams(**base), ids, 4)
        z_sample = process_logits(
            x, SamplingParams(do_sample=True, temperature=1.7, top_k=1, **base), ids, 4)
        assert np.isfinite(z_sample).sum() == 1
        assert sample_token(z_sample, np.random.default_rng(seed)) == greedy_token(z_greedy)


def _draws(seed, n=200):
    z = make_logits(65, seed=0)
    rng = np.random.default_rng(seed)
    return [sample_token(z, rng) for _ in range(n)]


def test_same_seed_same_draws():
    assert _draws(42) == _draws(42)
    assert _draws(42) != _draws(43)


def test_draws_ignore_global_numpy_state():
    np.random.seed(0)
    a = _draws(7)
    np.random.seed(12345)
    before = np.random.get_state()
    b = _draws(7)
    after = np.random.get_state()
    assert a == b
    # The global state is neither read nor advanced.
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]


class _FixedU(np.random.Generator):
    """A Generator whose random() returns a fixed u (to probe the inverse-CDF edges)."""

    def __init__(self, u):
        super().__init__(np.random.PCG64(0))
        self.u = u

    def random(self, *args, **kwargs):
        return self.u


def test_sample_edges_never_pick_masked_tokens():
    x = np.array([-np.inf, 0.0, 0.0, -np.inf], dtype=np.float32)
    assert sample_token(x, _FixedU(0.0)) == 1                       # not the leading -inf
    assert sample_token(x, _FixedU(np.nextafter(1.0, 0.0))) == 2    # not the trailing -inf
    assert sample_token(x, _FixedU(1.0)) == 2                       # even past the end
    rng = np.random.default_rng(0)
    assert {sample_token(x, rng) for _ in range(500)} == {1, 2}
    one = np.full(7, -np.inf, dtype=np.float32)
    one[4] = -3.0
    assert all(sample_token(one, rng) == 4 for _ in range(50))


@pytest.mark.parametrize("bad_rng", [None, 0, np.random.RandomState(0), np.random])
def test_sample_requires_a_generator(bad_rng):
    with pytest.raises(TypeError, match="rng"):
        sample_token(np.zeros(3, dtype=np.float32), bad_rng)


@pytest.mark.parametrize("bad", [
    np.full(3, -np.inf, dtype=np.float32),
    np.array([0.0, np.nan, 1.0], dtype=np.float32),
    np.array([0.0, np.inf], dtype=np.float32),
])
def test_sample_rejects_degenerate_logits(bad):
    with pytest.raises(ValueError, match="processed_logits"):
        sample_token(bad, np.random.default_rng(0))


# --------------------------------------------------------------------------------------
# Argument validation.
# --------------------------------------------------------------------------------------

X = make_logits(10, seed=9)

BAD_CALLS = [
    (lambda: apply_temperature(X, 0.0), r"`t`.*0\.0.*do_sample=False"),
    (lambda: apply_temperature(X, -1.0), r"`t`.*-1\.0"),
    (lambda: apply_temperature(X, float("nan")), r"`t`.*nan"),
    (lambda: apply_temperature(X, "1"), r"`t`"),
    (lambda: apply_top_k(X, -1), r"`k`.*-1"),
    (lambda: apply_top_k(X, 2.5), r"`k`.*2\.5"),
    (lambda: apply_top_k(X, True), r"`k`.*True"),
    (lambda: apply_top_k(X, 3, min_tokens_to_keep=0), r"`min_tokens_to_keep`.*0"),
    (lambda: apply_top_p(X, 0.0), r"`top_p`.*0\.0"),
    (lambda: apply_top_p(X, 1.5), r"`top_p`.*1\.5"),
    (lambda: apply_top_p(X, 0.5, 0), r"`min_tokens_to_keep`.*0"),
    (lambda: apply_min_p(X, -0.1), r"`min_p`.*-0\.1"),
    (lambda: apply_min_p(X, 1.1), r"`min_p`.*1\.1"),
    (lambda: apply_repetition_penalty(X, [1], 0.0), r"`penalty`.*0\.0"),
    (lambda: apply_repetition_penalty(X, [1], -1.2), r"`penalty`.*-1\.2"),
    (lambda: apply_repetition_penalty(X, [10], 1.2), r"`seen_ids`.*10.*\[0, 10\)"),
    (lambda: apply_repetition_penalty(X, [-1], 1.2), r"`seen_ids`.*-1"),
    (lambda: apply_repetition_penalty(X, [1.0, 2.0], 1.2), r"`seen_ids`.*integer"),
    (lambda: apply_presence_frequency_penalty(X, [1], math.inf, 0.0), r"`presence`.*inf"),
    (lambda: apply_presence_frequency_penalty(X, [1], 0.0, None), r"`frequency`.*None"),
    (lambda: apply_no_repeat_ngram(X, [1, 2], -1), r"`n`.*-1"),
    (lambda: apply_no_repeat_ngram(X, [[1, 2]], 2), r"`ids`.*1-D"),
    (lambda: apply_logit_bias(X, {10: 1.0}), r"`logit_bias`.*10"),
    (lambda: apply_logit_bias(X, {-1: 1.0}), r"`logit_bias`.*-1"),
    (lambda: apply_logit_bias(X, {0: float("nan")}), r"`logit_bias\[0\]`.*nan"),
    (lambda: apply_logit_bias(X, [(0, 1.0)]), r"`logit_bias`.*dict"),
    (lambda: apply_min_new_tokens(X, 0, -1, 3), r"`min_new_tokens`.*-1"),
    (lambda: apply_min_new_tokens(X, -2, 1, 3), r"`n_generated`.*-2"),
    (lambda: apply_min_new_tokens(X, 0, 1, 10), r"`eos_ids`.*10"),
    (lambda: apply_top_k(X.reshape(2, 5)[None], 1), r"`logits`.*shape"),
    (lambda: apply_repetition_penalty(X.reshape(2, 5), [1], 1.2), r"`logits`.*shape"),
    (lambda: apply_top_k(np.zeros(0, dtype=np.float32), 1), r"`logits`.*shape"),
    (lambda: process_logits(X, SamplingParams(), [1, 2], 3), r"`n_prompt`.*3"),
    (lambda: process_logits(X, SamplingParams(), [1, 2], 0, out=np.zeros(9, np.float32)),
     r"`out`"),
    (lambda: process_logits(X, SamplingParams(logit_bias={10: 1.0}), [], 0),
     r"`logit_bias`.*10"),
]


@pytest.mark.parametrize("call,match", BAD_CALLS)
def test_processor_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_type_errors():
    with pytest.raises(TypeError, match="floating"):
        apply_top_k(np.arange(5), 2)
    with pytest.raises(TypeError, match="params"):
        process_logits(X, dict(top_k=1), [], 0)


@pytest.mark.parametrize("kw,match", [
    (dict(do_sample=True, temperature=0.0), r"`temperature`.*0\.0.*do_sample=False"),
    (dict(do_sample=True, temperature=-0.5), r"`temperature`.*-0\.5"),
    (dict(temperature=-1.0), r"`temperature`.*-1\.0"),
    (dict(do_sample="yes"), r"`do_sample`.*yes"),
    (dict(top_k=-3), r"`top_k`.*-3"),
    (dict(top_k=1.5), r"`top_k`.*1\.5"),
    (dict(top_p=0.0), r"`top_p`.*0\.0"),
    (dict(top_p=1.01), r"`top_p`.*1\.01"),
    (dict(min_p=-0.01), r"`min_p`.*-0\.01"),
    (dict(min_p=2), r"`min_p`.*2"),
    (dict(repetition_penalty=0.0), r"`repetition_penalty`.*0\.0"),
    (dict(presence_penalty=float("nan")), r"`presence_penalty`.*nan"),
    (dict(frequency_penalty=float("inf")), r"`frequency_penalty`.*inf"),
    (dict(no_repeat_ngram_size=-1), r"`no_repeat_ngram_size`.*-1"),
    (dict(logit_bias={-5: 1.0}), r"`logit_bias`.*-5"),
    (dict(logit_bias={"a": 1.0}), r"`logit_bias`.*'a'"),
    (dict(min_new_tokens=-1), r"`min_new_tokens`.*-1"),
    (dict(eos_token_id=-1), r"`eos_token_id`.*-1"),
    (dict(eos_token_id="x"), r"`eos_token_id`.*'x'"),
])
def test_sampling_params_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kw)


def test_sampling_params_validate_with_vocab():
    SamplingParams(logit_bias={50256: -100.0}, eos_token_id=50256).validate(50257)
    with pytest.raises(ValueError, match=r"`logit_bias`.*\[0, 50257\).*50257"):
        SamplingParams(logit_bias={50257: 1.0}).validate(50257)
    with pytest.raises(ValueError, match=r"`eos_token_id`.*50257"):
        SamplingParams(eos_token_id=[0, 50257]).validate(50257)
    with pytest.raises(ValueError, match=r"`vocab_size`.*0"):
        SamplingParams().validate(0)
    # Mutated after construction: caught when used.
    p = SamplingParams(do_sample=True)
    p.top_p = 0.0
    with pytest.raises(ValueError, match="top_p"):
        process_logits(X, p, [], 0)


# --------------------------------------------------------------------------------------
# Purity, neutral values, shapes and dtypes.
# --------------------------------------------------------------------------------------

IDS = [1, 2, 3, 1, 2, 5, 1]

PROCESSORS_1D = {
    "repetition": lambda x: apply_repetition_penalty(x, IDS, 1.3),
    "presence_frequency": lambda x: apply_presence_frequency_penalty(x, IDS, 0.4, 0.2),
    "no_repeat_ngram": lambda x: apply_no_repeat_ngram(x, IDS, 2),
    "logit_bias": lambda x: apply_logit_bias(x, {0: 1.0, 4: -math.inf}),
    "min_new_tokens": lambda x: apply_min_new_tokens(x, 0, 3, [2, 9]),
    "temperature": lambda x: apply_temperature(x, 0.6),
    "top_k": lambda x: apply_top_k(x, 3),
    "top_p": lambda x: apply_top_p(x, 0.5),
    "min_p": lambda x: apply_min_p(x, 0.2),
    "process_logits": lambda x: process_logits(
        x, SamplingParams(do_sample=True, temperature=0.8, top_k=6, top_p=0.9, min_p=0.05,
                          repetition_penalty=1.2, presence_penalty=0.1,
                          no_repeat_ngram_size=2, logit_bias={3: 2.0},
                          min_new_tokens=4, eos_token_id=9), IDS, 3),
    "log_softmax": log_softmax,
}

NEUTRAL_1D = {
    "repetition": lambda x: apply_repetition_penalty(x, IDS, 1.0),
    "presence_frequency": lambda x: apply_presence_frequency_penalty(x, IDS, 0.0, 0.0),
    "no_repeat_ngram": lambda x: apply_no_repeat_ngram(x, IDS, 0),
    "logit_bias": lambda x: apply_logit_bias(x, {}),
    "min_new_tokens": lambda x: apply_min_new_tokens(x, 0, 0, 2),
    "temperature": lambda x: apply_temperature(x, 1.0),
    "top_k": lambda x: apply_top_k(x, 0),
    "top_p": lambda x: apply_top_p(x, 1.0),
    "min_p": lambda x: apply_min_p(x, 0.0),
    "process_logits": lambda x: process_logits(x, SamplingParams(do_sample=True), IDS, 3),
}


@pytest.mark.parametrize("name", sorted(PROCESSORS_1D))
def test_processors_never_mutate_input(name):
    x = make_logits(10, seed=11)
    x.flags.writeable = False                       # any in-place write would raise
    saved = x.copy()
    out = PROCESSORS_1D[name](x)
    np.testing.assert_array_equal(x, saved)
    assert not np.shares_memory(out, x)
    assert not np.array_equal(out, saved), "the case should change something"


@pytest.mark.parametrize("name", sorted(NEUTRAL_1D))
def test_neutral_values_return_unchanged_copy(name):
    x = make_logits(10, seed=12)
    out = NEUTRAL_1D[name](x)
    assert out is not x and not np.shares_memory(out, x)
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("name", sorted(set(PROCESSORS_1D) - {"log_softmax"}))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(name, dtype):
    x = make_logits(10, seed=13).astype(dtype)
    assert PROCESSORS_1D[name](x).dtype == dtype


def test_process_logits_out():
    x = make_logits(65, seed=14)
    params = SamplingParams(do_sample=True, temperature=0.9, top_p=0.8, repetition_penalty=1.1)
    ref = process_logits(x, params, IDS, 2)
    buf = np.empty_like(x)
    saved = x.copy()
    assert process_logits(x, params, IDS, 2, out=buf) is buf
    np.testing.assert_array_equal(buf, ref)
    np.testing.assert_array_equal(x, saved)
    # out=logits is the explicit in-place form.
    assert process_logits(x, params, IDS, 2, out=x) is x
    np.testing.assert_array_equal(x, ref)


BATCHED = {
    "temperature": lambda x: apply_temperature(x, 0.6),
    "top_k": lambda x: apply_top_k(x, 3),
    "top_k_ties": lambda x: apply_top_k(np.round(x), 2),
    "top_p": lambda x: apply_top_p(x, 0.7, 2),
    "min_p": lambda x: apply_min_p(x, 0.1, 3),
    "logit_bias": lambda x: apply_logit_bias(x, {0: 1.0, 5: -2.0}),
    "min_new_tokens": lambda x: apply_min_new_tokens(x, 1, 3, [4]),
    "log_softmax": log_softmax,
}


@pytest.mark.parametrize("name", sorted(BATCHED))
def test_batched_rows_equal_1d(name):
    x = np.stack([make_logits(63, seed=s) for s in range(4)])       # (4, 63)
    x.flags.writeable = False
    out = BATCHED[name](x)
    assert out.shape == x.shape
    for i in range(x.shape[0]):
        np.testing.assert_array_equal(out[i], BATCHED[name](x[i]))
