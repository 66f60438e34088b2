"""The full forward of GPT2Model / GPT2LMHeadModel / GPT2DoubleHeadsModel against transformers.

Every argument of the API reference: ``past_key_values`` (and the old ``past=``, the new
``cache=``; fastgpt's cache objects, transformers' ``DynamicCache``, and legacy per-layer
(key, value) tuples, in both directions), ``attention_mask`` with transformers' semantics
(left padding does not shift positions; masks with holes), ``position_ids``,
``token_type_ids``, ``head_mask``, ``inputs_embeds``, ``labels``, ``use_cache``,
``output_hidden_states``, ``output_attentions`` and ``return_dict=False``; both backends.

transformers 5 ignores ``head_mask``; its oracle here is transformers 4's meaning (each head's
attention probabilities scaled), which equals scaling that head's rows of ``c_proj``.
"""

import copy
import warnings

import numpy as np
import pytest

from oracle import LOGITS_ATOL, hf_model
from fastgpt.compat.transformers import GPT2DoubleHeadsModel, GPT2LMHeadModel, GPT2Model

torch = pytest.importorskip("torch", reason="transformers is the oracle")
transformers = pytest.importorskip("transformers", reason="transformers is the oracle")

IDS = [[5, 17, 3, 99, 250, 1], [7, 7, 8, 400, 12, 6]]
# Hidden states and attention probabilities: fp32 sums in another order, as the logits.
ATOL = LOGITS_ATOL
# Mean cross-entropies (float64 here, float32 in torch).
LOSS_ATOL = 1e-4


@pytest.fixture(scope="module")
def small(hf_checkpoint):
    folder, hf = hf_checkpoint("small")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    return folder, eager


def close(got, want, what, atol=ATOL):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    diff = np.abs(got - want).max() if got.size else 0.0
    print(f"{what}: max diff {diff:.2e}")
    assert diff < atol, f"{what}: max diff {diff}"


def hf_run(model, **kwargs):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model(**kwargs)


def test_gpt2model_states_and_attentions(small, backend):
    folder, hf = small
    ours = GPT2Model.from_pretrained(folder, backend=backend)
    ids = torch.tensor(IDS)
    want = hf_run(hf.transformer, input_ids=ids, output_hidden_states=True, output_attentions=True)
    got = ours(ids, output_hidden_states=True, output_attentions=True)
    assert isinstance(got.last_hidden_state, torch.Tensor)
    close(got.last_hidden_state, want.last_hidden_state, "last_hidden_state")
    assert len(got.hidden_states) == len(want.hidden_states) == 3
    for i, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states)):
        close(a, b, f"hidden_states[{i}]")
    for i, (a, b) in enumerate(zip(got.attentions, want.attentions)):
        close(a, b, f"attentions[{i}]")
    lm = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    out = lm(ids, output_hidden_states=True)
    close(out.hidden_states[-1], want.last_hidden_state, "LM hidden_states[-1]")
    assert lm.transformer(ids).last_hidden_state.shape == (2, 6, 64)


@pytest.mark.parametrize("mask", [
    [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]],          # left padding: positions are not shifted
    [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]],          # right padding
    [[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 1, 1]],          # holes
], ids=["left", "right", "holes"])
def test_attention_mask_as_transformers(small, backend, mask):
    folder, hf = small
    ours = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    ids, m = torch.tensor(IDS), torch.tensor(mask)
    want = hf_run(hf, input_ids=ids, attention_mask=m).logits
    got = ours(ids, attention_mask=m).logits
    seen = m.bool().numpy()
    # Positions whose query sees no key at all give unspecified outputs, in transformers too.
    visible = np.array([[mask[b][: t + 1].count(1) > 0 for t in range(6)] for b in range(2)])
    close(got.numpy()[visible & seen], want.numpy()[visible & seen], f"logits under mask {mask}")
    # With position_ids counting from each row's first real token, transformers' generate layout.
    positions = torch.clamp(m.cumsum(-1) - 1, min=0)
    want = hf_run(hf, input_ids=ids, attention_mask=m, position_ids=positions).logits
    got = ours(ids, attention_mask=m, position_ids=positions).logits
    close(got.numpy()[visible & seen], want.numpy()[visible & seen], "logits with position_ids")


def test_embeddings_arguments(small, backend):
    folder, hf = small
    ours = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    ids = torch.tensor(IDS)
    types = torch.tensor([[1, 1, 2, 2, 3, 3], [0, 0, 0, 9, 9, 9]])
    close(ours(ids, token_type_ids=types).logits, hf_run(hf, input_ids=ids, token_type_ids=types).logits,
          "token_type_ids")
    positions = torch.tensor([[3, 4, 5, 6, 7, 8], [10, 11, 12, 13, 14, 15]])
    close(ours(ids, position_ids=positions).logits, hf_run(hf, input_ids=ids, position_ids=positions).logits,
          "position_ids")
    embeds = hf.transformer.wte(ids).detach() * 1.5
    close(ours(inputs_embeds=embeds).logits, hf_run(hf, inputs_embeds=embeds).logits, "inputs_embeds")
    close(ours.get_input_embeddings()(ids), hf.transformer.wte(ids).detach(), "get_input_embeddings()")


@pytest.mark.parametrize("shape", ["heads", "layers-heads"])
def test_head_mask(small, backend, shape):
    folder, hf = small
    ours = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    head_mask = torch.tensor([[1.0, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 2.0]])
    if shape == "heads":
        head_mask = head_mask[0]
    per_layer = head_mask if head_mask.dim() == 2 else head_mask.expand(2, 4)
    scaled = copy.deepcopy(hf)
    D = 64 // 4
    with torch.no_grad():
        for layer, block in enumerate(scaled.transformer.h):
            for h in range(4):                    # c_proj is Conv1D: weight [in, out], head h's rows
                block.attn.c_proj.weight[h * D:(h + 1) * D] *= per_layer[layer, h]
    ids = torch.tensor(IDS)
    close(ours(ids, head_mask=head_mask).logits, hf_run(scaled, input_ids=ids).logits, f"head_mask {shape}")


def test_past_key_values_round_trips(small, backend):
    folder, hf = small
    ours = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    ids = torch.tensor(IDS)
    full = hf_run(hf, input_ids=ids).logits
    first = ours(ids[:, :4], use_cache=True)
    assert len(first.past_key_values) == 2 and first.past_key_values.get_seq_length() == 4
    theirs_first = hf_run(hf, input_ids=ids[:, :4], use_cache=True)
    for layer, ((k, v), hf_layer) in enumerate(zip(first.past_key_values, theirs_first.cache.layers)):
        assert k.shape == (2, 4, 4, 16)                        # (batch, heads, seq, head_dim)
        close(k, hf_layer.keys, f"keys[{layer}]")
        close(v, hf_layer.values, f"values[{layer}]")
    # ours -> ours, in every spelling
    for spelling in ("past_key_values", "past", "cache"):
        past = ours(ids[:, :4], use_cache=True).past_key_values
        close(ours(ids[:, 4:], **{spelling: past}).logits, full[:, 4:], f"continue from our cache ({spelling}=)")
    # transformers' DynamicCache -> ours
    close(ours(ids[:, 4:], past_key_values=theirs_first.cache).logits, full[:, 4:], "continue from DynamicCache")
    # legacy tuples both ways
    legacy = tuple((layer.keys, layer.values) for layer in hf_run(hf, input_ids=ids[:, :4], use_cache=True).cache.layers)
    close(ours(ids[:, 4:], past_key_values=legacy).logits, full[:, 4:], "continue from legacy tuples")
    ours_legacy = ours(ids[:, :4], use_cache=True).past_key_values.to_legacy_cache()
    dynamic = transformers.DynamicCache()
    for layer, (k, v) in enumerate(ours_legacy):
        dynamic.update(k.clone(), v.clone(), layer)
    close(hf_run(hf, input_ids=ids[:, 4:], past_key_values=dynamic).logits, full[:, 4:], "transformers from our past")
    # a left-padded prefix, then one more token, attention_mask covering past + new
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    want = hf_run(hf, input_ids=ids[:, 4:5], attention_mask=mask,
                  past_key_values=hf_run(hf, input_ids=ids[:, :4], attention_mask=mask[:, :4], use_cache=True).cache)
    got = ours(ids[:, 4:5], attention_mask=mask,
               past_key_values=ours(ids[:, :4], attention_mask=mask[:, :4], use_cache=True).past_key_values)
    close(got.logits, want.logits, "left-padded prefix + one token")


def test_use_cache_return_dict_and_loss(small, backend):
    folder, hf = small
    ours = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    ids = torch.tensor(IDS)
    assert list(ours(ids).keys()) == ["logits", "cache"] and ours(ids, use_cache=False).cache is None
    loss, logits, cache = ours(ids, labels=ids, return_dict=False)
    assert isinstance(cache, type(ours(ids).past_key_values)) and logits.shape == (2, 6, 500)
    assert abs(loss.item() - hf_run(hf, input_ids=ids, labels=ids).loss.item()) < LOSS_ATOL
    past = ours(ids[:, :4], use_cache=True).past_key_values
    want = hf_run(hf, input_ids=ids[:, 4:], labels=ids[:, 4:],
                  past_key_values=hf_run(hf, input_ids=ids[:, :4], use_cache=True).cache).loss.item()
    assert abs(ours(ids[:, 4:], labels=ids[:, 4:], past_key_values=past).loss.item() - want) < LOSS_ATOL
    assert len(ours.transformer(ids, return_dict=False)) == 2


@pytest.fixture(scope="module")
def double_heads(tmp_path_factory):
    """A transformers GPT2DoubleHeadsModel (random, head included) and its folder."""
    hf = hf_model(dict(n_embd=64, n_layer=2, n_head=4, vocab_size=500, n_positions=128), seed=11,
                  cls="GPT2DoubleHeadsModel")
    folder = tmp_path_factory.mktemp("hf-double-heads")
    hf.save_pretrained(folder)
    return folder, hf


def test_double_heads_as_transformers(double_heads, backend):
    folder, hf = double_heads
    ours = GPT2DoubleHeadsModel.from_pretrained(folder, backend=backend)
    ids = torch.tensor([IDS, [IDS[1], IDS[0]]])                      # (batch 2, choices 2, seq 6)
    mc_token_ids = torch.tensor([[5, 3], [2, 5]])
    labels, mc_labels = ids.clone(), torch.tensor([1, 0])
    want = hf_run(hf, input_ids=ids, mc_token_ids=mc_token_ids, labels=labels, mc_labels=mc_labels)
    got = ours(ids, mc_token_ids=mc_token_ids, labels=labels, mc_labels=mc_labels)
    close(got.logits, want.logits, "logits")
    close(got.mc_logits, want.mc_logits, "mc_logits")
    assert abs(got.loss.item() - want.loss.item()) < LOSS_ATOL
    assert abs(got.mc_loss.item() - want.mc_loss.item()) < LOSS_ATOL
    assert list(got.keys()) == list(want.keys())
    state = ours.state_dict()
    for name in ("multiple_choice_head.summary.weight", "multiple_choice_head.summary.bias"):
        close(state[name], hf.state_dict()[name], name, atol=1e-12)
    close(ours(ids).mc_logits, hf_run(hf, input_ids=ids).mc_logits, "mc_logits at the last token (default)")
    # the old API's lm_labels= is today's labels=
    assert abs(ours(ids, lm_labels=labels).loss.item() - want.loss.item()) < LOSS_ATOL
