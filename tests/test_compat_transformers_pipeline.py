"""``pipeline("text-generation")`` against transformers' own pipeline on the same checkpoint.

The checkpoint has GPT-2's vocabulary, so prompts are real text. Greedy results must be
identical, result for result; sampled ones can only share their shape, and repeat under
``torch.manual_seed``.
"""

import shutil
import warnings
from pathlib import Path

import pytest

import fastgpt
from fastgpt.compat.transformers import GPT2LMHeadModel, GPT2Tokenizer, pipeline

torch = pytest.importorskip("torch", reason="transformers is the oracle")
transformers = pytest.importorskip("transformers", reason="transformers is the oracle")

PROMPTS = ["The quick brown fox", "Hello", "It was the best of times, it was"]


@pytest.fixture(scope="module")
def folder_with_tokenizer(hf_checkpoint, tmp_path_factory):
    folder, hf_model = hf_checkpoint("vocab")
    both = tmp_path_factory.mktemp("vocab-with-tokenizer")
    shutil.copytree(folder, both, dirs_exist_ok=True)
    data = Path(fastgpt.__file__).parent / "data" / "gpt2"
    shutil.copy(data / "encoder.json", both / "vocab.json")
    shutil.copy(data / "vocab.bpe", both / "merges.txt")
    return both, hf_model


@pytest.fixture
def pipes(folder_with_tokenizer, backend):
    folder, hf_model = folder_with_tokenizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
        theirs = transformers.pipeline("text-generation", model=hf_model, tokenizer=hf_tok)
    ours = pipeline("text-generation", model=GPT2LMHeadModel.from_pretrained(folder, backend=backend),
                    tokenizer=GPT2Tokenizer.from_pretrained(folder))
    return ours, theirs


def run(pipe, *args, **kwargs):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipe(*args, **kwargs)


@pytest.mark.parametrize("inputs, kwargs", [
    (PROMPTS[0], dict(do_sample=False, max_new_tokens=10)),
    (PROMPTS, dict(do_sample=False, max_new_tokens=8, return_full_text=False)),
    (PROMPTS[1], dict(do_sample=False, max_length=9)),
    (PROMPTS[2], dict(do_sample=False, max_new_tokens=6, return_tensors=True)),
    (PROMPTS[0], dict(do_sample=False, max_new_tokens=12, repetition_penalty=1.3, no_repeat_ngram_size=2)),
], ids=["str", "list-new-text", "max_length", "tensors", "penalties"])
def test_greedy_results_identical(pipes, inputs, kwargs):
    ours, theirs = pipes
    got, want = run(ours, inputs, **kwargs), run(theirs, inputs, **kwargs)
    print(f"ours   {got}\ntheirs {want}")
    assert got == want


def test_batched_left_padding(pipes):
    ours, theirs = pipes
    for pipe in (ours, theirs):
        assert pipe.tokenizer.padding_side == "left"          # the pipeline sets it, as transformers does
        with pytest.raises(ValueError, match="pad_token"):
            run(pipe, PROMPTS, do_sample=False, max_new_tokens=4, batch_size=2)
        pipe.tokenizer.pad_token = pipe.tokenizer.eos_token
    kwargs = dict(do_sample=False, max_new_tokens=8, batch_size=2)
    got, want = run(ours, PROMPTS, **kwargs), run(theirs, PROMPTS, **kwargs)
    assert got == want
    assert got == run(ours, PROMPTS, do_sample=False, max_new_tokens=8)      # batching changes nothing


def test_sampling_shape_defaults_and_seed(pipes):
    ours, theirs = pipes
    got = run(ours, PROMPTS[:2], max_new_tokens=5, num_return_sequences=3)
    want = run(theirs, PROMPTS[:2], max_new_tokens=5, num_return_sequences=3)
    assert [len(r) for r in got] == [len(r) for r in want] == [3, 3]
    for prompt, records in zip(PROMPTS, got):
        assert all(set(r) == {"generated_text"} and r["generated_text"].startswith(prompt) for r in records)
    torch.manual_seed(7)
    first = run(ours, PROMPTS[0], max_new_tokens=20)
    torch.manual_seed(7)
    assert run(ours, PROMPTS[0], max_new_tokens=20) == first
    # The pipeline's defaults: sampling, 256 new tokens.
    torch.manual_seed(0)
    n_new = len(run(ours, PROMPTS[1], return_tensors=True)[0]["generated_token_ids"]) - 1   # "Hello" is one token
    assert n_new == 256


def test_pipeline_by_name_and_errors(folder_with_tokenizer):
    folder, _ = folder_with_tokenizer
    pipe = pipeline("text-generation", model=str(folder), device="cpu")
    assert isinstance(pipe.model, GPT2LMHeadModel) and isinstance(pipe.tokenizer, GPT2Tokenizer)
    with pytest.raises(ValueError, match="'summarization'"):
        pipeline("summarization", model=str(folder))
    with pytest.raises(NotImplementedError, match="cuda"):
        pipeline("text-generation", model=str(folder), device="cuda")
    with pytest.raises(TypeError, match="chat"):
        pipe([{"role": "user", "content": "hi"}])
