"""fastgpt.compat.transformers' GPT-2 tokenizer against transformers' own, on the same files.

Both tokenizers are built from the GPT-2 vocabulary fastgpt bundles (transformers' under its
file names), and every case compares the whole result: ids, masks, overflow rows, special
tokens, decoded text. The one documented difference, ``errors=`` in decode (transformers 5
always replaces invalid UTF-8), is checked against Python's own ``bytes.decode``.
"""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastgpt
from fastgpt.compat.transformers import AutoTokenizer, BatchEncoding, GPT2Tokenizer, GPT2TokenizerFast
from fastgpt.tokenizer import Tokenizer

torch = pytest.importorskip("torch", reason="transformers is the oracle")
transformers = pytest.importorskip("transformers", reason="transformers is the oracle")

TEXTS = ["Hello world", "hi", " leading space and\nnewline", "a<|endoftext|>b", "", "naïve café 😀"]


@pytest.fixture(scope="module")
def tok_folder(tmp_path_factory):
    """The bundled GPT-2 files (what Tokenizer.gpt2 reads) under transformers' file names."""
    folder = tmp_path_factory.mktemp("gpt2-tok")
    data = Path(fastgpt.__file__).parent / "data" / "gpt2"
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")
    return folder


def theirs(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), **kwargs)


def ours(folder, **kwargs):
    return GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), **kwargs)


def both(folder, **kwargs):
    return ours(folder, **kwargs), theirs(folder, **kwargs)


def same(a, b, what):
    a, b = dict(a), dict(b)
    print(f"{what}:\n  ours   {a}\n  theirs {b}")
    assert a == b, what


@pytest.mark.parametrize("add_prefix_space", [False, True])
def test_encode_tokenize_decode(tok_folder, add_prefix_space):
    mine, hf = both(tok_folder, add_prefix_space=add_prefix_space)
    assert mine.add_prefix_space == add_prefix_space
    for text in TEXTS:
        ids = mine.encode(text)
        assert ids == hf.encode(text), text
        assert mine.tokenize(text) == hf.tokenize(text), text
        assert mine.decode(ids) == hf.decode(ids), text
        assert mine.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True), text
    tokens = ["Hello", "Ġworld", "not-a-token-zz"]
    assert mine.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert mine.convert_ids_to_tokens([15496, 995, 50256]) == hf.convert_ids_to_tokens([15496, 995, 50256])
    assert mine.convert_tokens_to_string(["Hello", "Ġwor", "ld", "<|endoftext|>"]) == \
        hf.convert_tokens_to_string(["Hello", "Ġwor", "ld", "<|endoftext|>"])
    for role in ("eos_token", "bos_token", "unk_token", "pad_token", "eos_token_id", "unk_token_id", "pad_token_id"):
        assert getattr(mine, role) == getattr(hf, role), role
    assert (mine.vocab_size, len(mine)) == (hf.vocab_size, len(hf))
    assert mine.decode(np.array([15496, 995])) == mine.decode(torch.tensor([15496, 995])) == "Hello world"
    assert mine.decode(np.int64(995)) == hf.decode(995)


@pytest.mark.parametrize("args, kwargs", [
    (("Hello world", "second part"), {}),
    (("Hello world and more words",), dict(max_length=3)),                      # max_length alone truncates
    (("a b c d",), dict(max_length=2, truncation=False)),
    (("one two three four five six seven",), dict(max_length=3, truncation=True, stride=1,
                                                   return_overflowing_tokens=True)),
    (("a b c d e f",), dict(max_length=3, truncation=True, stride=2, return_overflowing_tokens=True)),
    ((["a b c d e", "x"], ["p q", "r s t u"]), dict(truncation="longest_first", max_length=4)),
    (("a b c d e", "p q r"), dict(truncation="longest_first", max_length=3)),
    (("a b c d e", "p q r s"), dict(truncation=True, max_length=5, stride=1, return_overflowing_tokens=True)),
    (("a b c d e", "p q r"), dict(truncation="only_second", max_length=7, stride=1, return_overflowing_tokens=True)),
    (("a b c d e", "p q r"), dict(truncation="only_first", max_length=6)),
    ((["a b c d e f g", "h i j k l"],), dict(max_length=3, truncation=True, stride=1, return_overflowing_tokens=True)),
    ((["hello", "world"],), dict(is_split_into_words=True)),
    (([["hello", "world"], ["a"]],), dict(is_split_into_words=True)),
    (("a<|endoftext|>b", "c d"), dict(return_token_type_ids=True, return_special_tokens_mask=True, return_length=True)),
    ((TEXTS[:3],), {}),
    (("Hello",), dict(return_attention_mask=False)),
], ids=lambda v: repr(v)[:40])
def test_call_matches(tok_folder, args, kwargs):
    mine, hf = both(tok_folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same(mine(*args, **kwargs), hf(*args, **kwargs), f"__call__{args}{kwargs}")
        if not kwargs.get("is_split_into_words") and not kwargs.get("return_token_type_ids"):
            assert mine.encode(*args[:2], **kwargs) == hf.encode(*args[:2], **kwargs)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kwargs", [
    dict(padding=True),
    dict(padding="max_length", max_length=8),
    dict(padding=True, truncation=True, max_length=2),
    dict(truncation=True, max_length=3),
    dict(padding="longest", max_length=2),                 # padding set: max_length does not truncate
    dict(padding="max_length", max_length=5, pad_to_multiple_of=4),
    dict(padding=True, return_length=True),
], ids=lambda v: repr(v)[:40])
def test_padding_and_tensors(tok_folder, side, kwargs):
    mine, hf = both(tok_folder)
    for tok in (mine, hf):
        tok.pad_token = tok.eos_token
        tok.padding_side = side
    texts = TEXTS[:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same(mine(texts, **kwargs), hf(texts, **kwargs), f"{side} {kwargs}")
        if kwargs.get("padding"):
            for kind in ("np", "pt"):
                got, want = mine(texts, return_tensors=kind, **kwargs), hf(texts, return_tensors=kind, **kwargs)
                assert type(got["input_ids"]) is type(want["input_ids"])
                np.testing.assert_array_equal(np.asarray(got["input_ids"]), np.asarray(want["input_ids"]))
                np.testing.assert_array_equal(np.asarray(got["attention_mask"]), np.asarray(want["attention_mask"]))
    single_pad = dict(padding=True, pad_to_multiple_of=4)
    same(mine("a b c", **single_pad), hf("a b c", **single_pad), "single, padded to a multiple")
    same(mine("a b c", pad_to_multiple_of=4), hf("a b c", pad_to_multiple_of=4), "a multiple without padding")


def test_defaults_are_transformers(tok_folder):
    """No padding, no truncation, plain lists: issue 14's divergence (a 2-D array) is gone."""
    mine, hf = both(tok_folder)
    assert mine("Hello world") == hf("Hello world") == {"input_ids": [15496, 995], "attention_mask": [1, 1]}
    assert mine.encode("Hello world", "second part") == hf.encode("Hello world", "second part") == [15496, 995, 12227, 636]
    single = mine("Hello world", return_tensors="pt")
    assert single["input_ids"].size() == (1, 2) and single.input_ids.dtype == torch.int64
    assert isinstance(single, BatchEncoding) and single.to("cpu") is single
    assert torch.equal(mine.encode("Hello", return_tensors="pt"), hf.encode("Hello", return_tensors="pt"))


def test_padding_errors_as_transformers(tok_folder):
    mine, hf = both(tok_folder)
    for tok in (mine, hf):
        with pytest.raises(ValueError, match="pad"):             # no pad token
            tok(["Hello world", "hi"], padding=True)
        with pytest.raises(ValueError, match="[Uu]nable to create tensor"):    # ragged
            tok(["Hello world", "hi"], return_tensors="pt")
    with pytest.raises(ValueError, match="stride"):
        mine("a b c d e", max_length=2, truncation=True, stride=2, return_overflowing_tokens=True)
    # the API reference's encode(..., truncation_strategy=) is today's truncation=
    assert mine.encode("a b c d e", "x y", max_length=4, truncation_strategy="only_first") == \
        hf.encode("a b c d e", "x y", max_length=4, truncation="only_first")
    with pytest.raises(ValueError, match="only_second"):
        mine("a b c", max_length=2, truncation="only_second")
    with pytest.raises(ValueError, match="too short"):
        mine("a b", "x y z w", max_length=4, truncation="only_first")


def test_added_special_tokens_encode_as_single_ids(tok_folder):
    mine, hf = both(tok_folder)
    text = "a [CLS] b<foo>c <|endoftext|>"
    for tok in (mine, hf):
        assert tok.add_special_tokens({"cls_token": "[CLS]", "additional_special_tokens": ["<foo>"]}) == 2
        assert tok.add_tokens(["hello world", "xyz"]) == 2
        assert tok.add_special_tokens({"pad_token": "<|endoftext|>"}) == 0      # already in the vocabulary
    for case in (text, "say hello world and xyzabc"):
        assert mine.encode(case) == hf.encode(case), case
        assert mine.tokenize(case) == hf.tokenize(case), case
        ids = mine.encode(case)
        assert mine.decode(ids) == hf.decode(ids) == case
        assert mine.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)
    assert mine.cls_token_id == hf.cls_token_id == 50257
    assert len(mine) == len(hf) == 50261 and mine.vocab_size == hf.vocab_size
    assert mine.all_special_tokens == hf.all_special_tokens
    assert mine.all_special_ids == hf.all_special_ids
    assert mine.special_tokens_map == hf.special_tokens_map
    # A token already in the vocabulary keeps its id but is split off as one token.
    mine2, hf2 = both(tok_folder)
    for tok in (mine2, hf2):
        tok.add_special_tokens({"cls_token": "Hello"})
    assert mine2.encode(" Hello Hello") == hf2.encode(" Hello Hello") == [220, 15496, 220, 15496]


def test_constructor_special_tokens(tok_folder):
    """A special token given to the constructor joins the vocabulary; one set later only names it."""
    mine, hf = both(tok_folder, pad_token="[PAD]")
    assert mine.pad_token_id == hf.pad_token_id == 50257 and len(mine) == len(hf)
    assert mine.encode("a[PAD]b") == hf.encode("a[PAD]b")
    mine, hf = both(tok_folder)
    for tok in (mine, hf):
        tok.pad_token = "[PAD]"
    assert mine.pad_token_id == hf.pad_token_id == 50256 and mine.encode("a[PAD]b") == hf.encode("a[PAD]b")
    mine, hf = both(tok_folder, add_prefix_space=True)
    for tok in (mine, hf):
        tok.add_special_tokens({"pad_token": "[PAD]"})
    assert mine.encode("Hello<|endoftext|>world [PAD]x") == hf.encode("Hello<|endoftext|>world [PAD]x")
    # transformers 5's keyword spellings of the files.
    plain = ours(tok_folder)
    by_dict = GPT2Tokenizer(vocab=plain.get_vocab(), merges=[" ".join(m) for m in Tokenizer.gpt2().merges])
    assert by_dict.encode(TEXTS[2]) == plain.encode(TEXTS[2])
    assert GPT2Tokenizer(vocab_file=str(tok_folder / "vocab.json"), merges_file=str(tok_folder / "merges.txt")
                         ).encode("Hello") == [15496]


def test_decode_errors_argument(tok_folder):
    """``errors=`` is honoured as the old slow tokenizer did: bytes.decode(errors=...)."""
    broken = [447, 995]                                  # 447: the first two bytes of a 3-byte character
    raw = Tokenizer.gpt2().decode_bytes(broken)
    for errors in ("replace", "ignore", "backslashreplace"):
        assert ours(tok_folder, errors=errors).decode(broken) == raw.decode("utf-8", errors=errors)
    with pytest.raises(UnicodeDecodeError):
        ours(tok_folder, errors="strict").decode(broken)
    assert ours(tok_folder).decode(broken) == theirs(tok_folder).decode(broken)      # "replace", the default


def test_from_pretrained_names_and_round_trip(tok_folder, tmp_path):
    tok = GPT2TokenizerFast.from_pretrained("distilgpt2")
    assert tok.model_max_length == 1024 and tok.encode("Hello world") == [15496, 995]
    assert AutoTokenizer.from_pretrained("openai-community/gpt2").encode("Hello") == [15496]
    tok.add_special_tokens({"pad_token": "[PAD]", "additional_special_tokens": ["<x>"]})
    tok.padding_side = "left"
    tok.save_pretrained(tmp_path)
    for back in (AutoTokenizer.from_pretrained(tmp_path), theirs_from_pretrained(tmp_path)):
        assert back.encode("a [PAD] b<x>") == tok.encode("a [PAD] b<x>") == [64, 220, 50257, 275, 50258]
        assert back.pad_token == "[PAD]" and back.padding_side == "left" and back.model_max_length == 1024


def theirs_from_pretrained(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoTokenizer.from_pretrained(folder)
