"""Model.forward_full and the KV cache's exchange with per-layer arrays, on fastgpt's own terms.

The transformers-facing behaviour is checked against transformers in
test_compat_transformers_forward.py; here: forward_full agrees with forward, the kernels' path
(left padding) agrees with the NumPy reference path it hands other masks to, the outputs have
the documented shapes, and bad arguments are refused naming the argument. Both backends.
"""

import numpy as np
import pytest

from fastgpt import Model
from fastgpt.config import GPT2Config
from fastgpt.kv_cache import CacheError, KVCache
from fastgpt.model import TokenIdError

CONFIG = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=97, n_positions=24)
IDS = np.array([[5, 17, 3, 91, 25, 1], [7, 7, 8, 40, 12, 6]])
# The same fp32 computation, summed in another order (kernels vs NumPy's BLAS calls).
ATOL = 1e-5


@pytest.fixture
def model(backend):
    return Model.random(CONFIG, seed=3, backend=backend)


def test_agrees_with_forward(model):
    out = model.forward_full(IDS, output_hidden_states=True)
    np.testing.assert_allclose(out.logits, model.forward(IDS), rtol=0, atol=ATOL)
    assert out.last_hidden_state.shape == (2, 6, 32) and len(out.hidden_states) == 3
    body = model.forward_full(IDS, compute_logits=False)
    assert body.logits is None and np.array_equal(body.last_hidden_state, out.last_hidden_state)
    embeds = model.token_embeddings(IDS)
    np.testing.assert_allclose(model.forward_full(inputs_embeds=embeds).logits, out.logits, rtol=0, atol=ATOL)
    # hidden_states[0] is the embedding: token rows plus position rows
    np.testing.assert_allclose(out.hidden_states[0], embeds + model.weights.wpe[:6], rtol=0, atol=1e-7)


def test_left_padding_on_the_kernels_equals_the_reference(model):
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = np.broadcast_to(np.arange(6), (2, 6))
    fast = model.forward_full(IDS, attention_mask=mask, position_ids=positions)
    reference = model.forward_full(IDS, attention_mask=mask, position_ids=positions, head_mask=np.ones(4),
                                   output_attentions=True)                 # both force the reference
    real = mask.astype(bool)
    np.testing.assert_allclose(fast.logits[real], reference.logits[real], rtol=0, atol=ATOL)
    probs = reference.attentions[0]                                        # (B, H, T, S)
    assert probs.shape == (2, 4, 6, 6)
    sums = probs.sum(axis=-1).transpose(0, 2, 1)                           # (B, T, H)
    np.testing.assert_allclose(sums[real], 1, rtol=0, atol=1e-6)          # every real query's softmax
    assert (probs[0, :, 2:, :2] == 0).all()                               # padding slots are never seen
    assert (np.triu(probs[1, 0], 1) == 0).all()                           # nor later slots


def test_incremental_with_a_mask_and_the_cache_exchange(model):
    full = model.forward(IDS)
    cache = model.new_cache(batch_size=2)
    model.forward_full(IDS[:, :4], cache, attention_mask=np.ones((2, 4), int))
    out = model.forward_full(IDS[:, 4:], cache, attention_mask=np.ones((2, 6), int))
    np.testing.assert_allclose(out.logits, full[:, 4:], rtol=0, atol=ATOL)
    layers = cache.to_layers()
    assert len(layers) == 2 and layers[0][0].shape == (2, 4, 6, 8)
    copy = KVCache.from_layers(CONFIG, [(k[:, :, :5], v[:, :, :5]) for k, v in layers], max_len=8)
    assert copy.lengths.tolist() == [5, 5] and copy.max_len == 8
    np.testing.assert_allclose(model.forward(IDS[:, 5:], cache=copy), full[:, 5:], rtol=0, atol=ATOL)


def test_bad_arguments_name_themselves(model):
    cases = [
        (dict(ids=IDS, inputs_embeds=np.zeros((2, 6, 32))), ValueError, "exactly one"),
        (dict(ids=IDS[0]), TokenIdError, "batch, seq"),
        (dict(inputs_embeds=np.zeros((2, 6, 31))), ValueError, "inputs_embeds"),
        (dict(inputs_embeds=np.full((1, 2, 32), np.nan)), ValueError, "NaN"),
        (dict(ids=IDS, position_ids=np.full((2, 6), 24)), ValueError, "position_ids"),
        (dict(ids=IDS, position_ids=np.zeros((3, 6), int)), ValueError, "position_ids"),
        (dict(ids=IDS, attention_mask=np.ones((2, 5), int)), ValueError, "attention_mask"),
        (dict(ids=IDS, attention_mask=np.full((2, 6), 2)), ValueError, "0/1"),
        (dict(ids=IDS, head_mask=np.ones(3)), ValueError, "head_mask"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            model.forward_full(**kwargs)
    uneven = model.new_cache(batch_size=2)
    model.forward(IDS[:1, :2], cache=uneven, rows=[0])
    with pytest.raises(CacheError, match="one length"):
        model.forward_full(IDS[:, :1], uneven, attention_mask=np.ones((2, 3), int))
    for layers, match in (([], "layers"), ([(np.zeros((1, 3, 2, 8)),) * 2] * 2, "n_head"),
                          ([(np.zeros((1, 4, 2, 8)), np.zeros((1, 4, 3, 8)))] * 2, "values"),
                          ([(np.zeros((1, 4, 30, 8)),) * 2] * 2, "fit")):
        with pytest.raises(CacheError, match=match):
            KVCache.from_layers(CONFIG, layers)
