"""Beam search against transformers' own (random checkpoints, both backends), and the
KV-cache row reorder it relies on.

Sequences must be identical to transformers' for every rule (length penalty, the three
early-stopping modes, EOS ids that really end beams, n-gram ban, repetition penalty, minimum
length, left-padded batches); scores agree to float32 rounding.
"""

import warnings

import numpy as np
import pytest

from fastgpt import Generator, Model
from fastgpt.compat.transformers import GPT2LMHeadModel
from fastgpt.config import GPT2Config
from fastgpt.kv_cache import CacheError, KVCache

torch = pytest.importorskip("torch", reason="transformers is the oracle")
pytest.importorskip("transformers", reason="transformers is the oracle")

IDS = [[5, 17, 3, 99, 250, 1], [7, 7, 8, 400, 12, 6]]
# Sequence scores: summed float32 log-probabilities over up to ~20 steps.
SCORE_ATOL = 1e-4


@pytest.fixture(scope="module")
def small(hf_checkpoint):
    return hf_checkpoint("small")


def hf_beams(hf_model, ids, mask=None, **kwargs):
    ids = torch.as_tensor(np.asarray(ids))
    mask = torch.ones_like(ids) if mask is None else torch.as_tensor(np.asarray(mask))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf_model.generate(ids, attention_mask=mask, pad_token_id=0, return_dict_in_generate=True,
                                 output_scores=True, **kwargs)


def eos_ids_that_end_beams(hf_model, n):
    """Tokens from the middle of transformers' free-running beams: as EOS they end some beams."""
    free = hf_beams(hf_model, IDS, num_beams=4, max_new_tokens=10).sequences.numpy()
    return [int(free[0, 8]), int(free[1, 10])][:n]


CASES = {
    "plain": dict(num_beams=4, max_new_tokens=10),
    "three-returned": dict(num_beams=3, max_new_tokens=12, length_penalty=0.5, num_return_sequences=3),
    "early-stopping": dict(num_beams=5, max_new_tokens=15, early_stopping=True, num_return_sequences=2, eos=1),
    "heuristic": dict(num_beams=4, max_new_tokens=15, eos=2, num_return_sequences=4),
    "never": dict(num_beams=4, max_new_tokens=15, early_stopping="never", length_penalty=2.0, eos=2,
                  no_repeat_ngram_size=2),
    "negative-penalty": dict(num_beams=3, max_new_tokens=12, length_penalty=-1.0, eos=1),
    "penalties": dict(num_beams=2, max_new_tokens=8, repetition_penalty=1.3, eos=1, min_new_tokens=4),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sequences_identical_to_transformers(small, backend, name):
    folder, hf_model = small
    kwargs = dict(CASES[name])
    n_eos = kwargs.pop("eos", 0)
    if n_eos:
        kwargs["eos_token_id"] = eos_ids_that_end_beams(hf_model, n_eos)
    want = hf_beams(hf_model, IDS, **kwargs)
    model = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    got = model.generate(torch.tensor(IDS), pad_token_id=0, return_dict_in_generate=True, output_scores=True,
                         **kwargs)
    print(f"ours   {got.sequences.tolist()}\ntheirs {want.sequences.tolist()}")
    assert torch.equal(got.sequences, want.sequences)
    assert torch.equal(got.beam_indices, want.beam_indices)
    diff = (got.sequences_scores - want.sequences_scores).abs().max().item()
    print(f"sequence scores {got.sequences_scores.tolist()} max diff {diff:.2e}")
    assert diff < SCORE_ATOL
    assert len(got.scores) == len(want.scores)
    for a, b in zip(got.scores, want.scores):               # -inf where a processor banned a token
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=SCORE_ATOL)
    if n_eos:
        ended = [row for row in got.sequences.tolist() if set(row[6:]) & set(kwargs["eos_token_id"])]
        assert ended, "the EOS ids were meant to end some beams"


def test_left_padded_batch_and_plain_generator(small, backend):
    folder, hf_model = small
    ids = np.array([[0, 0, 0, 5, 17, 3], [7, 7, 8, 400, 12, 6]])
    mask = np.array([[0, 0, 0, 1, 1, 1], [1] * 6])
    want = hf_beams(hf_model, ids, mask, num_beams=3, max_new_tokens=9, num_return_sequences=2).sequences.numpy()
    model = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    got = model.generate(ids, attention_mask=mask, num_beams=3, max_new_tokens=9, num_return_sequences=2,
                         pad_token_id=0)
    np.testing.assert_array_equal(got, want)
    # fastgpt's own Generator: the same best beams as new-token lists, grouped by prompt.
    gen = Generator(Model.from_pretrained(folder, backend=backend))
    ids_only = gen.generate_ids([[5, 17, 3], IDS[1]], max_new_tokens=9, num_beams=3, num_return_sequences=2)
    assert ids_only == [row[6:].tolist() for row in want]
    results = gen.generate_ids([[5, 17, 3]], max_new_tokens=9, num_beams=3, return_result=True)
    assert results[0].score is not None and results[0].finish_reason == "length"


def test_prefix_is_never_recomputed(small):
    """Each prompt runs once; after it, every step feeds exactly one token per beam."""
    folder, _ = small
    model = Model.from_pretrained(folder, backend="numpy")
    shapes = []
    forward = model.forward

    def spy(ids, *args, **kwargs):
        shapes.append(np.shape(ids))
        return forward(ids, *args, **kwargs)

    model.forward = spy
    Generator(model).generate_ids(IDS, max_new_tokens=7, num_beams=4, eos_token_id=[])
    assert shapes[0] == (2, 6) and set(shapes[1:]) == {(8, 1)} and len(shapes) == 7, shapes


def test_beam_options_are_checked(small):
    gen = Generator(Model.from_pretrained(small[0], backend="numpy"))
    for bad, match in ((dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
                       (dict(num_beams=0), "num_beams"), (dict(num_beams=2, early_stopping="sometimes"), "early_stopping"),
                       (dict(num_beams=2, length_penalty=float("nan")), "length_penalty"),
                       (dict(num_beams=2, stop="x"), "stop")):
        with pytest.raises(ValueError, match=match):
            gen.generate_ids(IDS, max_new_tokens=3, **bad)
    with pytest.raises(ValueError, match="beam"):
        next(gen.iter_ids(IDS[0], max_new_tokens=3, num_beams=2))


def test_beam_search_refuses_what_it_cannot_do(small, monkeypatch):
    from fastgpt import memory
    model = Model.from_pretrained(small[0], backend="numpy")
    gen = Generator(model)
    with pytest.raises(ValueError, match="max_new_tokens"):            # as transformers
        gen.generate_ids(IDS[0], max_new_tokens=0, num_beams=2)
    banned = dict.fromkeys(range(model.config.vocab_size), float("-inf"))
    with pytest.raises(ValueError, match="-inf"):
        gen.generate_ids(IDS[0], max_new_tokens=3, num_beams=2, logit_bias=banned)
    # the per-step scores (prompts x beams x vocab) are counted before anything is allocated
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 30)
    beams = (2 << 30) // (32 * model.config.vocab_size)              # ~2 GB of scores
    with pytest.raises(memory.MemoryLimitError, match=f"num_beams={beams}"):
        gen.generate_ids(IDS[0], max_new_tokens=3, num_beams=beams)


def test_beam_sampling_when_the_filters_leave_fewer_tokens_than_candidates(small):
    model = Model.from_pretrained(small[0], backend="numpy")
    gen = Generator(model)
    # top_k=2 over 4 beams (8 candidates wanted, 2 alive at the first step): transformers runs it
    kwargs = dict(max_new_tokens=3, num_beams=4, do_sample=True, top_k=2, seed=3)
    out = gen.generate_ids(IDS[0], **kwargs)
    assert out == gen.generate_ids(IDS[0], **kwargs) and len(out) == 3
    top2 = np.argsort(-model.forward(IDS[0])[-1])[:2]
    assert out[0] in top2
    assert len(gen.generate_ids(IDS[0], max_new_tokens=3, num_beams=2, do_sample=True, top_p=1e-4, seed=0)) == 3


def test_beam_sampling_runs_and_repeats(small):
    folder, _ = small
    model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")
    kwargs = dict(num_beams=3, do_sample=True, max_new_tokens=8, num_return_sequences=2, top_k=20)
    torch.manual_seed(1)
    a = model.generate(torch.tensor(IDS), **kwargs)
    torch.manual_seed(1)
    b = model.generate(torch.tensor(IDS), **kwargs)
    assert a.shape == (4, 14) and torch.equal(a, b)


# --------------------------------------------------------------------------------------
# KVCache.reorder
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("indices", [[0, 1, 2, 3, 4], [1, 2, 3, 4, 0], [0, 0, 0, 2, 2], [4, 3, 2, 1, 0],
                                     [1, 0, 3, 2, 2], [3, 3, 1, 0, 4]])
def test_reorder_gathers_rows_in_place(indices):
    config = GPT2Config(n_layer=2, n_embd=8, n_head=2, vocab_size=10, n_positions=8)
    cache = KVCache(config, batch_size=5, max_len=8)
    rng = np.random.default_rng(0)
    cache.k[:] = rng.standard_normal(cache.k.shape)
    cache.v[:] = rng.standard_normal(cache.v.shape)
    cache.start[:] = [0, 1, 2, 0, 1]
    cache.pos = 6
    k, v, start = cache.k.copy(), cache.v.copy(), cache.start.copy()
    k_buffer = cache.k
    cache.reorder(indices)
    assert cache.k is k_buffer
    np.testing.assert_array_equal(cache.k[:, :, :, :6], k[:, indices, :, :6])
    np.testing.assert_array_equal(cache.v[:, :, :, :6], v[:, indices, :, :6])
    np.testing.assert_array_equal(cache.start, start[indices])
    for bad in ([0, 1], [0, 1, 2, 3, 5], [0.0, 1, 2, 3, 4]):
        with pytest.raises(CacheError, match="reorder"):
            cache.reorder(np.array(bad))
