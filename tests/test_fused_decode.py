"""The fused decode step (kernels/_decode.pyx, csrc/decode.c): one call per token, or per short
prompt.

Its contract is to be bitwise the op-by-op path of the same backend (same row kernels on the
same bands), so most tests run both and compare every bit of the logits and of the KV cache.
The op-by-op path is itself checked against the NumPy reference and transformers elsewhere.
"""

import gc
import weakref

import numpy as np
import pytest

from fastgpt import GPT2Config, Model
from fastgpt.backend import kernels_available
from fastgpt.cython_backend import SKINNY_MAX_ROWS
from fastgpt.generate import Generator
from fastgpt.quant import DTYPES
from fastgpt.weights import random_weights

pytestmark = pytest.mark.skipif(not kernels_available(), reason="needs the compiled kernels")

SMALL = GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4)


def decode(model, ids, steps, fuse, pad=None, max_len=40):
    """Prefill ids (B, T), then `steps` greedy steps; returns the logits of every step and the cache."""
    model.backend.fuse_decode = fuse
    cache = model.new_cache(batch_size=ids.shape[0], max_len=min(max_len, model.config.n_positions))
    if pad is not None:
        cache.set_left_padding(pad)
    logits = [model.forward(ids, cache=cache, last_only=True).copy()]
    for _ in range(steps):
        token = np.argmax(logits[-1], axis=-1).reshape(-1, 1)
        logits.append(model.forward(token, cache=cache, last_only=True).copy())
    return np.array(logits), cache


def count_fused_steps(model):
    """Make model's backend record the tokens of every step it fuses; returns the record (a list)."""
    fused, decoder = [], model.backend.decoder

    def counting(*args):
        found = decoder(*args)
        fused.extend([args[-1]] if found is not None else [])
        return found

    model.backend.decoder = counting
    return fused


def assert_fused_matches_op_by_op(model, ids, steps=5, pad=None, max_len=40):
    fused_steps = count_fused_steps(model)
    fused, cache_f = decode(model, ids, steps, True, pad, max_len)
    prompt_fuses = ids.size <= SKINNY_MAX_ROWS
    assert fused_steps == [ids.size] * prompt_fuses + [ids.shape[0]] * steps, "the fused step did not run"
    plain, cache_p = decode(model, ids, steps, False, pad, max_len)
    assert np.array_equal(fused, plain), f"logits differ by up to {np.abs(fused - plain).max()}"
    assert np.array_equal(cache_f.k, cache_p.k) and np.array_equal(cache_f.v, cache_p.v)
    assert cache_f.pos == cache_p.pos == ids.shape[1] + steps


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_step_is_bitwise_the_op_by_op_path(dtype, batch, threads):
    model = Model.random(SMALL, seed=1, backend="cython", num_threads=threads, dtype=dtype)
    ids = np.random.default_rng(batch).integers(0, SMALL.vocab_size, (batch, 6))
    pad = [(3 * b) % 5 for b in range(batch)]  # left padding: rows start at different slots
    assert_fused_matches_op_by_op(model, ids, pad=pad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_fuses_up_to_64_rows(dtype):
    ids = np.random.default_rng(0).integers(0, SMALL.vocab_size, (65, 3))
    model = Model.random(SMALL, seed=2, backend="cython", num_threads=2, dtype=dtype)
    assert_fused_matches_op_by_op(model, ids[:64], steps=2)
    model.backend.fuse_decode = True
    cache = model.new_cache(batch_size=65, max_len=8)
    ws = cache.workspace(65)
    # 65 rows: the linears switch to the GEMMs, so the step runs op by op; 64 of the 65 fuse
    assert model.backend.decoder(model.weights, model.config, cache, ws, 65) is None
    assert model.backend.decoder(model.weights, model.config, cache, ws, 64) is not None


@pytest.mark.parametrize("shape", [(1, 2), (1, 62), (4, 16), (2, 31)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_short_prompts_run_as_one_call_bitwise_the_op_by_op_path(dtype, shape):
    # up to SKINNY_MAX_ROWS tokens a prompt is one fused call (the first token's latency); its
    # tokens attend to each other through keys stored in the same call
    model = Model.random(SMALL, seed=4, backend="cython", num_threads=2, dtype=dtype)
    ids = np.random.default_rng(shape[1]).integers(0, SMALL.vocab_size, shape)
    assert_fused_matches_op_by_op(model, ids, steps=2, max_len=ids.shape[1] + 2)


def test_prompt_chunks_and_decode_rows_share_one_step():
    # what a server's step does: decode rows and another row's prompt chunk in one call
    from fastgpt.kernels import _decode

    model = Model.random(SMALL, seed=6, backend="cython", num_threads=2, dtype="int8")
    ids = np.random.default_rng(0).integers(0, SMALL.vocab_size, (3, 8))
    ref = model.new_cache(batch_size=3, max_len=16)
    model.backend.fuse_decode = False
    model.forward(ids[:2, :5], cache=ref, rows=[0, 1])
    want_decode = model.forward(ids[:2, 5:6], cache=ref, rows=[0, 1], last_only=True).copy()
    want_prompt = model.forward(ids[2:, :7], cache=ref, rows=[2], last_only=True).copy()
    model.backend.fuse_decode = True
    cache = model.new_cache(batch_size=3, max_len=16)
    model.forward(ids[:2, :5], cache=cache, rows=[0, 1])
    tokens = np.concatenate([ids[2, :3], ids[:2, 5], ids[2, 3:7]])   # row 2 split around rows 0 and 1
    rows = np.array([2, 2, 2, 0, 1, 2, 2, 2, 2])
    slots = np.array([0, 1, 2, 5, 5, 3, 4, 5, 6])
    ws = cache.workspace(len(tokens))
    model._token_embeddings(tokens, out=ws.x[:9])
    ws.x[:9] += model.weights.wpe[slots]
    decoder = _decode.Decoder(model.weights, SMALL, cache.k, cache.v, cache.start, ws, 2)
    got = decoder.step(rows, slots, np.array([3, 4, 8]))
    np.testing.assert_array_equal(got[:2], want_decode)
    np.testing.assert_array_equal(got[2:], want_prompt)
    for r, n in ((0, 6), (1, 6), (2, 7)):
        assert np.array_equal(cache.k[:, r, :, :n], ref.k[:, r, :, :n]), f"row {r}'s keys"


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_at_different_lengths_decode_in_one_step(dtype):
    """A server's cache: rows reset and refilled on their own, decoded together (some of them)."""
    rng = np.random.default_rng(11)
    runs = {}
    for fuse in (True, False):
        model = Model.random(SMALL, seed=3, backend="cython", num_threads=2, dtype=dtype)
        model.backend.fuse_decode = fuse
        fused_steps = count_fused_steps(model)
        cache = model.new_cache(batch_size=4, max_len=24)
        rng = np.random.default_rng(11)
        for row, length in enumerate((5, 1, 9)):          # row 3 stays empty
            model.forward(rng.integers(0, SMALL.vocab_size, (1, length)), cache=cache, rows=[row])
        steps = []
        for rows in ([0, 1, 2], [2, 0], [1], [0, 1, 2]):
            token = rng.integers(0, SMALL.vocab_size, (len(rows), 1))
            steps.append(model.forward(token, cache=cache, rows=rows, last_only=True).copy())
        runs[fuse] = (steps, cache, len(fused_steps))
    (fused, cache_f, n_fused), (plain, cache_p, _) = runs[True], runs[False]
    assert n_fused == 4
    for got, want in zip(fused, plain):
        assert np.array_equal(got, want), f"logits differ by up to {np.abs(got - want).max()}"
    assert np.array_equal(cache_f.k, cache_p.k) and np.array_equal(cache_f.v, cache_p.v)
    assert cache_f.lengths.tolist() == [8, 4, 12, 0]


def test_a_row_decoded_among_others_is_bitwise_the_row_alone():
    """Rows of a batch at different lengths each give what they give in a batch of one."""
    model = Model.random(SMALL, seed=12, backend="cython", num_threads=2, dtype="int8")
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    together = model.new_cache(batch_size=3, max_len=20)
    for row, prompt in enumerate(prompts):
        model.forward([prompt], cache=together, rows=[row])
    tokens = np.array([[40], [41], [42]])
    batched = model.forward(tokens, cache=together, last_only=True).copy()
    for row, prompt in enumerate(prompts):
        alone = model.new_cache(max_len=20)
        model.forward([prompt], cache=alone)
        single = model.forward(tokens[row:row + 1], cache=alone, last_only=True)
        assert np.array_equal(batched[row], single[0]), f"row {row} differs by {np.abs(batched[row] - single[0]).max()}"


@pytest.mark.parametrize("activation", ["gelu_new", "gelu", "relu", "silu", "quick_gelu"])
def test_every_activation_and_odd_widths(activation):
    # n_embd 96 / d_ff 200: bands that end inside a SIMD vector (the activation's masked tail)
    cfg = GPT2Config(vocab_size=257, n_positions=32, n_embd=96, n_layer=2, n_head=3, n_inner=200,
                     activation_function=activation)
    for dtype in ("float32", "float16"):
        model = Model.random(cfg, seed=4, backend="cython", num_threads=3, dtype=dtype)
        assert_fused_matches_op_by_op(model, np.arange(10).reshape(2, 5) * 7)


def test_no_biases_untied_head_and_no_layers():
    weights = random_weights(SMALL, seed=5)
    for blk in weights.blocks:
        blk.attn_qkv_b = blk.mlp_proj_b = None
    weights.lm_head = weights.wte.copy() * np.float32(1.5)
    assert_fused_matches_op_by_op(Model(SMALL, weights, backend="cython", num_threads=2), np.arange(4)[None])
    empty = GPT2Config(vocab_size=100, n_positions=16, n_embd=32, n_layer=0, n_head=2)
    assert_fused_matches_op_by_op(Model.random(empty, backend="cython", num_threads=2, dtype="int8"),
                                  np.arange(3)[None])


def test_generator_runs_the_fused_step_and_matches_op_by_op():
    model = Model.random(SMALL, seed=6, backend="cython", num_threads=2, dtype="bfloat16")
    prompts = [[5, 6, 7], [9], [1, 2, 3, 4, 5]]
    fused_steps = count_fused_steps(model)
    fused = Generator(model).generate_ids(prompts, 12)
    assert len(fused_steps) >= 11
    model.backend.fuse_decode = False
    assert Generator(model).generate_ids(prompts, 12) == fused


def test_decoder_follows_a_grown_workspace_and_lets_caches_go():
    model = Model.random(SMALL, seed=7, backend="cython", num_threads=2)
    reference = Model.random(SMALL, seed=7, backend="numpy")
    cache, ref_cache = model.new_cache(max_len=40), reference.new_cache(max_len=40)
    for chunk in ([1, 2], [3], list(range(4, 20)), [20]):  # the 16-token chunk grows the workspace
        got = model.forward(chunk, cache=cache, last_only=True).copy()
        want = reference.forward(chunk, cache=ref_cache, last_only=True)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    alive = weakref.ref(cache)
    del cache
    gc.collect()
    assert alive() is None, "the backend keeps a finished cache alive"


@pytest.mark.parametrize("level", [0, 1])
def test_fallback_simd_levels_agree_with_the_reference(level):
    from fastgpt.kernels import _decode

    cfg = GPT2Config(vocab_size=200, n_positions=32, n_embd=64, n_layer=2, n_head=4)
    for dtype in DTYPES:
        model = Model.random(cfg, seed=8, backend="numpy", dtype=dtype)
        cache = model.new_cache(batch_size=2, max_len=16)
        model.forward(np.arange(8).reshape(2, 4), cache=cache, last_only=True)
        snapshot = (cache.k.copy(), cache.v.copy(), cache.pos)
        token = np.array([[3], [4]])
        want = model.forward(token, cache=cache, last_only=True).copy()

        cache.k[...], cache.v[...], cache.pos = snapshot
        rows, slots = np.arange(2), cache.lengths.copy()
        ws = cache.workspace(2)
        model._embed(token, cache, rows, slots, ws)
        decoder = _decode.Decoder(model.weights, cfg, cache.k, cache.v, cache.start, ws, 2, max_level=level)
        got = decoder.step(rows, slots)
        # float32 x at these levels: the spec is linear_ref, up to summation order
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5, err_msg=dtype)


def test_bad_input_raises_before_the_kernel():
    from fastgpt.kernels import _decode

    model = Model.random(SMALL, seed=9, backend="cython", num_threads=2)
    cache = model.new_cache(batch_size=2, max_len=8)
    ws = cache.workspace(4)     # room for 4 tokens, logits for 2 (the cache's rows)
    args = (model.weights, SMALL, cache.k, cache.v, cache.start, ws, 2)
    decoder = _decode.Decoder(*args)
    rows = np.arange(2)
    with pytest.raises(ValueError, match="slot 8"):
        decoder.step(rows, np.array([0, 8]))
    with pytest.raises(ValueError, match="slot -1"):
        decoder.step(rows, np.array([-1, 0]))
    # two tokens of one row: only at consecutive slots (a prompt), never the same slot twice
    with pytest.raises(ValueError, match="slot 0 of row 0 does not follow"):
        decoder.step(np.array([0, 0]), np.array([0, 0]))
    with pytest.raises(ValueError, match="slot 3 of row 1 does not follow"):
        decoder.step(np.array([1, 0, 1]), np.array([1, 0, 3]), np.array([2]))
    with pytest.raises(ValueError, match=r"rows\[0\]=2 is not a row"):
        decoder.step(np.array([2]), np.array([0]))
    with pytest.raises(ValueError, match="1 to 4 tokens"):
        decoder.step(np.zeros(5, np.int64), np.arange(5))
    with pytest.raises(ValueError, match="1 to 4 tokens"):
        decoder.step(rows, np.zeros(1, np.int64))
    with pytest.raises(ValueError, match=r"logit_items\[0\]=2 is not one of the step's 2 tokens"):
        decoder.step(rows, np.zeros(2, np.int64), np.array([2]))
    with pytest.raises(ValueError, match="at most 2 tokens"):
        decoder.step(np.zeros(3, np.int64), np.arange(3))
    cache.start[1] = 99  # corrupted after the decoder was built: checked at every step
    with pytest.raises(ValueError, match=r"start\[1\]=99"):
        decoder.step(rows, np.zeros(2, np.int64))
    cache.start[1] = 0
    with pytest.raises(ValueError, match="k_cache"):
        _decode.Decoder(model.weights, SMALL, cache.k[:, :1], cache.v, cache.start, ws, 2)
    with pytest.raises(ValueError, match="v_cache"):
        _decode.Decoder(model.weights, SMALL, cache.k, cache.v.astype(np.float64), cache.start, ws, 2)
    blk = model.weights.blocks[1]
    saved = blk.mlp_fc_w
    blk.mlp_fc_w = saved[:, :-1].copy()
    with pytest.raises(ValueError, match="blocks.1.mlp_fc_w"):
        _decode.Decoder(*args)
    blk.mlp_fc_w = saved
    saved = blk.ln_2_g
    blk.ln_2_g = saved[:-1]
    with pytest.raises(ValueError, match="blocks.1.ln_2_g"):
        _decode.Decoder(*args)
    blk.ln_2_g = saved
    small_ws = model.new_cache(batch_size=1).workspace(1)
    with pytest.raises(ValueError, match="workspace"):
        _decode.Decoder(model.weights, SMALL, cache.k, cache.v, cache.start, small_ws, 2)
    with pytest.raises(ValueError, match="n_threads"):
        _decode.Decoder(model.weights, SMALL, cache.k, cache.v, cache.start, ws, 0)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_forward_rows_gives_each_row_what_it_gets_alone(backend):
    model = Model.random(SMALL, seed=8, backend=backend, num_threads=2, dtype="int8")
    rng = np.random.default_rng(1)
    started = [rng.integers(0, SMALL.vocab_size, n) for n in (4, 0, 9)]     # rows 0-2 before the step
    step = [rng.integers(0, SMALL.vocab_size, n) for n in (1, 20, 1)]       # a decode, a prompt, a decode

    def prefilled(cache):
        for r, ids in enumerate(started):
            if ids.size:
                model.forward(ids, cache=cache, rows=[r])
        return cache

    alone = prefilled(model.new_cache(batch_size=3, max_len=32))
    want = [model.forward(ids, cache=alone, rows=[r], last_only=True).copy() for r, ids in enumerate(step)]
    cache = prefilled(model.new_cache(batch_size=3, max_len=32))
    fused_steps = count_fused_steps(model)
    got = model.forward_rows(step, cache, [0, 1, 2], logit_rows=[2, 0])
    assert fused_steps == ([22] if backend == "cython" else [])
    np.testing.assert_array_equal(got, np.stack([want[2], want[0]]))
    assert cache.lengths.tolist() == alone.lengths.tolist() == [5, 20, 10]
    assert np.array_equal(cache.k, alone.k) and np.array_equal(cache.v, alone.v)


def test_forward_rows_checks_its_arguments():
    model = Model.random(SMALL, seed=8, backend="cython", num_threads=2)
    cache = model.new_cache(batch_size=2, max_len=8)
    with pytest.raises(ValueError, match="a list of 2 token sequences"):
        model.forward_rows(np.zeros((2, 1), np.int64), cache, [0, 1])
    with pytest.raises(ValueError, match=r"ids\[1\] must be a 1-d sequence"):
        model.forward_rows([[1], [[2]]], cache, [0, 1])
    with pytest.raises(ValueError, match="token id 300"):
        model.forward_rows([[1], [300]], cache, [0, 1])
    with pytest.raises(ValueError, match="9 new tokens do not fit in row 1"):
        model.forward_rows([[1], list(range(9))], cache, [0, 1])
    with pytest.raises(ValueError, match="logit_rows must be indices into the 2 rows"):
        model.forward_rows([[1], [2]], cache, [0, 1], logit_rows=[2])
    with pytest.raises(ValueError, match="distinct"):
        model.forward_rows([[1], [2]], cache, [1, 1])
    assert cache.lengths.tolist() == [0, 0]          # nothing ran
