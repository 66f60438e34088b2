"""GPT-2 byte-level BPE tokenizer, exact to OpenAI's encoder and tiktoken's "gpt2".

Purpose: turn text into GPT-2 token ids and back, offline, from OpenAI's files
(a copy ships in fastgpt/data/gpt2) or any GPT-2-style folder in Hugging Face
layout. The pipeline is the original one:

    split off allowed special tokens -> regex pre-tokenizer -> UTF-8 bytes
    -> byte-level alphabet (bytes_to_unicode) -> BPE merges by rank -> ids

Letters and digits (the pre-tokenizer's classes of letters and of numbers) are those of the
Unicode tables of the installed `regex` package, as in OpenAI's encoder. tiktoken's tables are
older, so the two split text differently around code points assigned in the newest Unicode
versions (U+3303E, U+0558, ...), which no text of GPT-2's day contains; everywhere else they
agree (tests/test_fuzz.py).

Non-goals: training, other families (SentencePiece, WordPiece, tiktoken's
newer encodings), normalizers, add_prefix_space, BPE dropout, batching,
padding and truncation. From tokenizer.json only the BPE model and
added_tokens are read; the pre-tokenizer is assumed to be GPT-2's.
"""

from __future__ import annotations

import codecs
import copy
import functools
import heapq
import operator
from collections.abc import Iterable
from pathlib import Path

import regex

from . import jsonfile
from .jsonfile import short_repr

# OpenAI's encoder.py pattern. tiktoken spells it with possessive quantifiers
# and a `\s++$` branch for speed; the splits are identical (the tests check).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

EOS_TOKEN = "<|endoftext|>"

# File sets from_pretrained understands, in the order it tries them.
_LAYOUTS = (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"), ("tokenizer.json",))

# Words kept in the per-tokenizer BPE cache; clearing it only costs speed.
_CACHE_MAX = 100_000
# Token ids are C ints in the model; a GPT-2 vocabulary is dense (ids 0..V-1), but unused ids
# are tolerated (a small vocabulary that keeps GPT-2's 50256 for <|endoftext|>), up to this
# many beyond twice the entries: tables by id are sized by the largest id, a number from the file.
_MAX_ID = 2**31 - 1
_SPARE_IDS = 65_536


class TokenizerError(ValueError):
    """Missing or malformed tokenizer files, unknown special tokens, bad token ids."""


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's map from each byte to a printable stand-in character.

    BPE files are text, so every byte needs a visible, non-space symbol.
    Printable Latin-1 bytes stand for themselves; the other 68 (controls,
    space, 0x7F-0xA0, 0xAD) move to U+0100 and up in byte order, so b" " is
    "Ġ" and b"\\n" is "Ċ".
    """
    keep = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    shifted = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(shifted)) for b in range(256)}


class Tokenizer:
    """Byte-level BPE over a vocabulary (token string -> id) and ranked merges.

    Vocabulary entries that BPE can never produce (neither a single byte
    symbol nor a merge result), such as "<|endoftext|>", are special tokens:
    encode emits them only when named in allowed_special.
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], *, source: str = "vocabulary"):
        alphabet = bytes_to_unicode()
        missing = [c for c in alphabet.values() if c not in vocab]
        if missing:
            raise TokenizerError(f"{source}: no id for byte symbols {missing[:8]!r} (all 256 are needed)")
        self._ranks: dict[tuple[str, str], int] = {}
        for rank, (a, b) in enumerate(merges):
            if (a, b) in self._ranks:
                raise TokenizerError(f"{source}: merge #{rank + 1} {short_repr(a)} {short_repr(b)} repeats merge #{self._ranks[a, b] + 1}")
            if a + b not in vocab:
                raise TokenizerError(f"{source}: merge #{rank + 1} {short_repr(a)} {short_repr(b)} makes "
                                     f"{short_repr(a + b)}, which has no id")
            self._ranks[a, b] = rank

        reachable = set(alphabet.values()) | {a + b for a, b in self._ranks}
        byte_of = {c: b for b, c in alphabet.items()}
        top = max(vocab.values())
        if top >= 2 * len(vocab) + _SPARE_IDS:
            raise TokenizerError(f"{source}: largest id {top} for {len(vocab)} tokens; ids must number the "
                                 "vocabulary from 0 with few gaps")
        self._vocab = dict(vocab)
        self._special: dict[str, int] = {}
        self._tokens: list[str | None] = [None] * (top + 1)
        self._bytes: list[bytes | None] = [None] * len(self._tokens)
        for token, i in vocab.items():
            if self._tokens[i] is not None:
                raise TokenizerError(f"{source}: id {i} is given to both {short_repr(self._tokens[i])} and "
                                     f"{short_repr(token)}")
            if token in reachable:
                try:
                    self._bytes[i] = bytes(byte_of[c] for c in token)
                except KeyError as e:
                    raise TokenizerError(f"{source}: merged token {short_repr(token)} has {e.args[0]!r}, "
                                         "which is not in GPT-2's byte-level alphabet") from None
            else:
                self._special[token] = i
                self._bytes[i] = token.encode("utf-8")
            self._tokens[i] = token

        # As a str.translate table it maps a Latin-1-decoded byte string to byte symbols.
        self._byte_table = alphabet
        self._pattern = regex.compile(GPT2_PATTERN)
        self._cache: dict[str, list[int]] = {}

    # ---- loading ---------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        """Load from a folder holding vocab.json + merges.txt, encoder.json +
        vocab.bpe, or tokenizer.json (tried in that order), from one of
        those files directly, or by a bundled model's name."""
        path = Path(path)
        if path.is_file():
            folder, layouts = path.parent, [lay for lay in _LAYOUTS if path.name in lay]
            if not layouts:
                raise TokenizerError(f"{path}: not a tokenizer file; expected one of "
                                     + ", ".join(name for lay in _LAYOUTS for name in lay))
        elif path.is_dir():
            folder, layouts = path, list(_LAYOUTS)
        else:
            from .registry import ModelNotFoundError, resolve_model_path

            try:  # a bundled model's name
                folder, layouts = resolve_model_path(str(path)), list(_LAYOUTS)
            except ModelNotFoundError as exc:
                raise TokenizerError(str(exc)) from None

        for layout in layouts:
            files = [folder / name for name in layout]
            if all(f.is_file() for f in files):
                vocab, merges = _read_tokenizer_json(files[0]) if len(files) == 1 else _read_pair(*files)
                return cls(vocab, merges, source=" + ".join(map(str, files)))
        looked = "; ".join(" + ".join(lay) for lay in layouts)
        partial = [f"found {f} without its partner" for lay in layouts if len(lay) == 2
                   for f in lay if (folder / f).is_file()]
        raise TokenizerError(f"no GPT-2 tokenizer files in {folder}: looked for {looked}"
                             + (f" ({', '.join(partial)})" if partial else ""))

    @classmethod
    def from_files(cls, vocab_file: str | Path, merges_file: str | Path) -> Tokenizer:
        """Load a vocabulary and merges pair under any file names (vocab.json + merges.txt
        or encoder.json + vocab.bpe formats)."""
        files = Path(vocab_file), Path(merges_file)
        return cls(*_read_pair(*files), source=" + ".join(map(str, files)))

    @classmethod
    def gpt2(cls) -> Tokenizer:
        """OpenAI's GPT-2 tokenizer from the copy bundled with fastgpt."""
        return cls.from_pretrained(Path(__file__).parent / "data" / "gpt2")

    # ---- vocabulary ------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def eos_token(self) -> str | None:
        return EOS_TOKEN if EOS_TOKEN in self._vocab else None

    @property
    def eos_token_id(self) -> int | None:
        return self._vocab.get(EOS_TOKEN)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The BPE merges in rank order (what merges.txt lists)."""
        return list(self._ranks)

    def id_to_token(self, i: int) -> str:
        self._token_bytes(i)  # validates
        return self._tokens[i]

    def token_to_id(self, token: str) -> int:
        try:
            return self._vocab[token]
        except KeyError:
            raise TokenizerError(f"token {token!r} is not in the vocabulary") from None

    def with_added_tokens(self, tokens: Iterable[str]) -> Tokenizer:
        """A copy in which each of ``tokens`` is one more special token: encoded as a single
        id wherever it occurs (when allowed, as the others), decoded as its own text. A token
        already in the vocabulary keeps its id; a new one takes the next id (the vocabulary
        grows by one). ``self`` is unchanged, so a tokenizer in use elsewhere never sees a
        vocabulary change mid-call."""
        new = copy.copy(self)
        new._vocab, new._special = dict(self._vocab), dict(self._special)
        new._tokens, new._bytes = list(self._tokens), list(self._bytes)
        new._cache = {}
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise TokenizerError(f"added tokens must be non-empty strings, got {token!r}")
            i = new._vocab.get(token)
            if i is None:
                i = len(new._tokens)
                new._vocab[token] = i
                new._tokens.append(token)
                new._bytes.append(token.encode("utf-8"))
            new._special[token] = i
        return new

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self._ranks)}, special={sorted(self._special)})"

    # ---- encoding --------------------------------------------------------

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Token ids for text. Special tokens in the text are ordinary text
        unless listed in allowed_special (an iterable of names, or "all")."""
        if not isinstance(text, str):
            raise TypeError(f"encode: text must be str, got {type(text).__name__}")
        text = _pair_surrogates(text)
        allowed = self._allowed(allowed_special)
        if not allowed:
            return self._encode_ordinary(text)
        ids, start = [], 0
        for m in _special_pattern(allowed).finditer(text):
            ids += self._encode_ordinary(text[start:m.start()])
            ids.append(self._special[m.group()])
            start = m.end()
        return ids + self._encode_ordinary(text[start:])

    def _allowed(self, allowed_special: Iterable[str] | str) -> frozenset[str]:
        if allowed_special == "all":
            return frozenset(self._special)
        names = frozenset([allowed_special] if isinstance(allowed_special, str) else allowed_special)
        unknown = names - self._special.keys()
        if unknown:
            raise TokenizerError(f"allowed_special: {sorted(unknown)!r} are not special tokens here; "
                                 f"known: {sorted(self._special)!r}")
        return names

    def _encode_ordinary(self, text: str) -> list[int]:
        ids, cache = [], self._cache
        for word in self._pattern.findall(text):
            word_ids = cache.get(word)
            if word_ids is None:
                symbols = word.encode("utf-8").decode("latin-1").translate(self._byte_table)
                word_ids = [self._vocab[t] for t in self._bpe(symbols)]
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[word] = word_ids
            ids += word_ids
        return ids

    def _bpe(self, word: str) -> list[str]:
        """OpenAI's BPE: merge the lowest-ranked adjacent pair, every
        occurrence left to right, until no pair has a rank.

        A heap of (rank, position) over a linked list of symbols keeps long
        words (a 100 KB run of letters) near O(n log n) instead of the
        original O(n^2). Each round pops all entries of the lowest rank and
        applies them left to right, which is exactly one pass of the original
        loop; entries whose pair has changed since they were pushed are stale.
        """
        ranks, n = self._ranks, len(word)
        syms = list(word)                 # symbol starting at each position; "" once absorbed
        nxt = list(range(1, n + 1))       # position of the next live symbol (n = end)
        prv = list(range(-1, n - 1))      # position of the previous live symbol (-1 = start)
        heap = [(ranks[p], i) for i, p in enumerate(zip(word, word[1:])) if p in ranks]
        heapq.heapify(heap)
        while heap:
            rank = heap[0][0]
            batch = []
            while heap and heap[0][0] == rank:
                batch.append(heapq.heappop(heap)[1])  # pops in position order
            for i in batch:
                j = nxt[i]
                if not syms[i] or j == n or ranks.get((syms[i], syms[j])) != rank:
                    continue  # stale
                syms[i] += syms[j]
                syms[j] = ""
                nxt[i] = nxt[j]
                if nxt[i] < n:
                    prv[nxt[i]] = i
                    if (r := ranks.get((syms[i], syms[nxt[i]]))) is not None:
                        heapq.heappush(heap, (r, i))
                if prv[i] >= 0 and (r := ranks.get((syms[prv[i]], syms[i]))) is not None:
                    heapq.heappush(heap, (r, prv[i]))
        return [s for s in syms if s]

    # ---- decoding --------------------------------------------------------

    def _token_bytes(self, i: int) -> bytes:
        if isinstance(i, bool):                         # an int to Python, but no token id
            raise TypeError(f"token id {i!r} is a bool, not an integer")
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"token id {i!r} is not an integer ({type(i).__name__})") from None
        if not 0 <= i < len(self._bytes):
            raise TokenizerError(f"token id {i} is out of range for vocab_size {len(self._bytes)}")
        if self._bytes[i] is None:
            raise TokenizerError(f"token id {i} has no token in this vocabulary (a gap in the ids)")
        return self._bytes[i]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join([self._token_bytes(i) for i in ids])

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ids; bytes that are not valid UTF-8 become U+FFFD (as in tiktoken)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self)


class IncrementalDecoder:
    """Streams ids to text without splitting a character across pieces.

    One GPT-2 token can hold part of a UTF-8 character (an emoji is often 2-4
    tokens), so push() holds back an incomplete tail until later tokens
    complete it. Concatenating every push() and the final flush() equals
    Tokenizer.decode over all ids: Python's incremental UTF-8 decoder makes
    the same replacements as the one-shot decode.
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Text completed by this token (may be "")."""
        return self._utf8.decode(self._tokenizer._token_bytes(token_id))

    def flush(self) -> str:
        """The held-back tail, U+FFFD for each invalid part; resets the decoder."""
        return self._utf8.decode(b"", final=True)


# ---- helpers ---------------------------------------------------------------

def _pair_surrogates(text: str) -> str:
    """tiktoken's rule for text that UTF-8 cannot encode: join surrogate
    pairs (e.g. "\\ud83d\\ude00" from a UTF-16 source) and replace lone
    surrogates with U+FFFD, rather than fail mid-encode."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@functools.lru_cache(maxsize=32)
def _special_pattern(names: frozenset[str]) -> regex.Pattern:
    # Longest first, so a special token that extends another one wins.
    return regex.compile("|".join(regex.escape(s) for s in sorted(names, key=lambda s: (-len(s), s))))


def _read_text(file: Path) -> str:
    return jsonfile.read_text(file, TokenizerError)


def _read_json(file: Path):
    return jsonfile.read_json(file, TokenizerError)


def _check_vocab(vocab, where: str) -> dict[str, int]:
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError(f"{where}: expected a non-empty JSON object of token -> id")
    for token, i in vocab.items():
        if token == "":                                 # it would match between every two characters
            raise TokenizerError(f"{where}: the empty string is not a token (id {short_repr(i)})")
        if type(i) is not int or not 0 <= i <= _MAX_ID:
            raise TokenizerError(f"{where}: token {short_repr(token)} has id {short_repr(i)}; ids must be "
                                 f"integers in [0, {_MAX_ID}]")
    return vocab


def _parse_merge(merge, where: str) -> tuple[str, str]:
    parts = merge.split(" ") if isinstance(merge, str) else merge
    if not isinstance(parts, (list, tuple)) or len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
        raise TokenizerError(f"{where}: expected two tokens ('a b' or [a, b]), got {short_repr(merge)}")
    return tuple(parts)


def _check_merges(merges: list, where: str) -> list[tuple[str, str]]:
    # Without merges every word is split into single bytes: not a GPT-2 tokenizer, and most
    # likely a truncated or wrong file.
    if not merges:
        raise TokenizerError(f"{where}: no merges; a GPT-2 tokenizer has BPE merges (50,000 for GPT-2's own)")
    return merges


def _read_pair(vocab_file: Path, merges_file: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab.json + merges.txt, or OpenAI's encoder.json + vocab.bpe (same formats)."""
    vocab = _check_vocab(_read_json(vocab_file), str(vocab_file))
    merges = []
    for n, line in enumerate(_read_text(merges_file).split("\n"), 1):
        line = line.rstrip("\r")  # "\r" is never a byte symbol, so CRLF files are safe
        if line and not (n == 1 and line.startswith("#version")):
            merges.append(_parse_merge(line, f"{merges_file} line {n}"))
    return vocab, _check_merges(merges, str(merges_file))


def _check_gpt2_pipeline(obj: dict, file: Path) -> None:
    """Refuse tokenizer.json settings that would change the ids, rather than
    silently tokenizing differently from the model's own tokenizer."""
    model, pre = obj["model"], obj.get("pre_tokenizer")
    odd = [f"model.{key}" for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges")
           if model.get(key)]
    if obj.get("normalizer") is not None:
        odd.append("normalizer")
    if pre is not None and not (isinstance(pre, dict) and pre.get("type") == "ByteLevel"
                                and not pre.get("add_prefix_space") and pre.get("use_regex", True)):
        odd.append("pre_tokenizer (GPT-2 uses ByteLevel, add_prefix_space=false, use_regex=true)")
    if odd:
        raise TokenizerError(f"{file}: not GPT-2's plain byte-level BPE; unsupported: {', '.join(odd)}")


def _read_tokenizer_json(file: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Hugging Face tokenizer.json: model.vocab, model.merges, added_tokens."""
    obj = _read_json(file)
    model = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else None
        raise TokenizerError(f"{file}: expected a BPE 'model' section, got {short_repr(kind)}")
    _check_gpt2_pipeline(obj, file)
    vocab = dict(_check_vocab(model.get("vocab"), f"{file} model.vocab"))
    if not isinstance(model.get("merges"), list):
        raise TokenizerError(f"{file}: model.merges must be a list")
    merges = [_parse_merge(m, f"{file} model.merges[{k}]") for k, m in enumerate(model["merges"])]
    _check_merges(merges, f"{file} model.merges")
    added_tokens = obj.get("added_tokens") or []
    if not isinstance(added_tokens, list):
        raise TokenizerError(f"{file}: added_tokens must be a list, got {type(added_tokens).__name__}")
    for k, added in enumerate(added_tokens):
        where = f"{file} added_tokens[{k}]"
        if not isinstance(added, dict) or not isinstance(added.get("content"), str):
            raise TokenizerError(f"{where}: expected an object with 'content' and 'id'")
        token, i = added["content"], added.get("id")
        _check_vocab({token: i}, where)
        if vocab.setdefault(token, i) != i:
            raise TokenizerError(f"{where}: {short_repr(token)} has id {i} but model.vocab gives {vocab[token]}")
    return vocab, merges
