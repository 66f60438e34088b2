"""Bad token ids and arguments to perplexity and the compat layers: a ValueError (TokenIdError
where the ids are at fault) whose message names the argument or the id, never a silent
coercion (1.9 -> 1, "1" -> 1) or another function's wording."""

import numpy as np
import pytest

from fastgpt.compat import llms_from_scratch as lfs
from fastgpt.compat import picogpt
from fastgpt.compat.transformers import GPT2Config as CompatConfig
from fastgpt.compat.transformers import GPT2LMHeadModel
from fastgpt.config import GPT2Config
from fastgpt.model import Model, TokenIdError
from fastgpt.perplexity import perplexity_of_ids


@pytest.fixture(scope="module")
def model():
    return Model.random(GPT2Config(vocab_size=1000, n_positions=32, n_embd=64, n_layer=2, n_head=2),
                        backend="numpy")


# -- fastgpt.perplexity.perplexity_of_ids ------------------------------------------------------

@pytest.mark.parametrize("ids, fragment", [
    ([1.9, 2.9, 3.9], "float"),                 # was truncated to [1, 2, 3]
    (np.array([1.0, 2.0, 3.0]), "float"),
    (["1", "2", "3"], "<U1"),
    ([True, False, True], "bool"),
    ([1, 2, 2.5], "float"),
])
def test_perplexity_rejects_ids_that_are_not_integers(model, ids, fragment):
    with pytest.raises(TokenIdError, match="token ids must be integers") as info:
        perplexity_of_ids(model, ids)
    assert fragment in str(info.value)


def test_perplexity_rejects_2d_ids_by_shape_not_length(model):
    with pytest.raises(TokenIdError, match=r"ids must be a 1-d sequence of token ids, got shape \(1, 3\)"):
        perplexity_of_ids(model, [[1, 2, 3]])


def test_perplexity_names_a_bad_ids_position_in_the_callers_sequence(model):
    # The windows start every 16 tokens: the third one holds position 40 at its offset 24.
    ids = list(range(40)) + [5000]
    with pytest.raises(TokenIdError, match=r"token id 5000 at position 40 is outside the vocabulary \[0, 1000\)"):
        perplexity_of_ids(model, ids, max_length=32, stride=16)


@pytest.mark.parametrize("kwargs, name", [
    ({"max_length": 2.5}, "max_length"),
    ({"max_length": True}, "max_length"),
    ({"max_length": "16"}, "max_length"),
    ({"max_length": 33}, "max_length"),
    ({"stride": 1.5}, "stride"),
    ({"stride": 0}, "stride"),
    ({"max_length": 16, "stride": 17}, "stride"),
])
def test_perplexity_window_arguments_are_integers_in_range(model, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must be an integer in"):
        perplexity_of_ids(model, list(range(40)), **kwargs)


@pytest.mark.parametrize("ids, got", [([], 0), ([7], 1), (np.array([7]), 1)])
def test_perplexity_too_few_tokens(model, ids, got):
    with pytest.raises(ValueError, match=f"need at least 2 tokens to score, got {got}$"):
        perplexity_of_ids(model, ids)


def test_perplexity_of_good_ids_is_unchanged_by_their_container(model):
    ids = list(range(40))
    want = perplexity_of_ids(model, ids, max_length=32, stride=16)
    for same in (tuple(ids), np.array(ids, np.int32), [np.int64(i) for i in ids]):
        got = perplexity_of_ids(model, same, max_length=32, stride=16)
        assert (got.perplexity, got.scored_tokens, got.windows) == (want.perplexity, 39, want.windows)


# -- fastgpt.compat.picogpt --------------------------------------------------------------------

def pico_params(seed=0):
    rng = np.random.RandomState(seed)
    return {"wte": rng.rand(3, 10), "wpe": rng.rand(16, 10), "blocks": [],
            "ln_f": {"g": np.ones(10), "b": np.zeros(10)}}


@pytest.mark.parametrize("inputs, fragment", [
    ([1.7, 2.2], "got float 1.7 at [0]"),
    (["1", "2"], "got str '1' at [0]"),
    ([1, 2.5], "got float 2.5 at [1]"),
    ([1, True], "got bool True at [1]"),
    (np.array([1.0, 2.0]), "got float 1.0 at [0]"),
])
def test_picogpt_generate_rejects_ids_that_are_not_integers(inputs, fragment):
    before = list(inputs)
    with pytest.raises(TokenIdError, match="token ids must be integers") as info:
        picogpt.generate(inputs, pico_params(), 2, 2)
    assert fragment in str(info.value)
    assert list(inputs) == before                 # nothing appended to the caller's list


def test_picogpt_gpt2_rejects_ids_that_are_not_integers():
    with pytest.raises(TokenIdError, match=r"got float 1\.7 at \[0\]"):
        picogpt.gpt2([1.7], **pico_params(), n_head=2)


def test_picogpt_generate_rejects_nested_and_out_of_vocabulary_ids():
    with pytest.raises(TokenIdError, match=r"inputs must be a 1-d list of token ids, got shape \(1, 2\)"):
        picogpt.generate([[1, 2]], pico_params(), 2, 2)
    with pytest.raises(TokenIdError, match=r"token id 5 at position 1 is outside the vocabulary \[0, 3\)"):
        picogpt.generate([1, 5], pico_params(), 2, 2)


def test_picogpt_generate_takes_integer_ids_in_any_container():
    inputs = [1, 2]
    new = picogpt.generate(inputs, pico_params(), 2, 3)
    assert inputs == [1, 2] + new and all(type(t) is int for t in new)
    assert picogpt.generate(np.array([1, 2]), pico_params(), 2, 3) == new
    assert picogpt.generate((np.int64(1), 2), pico_params(), 2, 3) == new


# -- fastgpt.compat.transformers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def lm():
    config = CompatConfig(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, n_positions=64)
    return GPT2LMHeadModel(config, backend="numpy")


def test_transformers_too_long_input_names_input_ids_not_position_ids(lm):
    with pytest.raises(ValueError) as info:
        lm(np.arange(65)[None])
    assert str(info.value) == "input_ids has 65 tokens, but the model's context is 64 tokens (n_positions)"


def test_transformers_too_long_after_the_past_counts_the_past(lm):
    past = lm(np.arange(40)[None], use_cache=True).past_key_values
    with pytest.raises(ValueError, match=r"^input_ids has 30 tokens after the 40 tokens in past_key_values, "
                                         r"but the model's context is 64 tokens"):
        lm(np.arange(30)[None], past_key_values=past)


def test_transformers_too_long_embeddings_name_inputs_embeds(lm):
    with pytest.raises(ValueError, match=r"^inputs_embeds has 65 tokens, but the model's context is 64"):
        lm(inputs_embeds=np.zeros((1, 65, 64), np.float32))


def test_transformers_explicit_position_ids_still_blamed(lm):
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, n_positions=64\)"):
        lm(np.arange(2)[None], position_ids=np.array([[63, 64]]))


@pytest.mark.parametrize("shape", [(1, 0), (0, 5), (0,)])
def test_transformers_empty_input_ids(lm, shape):
    with pytest.raises(ValueError, match=r"^input_ids is empty \(shape " + str(shape).replace("(", r"\(").replace(")", r"\)")):
        lm(np.zeros(shape, np.int64))


def test_transformers_full_context_still_runs(lm):
    assert lm(np.arange(64)[None]).logits.shape == (1, 64, 1000)


def test_transformers_torch_input(lm):
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="^input_ids has 65 tokens, but the model's context is 64"):
        lm(torch.arange(65)[None])
    with pytest.raises(ValueError, match=r"^input_ids is empty \(shape \(1, 0\)\)"):
        lm(torch.zeros((1, 0), dtype=torch.long))


# -- fastgpt.compat.llms_from_scratch ----------------------------------------------------------

CFG = {"vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": False}


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), -1.0, np.float32("inf"), "1"])
def test_llms_from_scratch_temperature_is_named(temperature):
    model = lfs.GPTModel(CFG, backend="numpy")
    with pytest.raises(ValueError, match="^temperature must be a finite number >= 0") as info:
        lfs.generate(model, np.array([[1, 2]]), 3, 16, temperature=temperature, seed=0)
    assert "`t`" not in str(info.value)


def test_llms_from_scratch_finite_temperatures_still_sample():
    model = lfs.GPTModel(CFG, backend="numpy")
    for temperature in (0, 0.0, 0.7, 1e30):
        assert lfs.generate(model, np.array([[1, 2]]), 3, 16, temperature=temperature, seed=0).shape == (1, 5)
