"""OpenAI's request shapes: what each field means for GenerationConfig, and that every bad
value is refused naming its field (no server needed)."""

from __future__ import annotations

import pytest

from server_process import require_serve

require_serve()

from fastgpt.serving.protocol import CompletionRequest, RequestError, parse, token_text  # noqa: E402
from fastgpt import Tokenizer  # noqa: E402


def config_of(**body):
    req = parse(CompletionRequest, {"prompt": "x", **body}).checked()
    return req.generation_config(req.max_tokens if req.max_tokens is not None else 16)


def test_temperature_zero_is_greedy_and_sampling_fields_are_dropped():
    cfg = config_of(temperature=0, top_p=0.5, top_k=3, min_p=0.2)
    assert not cfg.do_sample and (cfg.top_p, cfg.top_k, cfg.min_p) == (1.0, 0, 0.0)
    assert cfg.ignored_options() == []           # nothing for Generator to warn about


def test_openai_defaults_sample_at_temperature_one():
    cfg = config_of()
    assert cfg.do_sample and cfg.temperature == 1.0 and cfg.max_new_tokens == 16
    assert cfg.eos_token_id is None and cfg.num_return_sequences == 1


def test_fields_map_onto_generation_options():
    cfg = config_of(temperature=0.7, top_p=0.9, top_k=-1, min_p=0.05, n=3, seed=5, max_tokens=40,
                    min_tokens=4, stop=["\n", "."], presence_penalty=0.5, frequency_penalty=-0.5,
                    repetition_penalty=1.2, logit_bias={"50256": -100, "13": 2.5}, ignore_eos=True,
                    no_repeat_ngram_size=3)
    assert (cfg.temperature, cfg.top_p, cfg.top_k, cfg.min_p) == (0.7, 0.9, 0, 0.05)
    assert (cfg.num_return_sequences, cfg.seed, cfg.max_new_tokens, cfg.min_new_tokens) == (3, 5, 40, 4)
    assert cfg.stop_strings() == ("\n", ".")
    assert (cfg.presence_penalty, cfg.frequency_penalty, cfg.repetition_penalty) == (0.5, -0.5, 1.2)
    assert cfg.logit_bias == {50256: -100.0, 13: 2.5}
    assert cfg.eos_token_id == [] and cfg.no_repeat_ngram_size == 3


@pytest.mark.parametrize("body,param", [
    ({}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": [[1], "a"]}, "prompt"),
    ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "x", "max_tokens": "16"}, "max_tokens"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "temperature": -0.1}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_p": 1.5}, "top_p"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 2, "temperature": 0}, "n"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": "x", "logprobs": True}, "logprobs"),
    ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": "x", "stop": [1]}, "stop"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "presence_penalty": 3}, "presence_penalty"),
    ({"prompt": "x", "frequency_penalty": -2.5}, "frequency_penalty"),
    ({"prompt": "x", "logit_bias": {"a": 1}}, "logit_bias"),
    ({"prompt": "x", "logit_bias": {"\u0661": 1}}, "logit_bias"),  # ARABIC-INDIC DIGIT ONE is no id
    ({"prompt": "x", "n": 2, "temperature": 1e-6}, "n"),            # below SAMPLING_EPS: greedy
    ({"prompt": "x", "logit_bias": {"5": 101}}, "logit_bias"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "suffix": "end"}, "suffix"),
    ({"prompt": "x", "top_k": -2}, "top_k"),
    ({"prompt": "x", "min_p": 2}, "min_p"),
    ({"prompt": "x", "repetition_penalty": 0}, "repetition_penalty"),
    ({"prompt": "x", "min_tokens": 20, "max_tokens": 10}, "min_tokens"),
    ({"prompt": "x", "ignore_eos": "no"}, "ignore_eos"),
    ({"prompt": "x", "no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
])
def test_bad_values_name_their_field(body, param):
    with pytest.raises(RequestError) as info:
        parse(CompletionRequest, body).checked()
    err = info.value
    assert err.status == 400 and err.param == param, (err.param, err.message)
    assert param.split(".")[0] in err.message


def test_unknown_fields_are_accepted_and_reported():
    req = parse(CompletionRequest, {"prompt": "x", "frobnicate": 1, "tools": []})
    assert req.ignored_fields() == ["frobnicate", "tools"]
    req = parse(CompletionRequest, {"prompt": "x", "stream": True, "stream_options": {"include_usage": True, "x": 1}})
    assert req.ignored_fields() == ["stream_options.x"]


def test_null_means_the_default():
    nulls = dict.fromkeys(["n", "stream", "echo", "presence_penalty", "frequency_penalty", "top_k", "min_p",
                           "repetition_penalty", "min_tokens", "ignore_eos", "max_tokens", "temperature"])
    req = parse(CompletionRequest, {"prompt": "x", **nulls}).checked()
    assert (req.n, req.stream, req.echo, req.top_k, req.min_tokens, req.ignore_eos) == (1, False, False, -1, 0, False)
    assert (req.presence_penalty, req.repetition_penalty, req.min_p) == (0.0, 1.0, 0.0)
    assert req.max_tokens is None                 # null max_tokens: what the context leaves (vLLM)
    cfg = req.generation_config(16)
    assert cfg.do_sample and cfg.temperature == 1.0
    with pytest.raises(RequestError) as info:
        parse(CompletionRequest, {"prompt": None})
    assert info.value.param == "prompt"


def test_a_temperature_too_small_to_divide_by_is_greedy():
    for t in (1e-38, 5e-324, 9.9e-6):
        cfg = config_of(temperature=t, top_k=3)
        assert not cfg.do_sample and cfg.top_k == 0, t
    assert config_of(temperature=1e-5).do_sample


def test_body_must_be_an_object():
    with pytest.raises(RequestError, match="JSON object"):
        parse(CompletionRequest, [1, 2])


def test_token_text_shows_partial_characters_as_bytes():
    tok = Tokenizer.gpt2()
    hug = tok.encode("🤗")                        # f0 9f | a4 | 97: split over three tokens
    assert "".join(token_text(tok, t) for t in tok.encode("hello")) == "hello"
    pieces = [token_text(tok, t) for t in hug]
    assert pieces == ["bytes:\\xf0\\x9f", "bytes:\\xa4", "bytes:\\x97"], pieces
    assert token_text(tok, 31373, as_id=True) == "token_id:31373"
