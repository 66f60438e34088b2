"""fastgpt.tokenizer against tiktoken's gpt2 encoding, Hugging Face's GPT2Tokenizer,
and OpenAI's original BPE loop; plus file formats, streaming decode and errors.

tiktoken is built offline from the bundled files, so nothing is downloaded.
"""

import json
import random
import shutil
import time
from pathlib import Path

import pytest

import oracle
from fastgpt.tokenizer import IncrementalDecoder, Tokenizer, TokenizerError, bytes_to_unicode

DATA = Path(__file__).resolve().parents[1] / "fastgpt" / "data" / "gpt2"
EOT = "<|endoftext|>"


def _random_text(seed: int, n: int) -> str:
    """Fixed-seed mix of code points chosen to stress the pre-tokenizer.

    Only long-assigned blocks are used: the `regex` module and tiktoken's Rust
    regex carry different Unicode versions, so newly assigned letters could
    differ between them without either tokenizer being wrong.
    """
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789",
        " " * 8, "\t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000", "'''sStTdDmMlLvVeErR",
        "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~", "".join(map(chr, range(0x00, 0x100))),
        "".join(map(chr, range(0x300, 0x370))),   # combining marks
        "".join(map(chr, range(0x391, 0x3a2))) + "".join(map(chr, range(0x410, 0x450))),
        "".join(map(chr, range(0x627, 0x64b))) + "\u0660\u0661\u0669",  # Arabic, Arabic-Indic digits
        "".join(map(chr, range(0x915, 0x939))) + "\u093e\u094d\u0966",  # Devanagari
        "".join(map(chr, range(0x4e00, 0x4e80))) + "\u3001\u3002",      # CJK
        "".join(map(chr, range(0xac00, 0xac40))),                        # Hangul
        "".join(map(chr, range(0x1f600, 0x1f650))) + "\u200d\ufe0f" + "".join(map(chr, range(0x1f3fb, 0x1f400))),
        "\u00b2\u00bd\u2160\u2163\uff10\uff19",                          # No/Nl numbers, fullwidth digits
    ]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


CORPUS = {
    "empty": "",
    "prose": "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times.",
    "code": "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\nclass A(B):\n\tpass\n",
    "contractions": "I'm sure you're right: it's what we've said, they'll go, he'd know, don't.",
    "contractions_upper": "IT'S WHAT WE'VE SAID. I'M HERE, SHE'D GO, THEY'LL SEE, DON'T, 'S 'T 'Re 'vE",
    "quotes": "'s' 't 'll'' ''ve ' 'd 'm \"'s\" x's y'S 'sss",
    "whitespace": "a  b   c    d\t\te \t \tf   \n  \n\n\n   g\r\nh\r\n\r\n  \u00a0 \u3000x\u2028y   ",
    "trailing": "trailing spaces   ",
    "only_spaces": "     ",
    "newlines": "\n\n\n\n",
    "leading": "   leading and\ttabs",
    "crlf": "line one\r\nline two\r\n\r\nline four\r\n",
    "digits": "0 1 12 123 1234 12345 3.14159265358979 1e-10 -42 +7 100,000,000 0x1F 2024-01-31",
    "long_number": "".join(str(i) for i in range(200)),
    "combining": "e\u0301 a\u0300 n\u0303 Zalgo: Z\u0351\u0364\u0300a\u0350\u0357l\u0310g\u0352o\u0346 Åström café naïve",
    "emoji": "Hi 😀😃😄! 👍🏽 👍🏿 family: 👨‍👩‍👧‍👦 flag: 🇫🇷 heart: ❤️ 🏳️‍🌈 ok👌end",
    "cjk": "漢字かなカナ、日本語のテキスト。中文文本测试。한국어 텍스트입니다.",
    "arabic_hindi": "مرحبا بالعالم ١٢٣ — नमस्ते दुनिया १२३ – עברית",
    "mixed_scripts": "Hello世界Привет мир Γειά σου Κόσμε123abc😀def",
    "long_word": "Pneumonoultramicroscopicsilicovolcanoconiosis " + "a" * 300 + " " + "ab" * 200,
    "punctuation": "!!!??? ... --- *** ((())) <<<>>> @@@ ### $$$ %%% ^^^ &&& ~~~ `backticks` \\slashes//",
    "eot_inside": f"before{EOT}after {EOT} {EOT}{EOT}\n<|endoftext| <|endoftext|>>",
    "control": "".join(map(chr, range(32))) + "\x7f\x80\x9f",
    "random_1": _random_text(1, 400),
    "random_2": _random_text(2, 400),
    "random_3": _random_text(3, 2000),
}
CASES = list(CORPUS)


# ---- references -----------------------------------------------------------

@pytest.fixture(scope="module")
def tok():
    return Tokenizer.gpt2()


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    return oracle.tiktoken_gpt2()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_vocab_merges")
    shutil.copy(DATA / "encoder.json", folder / "vocab.json")
    merges = (DATA / "vocab.bpe").read_text(encoding="utf-8")
    assert merges.startswith("#version: 0.2\n")  # the header HF's merges.txt carries too
    (folder / "merges.txt").write_text(merges, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def hf_gpt2(hf_folder):
    transformers = pytest.importorskip("transformers", reason="transformers is a second reference")
    return transformers.GPT2Tokenizer.from_pretrained(str(hf_folder))


def openai_bpe(word: str, ranks: dict) -> list[str]:
    """OpenAI's encoder.py loop, verbatim in spirit: the spec for Tokenizer._bpe."""
    symbols = list(word)
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def _first_mismatch(a: list[int], b: list[int]) -> str:
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first mismatch at {k}: {a[k:k + 8]} vs {b[k:k + 8]} (lengths {len(a)}, {len(b)})"


# ---- exactness ----------------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_encode_matches_tiktoken(tok, tiktoken_gpt2, name):
    text = CORPUS[name]
    ours, ref = tok.encode(text), tiktoken_gpt2.encode_ordinary(text)
    assert ours == ref, _first_mismatch(ours, ref)
    ours, ref = tok.encode(text, allowed_special="all"), tiktoken_gpt2.encode(text, allowed_special="all")
    assert ours == ref, _first_mismatch(ours, ref)


@pytest.mark.parametrize("name", CASES)
def test_decode_matches_tiktoken_and_round_trips(tok, tiktoken_gpt2, name):
    text = CORPUS[name]
    ids = tok.encode(text)
    assert tok.decode(ids) == tiktoken_gpt2.decode(ids) == text
    assert tok.decode_bytes(ids) == tiktoken_gpt2.decode_bytes(ids) == text.encode("utf-8")


@pytest.mark.parametrize("name", CASES)
def test_encode_matches_transformers(tok, hf_gpt2, name):
    # HF always splits out its special tokens, i.e. allowed_special="all".
    text = CORPUS[name]
    ours, ref = tok.encode(text, allowed_special="all"), hf_gpt2.encode(text, add_special_tokens=False)
    assert ours == ref, _first_mismatch(ours, ref)


def test_decode_of_invalid_utf8_matches_tiktoken(tok, tiktoken_gpt2):
    rng = random.Random(7)
    for _ in range(200):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 12))]
        assert tok.decode(ids) == tiktoken_gpt2.decode(ids), ids


def test_surrogates_follow_tiktoken(tok, tiktoken_gpt2):
    # A surrogate pair joins into its character; a lone surrogate becomes U+FFFD.
    for text in ["\ud83d\ude00", "a\ud800b", "x\udcff", "\ud83d\ude00\ud83d"]:
        assert tok.encode(text) == tiktoken_gpt2.encode_ordinary(text), repr(text)


def test_bpe_matches_openai_loop_on_every_token(tok):
    # Every vocabulary entry as one word: the widest set of merge paths there is.
    ranks = tok._ranks
    for token in tok._vocab:
        if token not in tok.special_tokens:
            assert tok._bpe(token) == openai_bpe(token, ranks), token


def _toy_tokenizer(merges: list[tuple[str, str]]) -> Tokenizer:
    alphabet = list(bytes_to_unicode().values())
    vocab = {t: i for i, t in enumerate(dict.fromkeys(alphabet + [a + b for a, b in merges]))}
    return Tokenizer(vocab, merges, source="toy")


def test_bpe_applies_one_rank_per_pass():
    # ("AB", "A") outranks ("A", "B") although it needs its result. OpenAI's
    # loop merges every A B first, so "ABAB" -> AB AB; a plain heap that
    # merged the new AB+A pair right away would give ABA B.
    toy = _toy_tokenizer([("AB", "A"), ("A", "B")])
    assert toy._bpe("ABAB") == openai_bpe("ABAB", toy._ranks) == ["AB", "AB"]


@pytest.mark.parametrize("seed", range(5))
def test_bpe_matches_openai_loop_on_random_toy_merges(seed):
    # Random merges over 3 letters in random order, so new pairs often
    # outrank the pass in progress (a plain heap fails most seeds).
    rng = random.Random(seed)
    letters = "ABC"
    pieces, merges = list(letters), []
    while len(merges) < 40:
        a, b = rng.choice(pieces), rng.choice(pieces)
        if (a, b) not in merges and len(a + b) <= 6:
            merges.append((a, b))
            pieces.append(a + b)
    rng.shuffle(merges)
    toy = _toy_tokenizer(merges)
    for _ in range(1000):
        word = "".join(rng.choice(letters) for _ in range(rng.randrange(1, 30)))
        assert toy._bpe(word) == openai_bpe(word, toy._ranks), word


# ---- special tokens -------------------------------------------------------

def test_endoftext_is_text_unless_allowed(tok):
    text = f"a{EOT}b"
    ordinary = tok.encode(text)
    assert 50256 not in ordinary
    assert tok.decode(ordinary) == text
    for allowed in ("all", [EOT], {EOT}, EOT):
        assert tok.encode(text, allowed_special=allowed) == tok.encode("a") + [50256] + tok.encode("b")
    assert tok.decode([50256]) == EOT


def test_unknown_special_token_is_refused(tok):
    with pytest.raises(TokenizerError, match=r"<\|startoftext\|>"):
        tok.encode("x", allowed_special={"<|startoftext|>"})


def test_vocabulary_accessors(tok):
    assert tok.vocab_size == 50257
    assert (tok.eos_token, tok.eos_token_id) == (EOT, 50256)
    assert tok.special_tokens == {EOT: 50256}
    assert tok.id_to_token(220) == "Ġ" and tok.id_to_token(198) == "Ċ"
    assert tok.token_to_id("Ġthe") == 262 and tok.id_to_token(262) == "Ġthe"
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        tok.token_to_id("no such token")


# ---- file formats ---------------------------------------------------------

def _write_formats(root: Path, hf_folder: Path) -> dict[str, Path]:
    """The same tokenizer in each layout from_pretrained reads."""
    folders = {"vocab.json+merges.txt": hf_folder, "encoder.json+vocab.bpe": root / "openai"}
    folders["encoder.json+vocab.bpe"].mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(DATA / name, folders["encoder.json+vocab.bpe"] / name)

    transformers = pytest.importorskip("transformers", reason="writes tokenizer.json")
    hf_json = root / "hf_json"
    transformers.GPT2Tokenizer.from_pretrained(str(hf_folder)).save_pretrained(str(hf_json))
    folders["tokenizer.json (list merges)"] = hf_json

    # Older tokenizers releases wrote merges as "a b" strings; keep both readable.
    obj = json.loads((hf_json / "tokenizer.json").read_text(encoding="utf-8"))
    assert isinstance(obj["model"]["merges"][0], list)
    obj["model"]["merges"] = [" ".join(m) for m in obj["model"]["merges"]]
    (root / "legacy").mkdir()
    (root / "legacy" / "tokenizer.json").write_text(json.dumps(obj), encoding="utf-8")
    folders["tokenizer.json (string merges)"] = root / "legacy"
    return folders


def test_every_format_gives_identical_ids(tok, hf_folder, tmp_path):
    folders = _write_formats(tmp_path, hf_folder)
    text = "".join(CORPUS.values())
    expected = tok.encode(text, allowed_special="all")
    for label, folder in folders.items():
        loaded = Tokenizer.from_pretrained(folder)
        assert loaded.encode(text, allowed_special="all") == expected, label
        assert (loaded.vocab_size, loaded.eos_token_id, loaded.special_tokens) == (50257, 50256, {EOT: 50256}), label
    # A path to one of the files picks that file's layout.
    assert Tokenizer.from_pretrained(folders["tokenizer.json (list merges)"] / "tokenizer.json").encode(text) == tok.encode(text)
    assert Tokenizer.from_pretrained(hf_folder / "merges.txt").encode(text) == tok.encode(text)


def test_missing_files_name_folder_and_expected_files(tmp_path):
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_pretrained(tmp_path)
    for name in (str(tmp_path), "vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "tokenizer.json"):
        assert name in str(err.value)
    shutil.copy(DATA / "encoder.json", tmp_path / "vocab.json")
    with pytest.raises(TokenizerError, match="found vocab.json without its partner"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(TokenizerError, match="no such folder and not a bundled model"):
        Tokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(TokenizerError, match="not a tokenizer file"):
        (tmp_path / "model.bin").write_bytes(b"")
        Tokenizer.from_pretrained(tmp_path / "model.bin")


def _pair_folder(tmp_path: Path, vocab_text: str, merges_text: str) -> Path:
    (tmp_path / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges_text, encoding="utf-8")
    return tmp_path


def test_malformed_files_are_named(tmp_path):
    vocab_text = (DATA / "encoder.json").read_text(encoding="utf-8")
    merges_text = (DATA / "vocab.bpe").read_text(encoding="utf-8")

    _pair_folder(tmp_path, vocab_text[:1000], merges_text)
    with pytest.raises(TokenizerError, match=r"vocab\.json: not valid JSON"):
        Tokenizer.from_pretrained(tmp_path)

    _pair_folder(tmp_path, '{"a": "1"}', merges_text)
    with pytest.raises(TokenizerError, match=r"vocab\.json: token 'a' has id '1'"):
        Tokenizer.from_pretrained(tmp_path)

    _pair_folder(tmp_path, vocab_text[:-1] + ', "": 50257}', merges_text)   # would match everywhere
    with pytest.raises(TokenizerError, match=r"vocab\.json: the empty string is not a token"):
        Tokenizer.from_pretrained(tmp_path)

    _pair_folder(tmp_path, vocab_text, merges_text.replace("Ġ t\n", "Ġ t x\n", 1))
    with pytest.raises(TokenizerError, match=r"merges\.txt line 2: expected two tokens"):
        Tokenizer.from_pretrained(tmp_path)

    _pair_folder(tmp_path, vocab_text, merges_text + "Ġthe Ġthe\n")
    with pytest.raises(TokenizerError, match=r"merges\.txt: merge #50001 'Ġthe' 'Ġthe' makes 'ĠtheĠthe', which has no id"):
        Tokenizer.from_pretrained(tmp_path)

    (tmp_path / "vocab.json").unlink()
    (tmp_path / "merges.txt").unlink()
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "WordPiece", "vocab": {}}}', encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: expected a BPE 'model' section, got 'WordPiece'"):
        Tokenizer.from_pretrained(tmp_path)


# ---- decoding and streaming -------------------------------------------------

def test_out_of_range_ids_are_refused(tok):
    for bad in (50257, -1, 10**9):
        with pytest.raises(TokenizerError, match=rf"token id {bad} is out of range for vocab_size 50257"):
            tok.decode([15496, bad])
    with pytest.raises(TypeError, match="not an integer"):
        tok.decode([1.5])
    with pytest.raises(TypeError, match="bool"):                 # Model.forward refuses them too
        tok.decode([True])
    with pytest.raises(TokenizerError, match="out of range"):
        tok.decoder().push(50257)
    with pytest.raises(TokenizerError, match="out of range"):
        tok.id_to_token(50257)


@pytest.mark.parametrize("name", ["emoji", "cjk", "arabic_hindi", "combining", "random_3"])
def test_incremental_decoder_streams_whole_characters(tok, name):
    ids = tok.encode(CORPUS[name])
    dec = tok.decoder()
    assert isinstance(dec, IncrementalDecoder)
    pieces = [dec.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + dec.flush() == tok.decode(ids) == CORPUS[name]
    held = sum(1 for p in pieces if p == "")
    print(f"{name}: {len(ids)} tokens, {held} pushes held back a partial character")


def test_incremental_decoder_equals_decode_on_random_ids(tok):
    rng = random.Random(11)
    dec = tok.decoder()
    for _ in range(300):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(0, 10))]
        streamed = "".join(dec.push(i) for i in ids) + dec.flush()  # flush also resets
        assert streamed == tok.decode(ids), ids


def test_flush_replaces_an_incomplete_tail(tok):
    ids = tok.encode("😀")
    assert len(ids) > 1
    dec = tok.decoder()
    assert dec.push(ids[0]) == ""
    assert dec.flush() == "\ufffd"


# ---- speed ------------------------------------------------------------------

# Generous for a shared 2-core machine; typical is ~0.1 s for prose.
ENCODE_100KB_BUDGET_S = 3.0


@pytest.mark.parametrize("kind", ["prose", "one_long_word"])
def test_encode_100kb_is_fast(kind):
    text = (CORPUS["prose"] + CORPUS["code"] + CORPUS["cjk"]) * 600 if kind == "prose" else "ab" * 50_000
    text = text[:100_000]
    tok = Tokenizer.gpt2()  # fresh cache: measure BPE work, not cache hits
    start = time.perf_counter()
    ids = tok.encode(text)
    seconds = time.perf_counter() - start
    print(f"{kind}: {len(text)} chars -> {len(ids)} tokens in {seconds:.3f} s")
    assert seconds < ENCODE_100KB_BUDGET_S
