"""transformers' GPT-2 tokenizer (``GPT2Tokenizer`` / ``GPT2TokenizerFast``) over fastgpt's BPE.

The ids are fastgpt's exact GPT-2 byte-level BPE; around it this module gives the
tokenizer transformers documents: the constructor ``GPT2Tokenizer(vocab_file,
merges_file, errors=, unk_token=, bos_token=, eos_token=, pad_token=, add_prefix_space=)``,
special-token roles and ``add_special_tokens`` / ``add_tokens`` (the new tokens encode as
single ids), ``encode`` / ``__call__`` with text pairs, transformers 5's padding and
truncation rules (``stride`` windows and ``return_overflowing_tokens`` in the order the
``tokenizers`` library gives them), ``return_tensors`` and ``decode(errors=)``.

Defaults are transformers': no padding, no truncation unless ``max_length`` asks for it,
plain lists unless ``return_tensors`` is given. Differences: ``errors=`` is honoured when
decoding (transformers 5 accepts it but always replaces invalid UTF-8); offsets mappings and
chat templates are not provided.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import regex

from ...tokenizer import EOS_TOKEN, Tokenizer, TokenizerError
from . import hub
from ._tensors import as_output, check_device, check_return_tensors, to_numpy
from ._truncation import STRATEGIES, padded_length, truncate

VERY_LARGE_INTEGER = int(1e30)       # transformers' model_max_length when a folder sets none
_GPT2_MAX_LENGTH = 1024
ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_PADDING = {True: "longest", False: "do_not_pad", None: "do_not_pad", "longest": "longest",
            "max_length": "max_length", "do_not_pad": "do_not_pad"}
_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")


class BatchEncoding(dict):
    """The tokenizer's result: a dict of ``input_ids``, ``attention_mask``, ... that also allows
    ``enc.input_ids``; ``.to("cpu")`` is accepted as in transformers."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no {name!r} (keys: {', '.join(self)})") from None

    def to(self, device) -> "BatchEncoding":
        check_device(device, "BatchEncoding.to")
        return self

    def cpu(self) -> "BatchEncoding":
        return self


def _as_tensor(rows, return_tensors, what: str):
    if return_tensors is None:
        return rows
    if rows and isinstance(rows[0], list) and len({len(r) for r in rows}) > 1:
        raise ValueError(f"Unable to create tensor: the {what} rows have different lengths ({sorted({len(r) for r in rows})}); "
                         "activate padding (padding=True) and/or truncation (truncation=True)")
    return as_output(np.asarray(rows, dtype=np.int64).reshape(len(rows), -1) if rows and isinstance(rows[0], list)
                     else np.asarray(rows, dtype=np.int64), return_tensors == "pt")


def _truncation_strategy(truncation, max_length, padding) -> str:
    if truncation is None:
        # transformers: a max_length without padding or truncation truncates (with a warning).
        return "longest_first" if max_length is not None and padding == "do_not_pad" else "do_not_truncate"
    if truncation is True:
        return "longest_first"
    if truncation is False:
        return "do_not_truncate"
    if truncation not in STRATEGIES:
        raise ValueError(f"truncation must be True, False or one of {', '.join(STRATEGIES)}, got {truncation!r}")
    return truncation


def _role_property(role: str) -> property:
    """A special-token role: setting it only names the token (as transformers), adding nothing."""
    def get(self):
        return self._roles[role]

    def set(self, token):
        self._roles[role] = None if token is None else str(token)
    return property(get, set)


def _role_id_property(role: str) -> property:
    def get(self):
        token = self._roles[role]
        return None if token is None else self.convert_tokens_to_ids(token)

    def set(self, token_id):
        self._roles[role] = None if token_id is None else self._backend.id_to_token(int(token_id))
    return property(get, set)


@functools.lru_cache(maxsize=32)
def _split_pattern(names: frozenset[str]) -> regex.Pattern:
    # Longest first, so that a token that extends another one wins (as the tokenizers library).
    ordered = sorted(names, key=lambda t: (-len(t), t))
    return regex.compile("(" + "|".join(map(regex.escape, ordered)) + ")" if ordered else "(?!)")


class GPT2Tokenizer:
    """transformers' GPT-2 tokenizer; ``GPT2TokenizerFast`` is the same class (as in transformers 5)."""

    vocab_files_names = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
    model_input_names = ["input_ids", "attention_mask"]
    is_fast = True

    def __init__(self, vocab_file=None, merges_file=None, errors: str = "replace", unk_token=EOS_TOKEN,
                 bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=None, add_prefix_space: bool = False, *,
                 vocab=None, merges=None, model_max_length: int = VERY_LARGE_INTEGER, padding_side: str = "right",
                 truncation_side: str = "right", name_or_path: str = "", clean_up_tokenization_spaces: bool = False,
                 **special_tokens):
        """``vocab_file`` / ``merges_file``: paths to vocab.json and merges.txt (or
        transformers 5's ``vocab=`` dict / path and ``merges=`` list / path). A special token
        that is not in the vocabulary is added to it, as transformers does. Other keyword
        arguments: the remaining roles (``cls_token``, ``sep_token``, ``mask_token``,
        ``additional_special_tokens``)."""
        self._backend, self.vocab_size = self._load(vocab_file if vocab is None else vocab,
                                                    merges_file if merges is None else merges)
        self._added: dict[str, bool] = {}        # added token -> special?
        self._roles: dict[str, str | None] = dict.fromkeys(ROLES)
        self._extra_special: list[str] = []
        for key in ("add_bos_token", "add_eos_token"):
            if special_tokens.pop(key, False):
                raise ValueError(f"{key}=True is not supported: GPT-2 adds no special tokens when encoding")
        unknown = sorted(set(special_tokens) - set(ROLES) - {"additional_special_tokens"})
        if unknown:
            raise TypeError(f"GPT2Tokenizer: unsupported argument(s) {', '.join(unknown)}")
        self.errors = errors
        self.add_prefix_space = bool(add_prefix_space)
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.name_or_path = name_or_path
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        roles = {"unk_token": unk_token, "bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token,
                 **{k: v for k, v in special_tokens.items() if k in ROLES}}
        self.add_special_tokens({**{k: v for k, v in roles.items() if v is not None},
                                 "additional_special_tokens": special_tokens.get("additional_special_tokens", [])})

    @staticmethod
    def _load(vocab, merges) -> tuple[Tokenizer, int]:
        if isinstance(vocab, Tokenizer):             # fastgpt's own tokenizer, as fastgpt 0.1 took it
            return vocab, vocab.vocab_size
        if vocab is None or merges is None:
            raise TypeError("GPT2Tokenizer needs vocab_file and merges_file (paths to vocab.json and merges.txt); "
                            "or use GPT2Tokenizer.from_pretrained(name_or_folder)")
        if isinstance(vocab, dict):
            pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
            tok = Tokenizer(vocab, pairs, source="GPT2Tokenizer(vocab=..., merges=...)")
        else:
            tok = Tokenizer.from_files(vocab, merges)
        return tok, tok.vocab_size

    @classmethod
    def from_pretrained(cls, name_or_path, *, cache_dir=None, revision=None, **kwargs) -> "GPT2Tokenizer":
        """GPT-2's bundled vocabulary for "gpt2", "distilgpt2", "gpt2-medium", "gpt2-large",
        "gpt2-xl" (and their openai-community/, distilbert/ names); otherwise the tokenizer
        files of a folder, a bundled model or a cached Hub name. ``kwargs`` override the
        folder's tokenizer_config.json (pad_token, padding_side, add_prefix_space, ...)."""
        from .loading import split_load_kwargs

        init = {k: kwargs.pop(k) for k in list(kwargs) if k in _INIT_KEYS}
        split_load_kwargs(f"{cls.__name__}.from_pretrained", kwargs, config_keys=False)
        name = str(name_or_path)
        if name in hub.GPT2_VOCAB_NAMES and not Path(name).is_dir():
            backend, saved = Tokenizer.gpt2(), {"model_max_length": _GPT2_MAX_LENGTH}
        else:
            folder = hub.resolve(name_or_path, cache_dir=cache_dir, revision=revision, needs="")
            backend, saved = Tokenizer.from_pretrained(folder), _read_tokenizer_config(folder)
        added = saved.pop("added_tokens_decoder", {})
        saved.update(init)
        tok = cls(backend, None, **saved)
        for _, entry in sorted(added.items(), key=lambda kv: int(kv[0])):
            tok._add([entry["content"]], special=bool(entry.get("special")))
        tok.name_or_path = name
        return tok

    def save_pretrained(self, save_directory) -> tuple[str, ...]:
        """vocab.json + merges.txt (the base vocabulary) and tokenizer_config.json (roles, added
        tokens, settings), which from_pretrained here and transformers read back."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        vocab = {self._backend.id_to_token(i): i for i in range(self.vocab_size)}
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges = "".join(f"{a} {b}\n" for a, b in self._backend.merges)
        (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
        config = {"tokenizer_class": "GPT2Tokenizer", "errors": self.errors, "add_prefix_space": self.add_prefix_space,
                  "model_max_length": self.model_max_length, "padding_side": self.padding_side,
                  "truncation_side": self.truncation_side,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
                  **{k: v for k, v in self._roles.items()},
                  "added_tokens_decoder": {str(self._backend.token_to_id(t)): {"content": t, "special": s}
                                           for t, s in self._added.items()},
                  "additional_special_tokens": list(self._extra_special)}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return tuple(str(folder / f) for f in ("tokenizer_config.json", "vocab.json", "merges.txt"))

    # -- special tokens -----------------------------------------------------------------------
    def add_special_tokens(self, special_tokens_dict: dict, replace_additional_special_tokens: bool = True) -> int:
        """Set special-token roles (``{"pad_token": "[PAD]", "additional_special_tokens": [...]}``);
        tokens not in the vocabulary are added to it. Returns how many were added."""
        special_tokens_dict = {("additional_special_tokens" if k == "extra_special_tokens" else k): v
                               for k, v in special_tokens_dict.items()}
        for key in special_tokens_dict:
            if key not in ROLES and key != "additional_special_tokens":
                raise ValueError(f"add_special_tokens: {key!r} is not a special-token role; roles: "
                                 f"{', '.join(ROLES)}, additional_special_tokens")
        before = len(self)
        for key, token in special_tokens_dict.items():
            if key == "additional_special_tokens":
                tokens = [str(t) for t in token]
                self._extra_special = (tokens if replace_additional_special_tokens
                                       else self._extra_special + [t for t in tokens if t not in self._extra_special])
                self._add(tokens, special=True)
            else:
                self._roles[key] = None if token is None else str(token)
                if token is not None:
                    self._add([str(token)], special=True)
        return len(self) - before

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens that encode as single ids wherever they occur; returns how many were new."""
        tokens = [new_tokens] if isinstance(new_tokens, str) else [str(t) for t in new_tokens]
        before = len(self)
        self._add(tokens, special=special_tokens)
        return len(self) - before

    def _add(self, tokens: list[str], special: bool) -> None:
        for t in tokens:
            self._added[t] = self._added.get(t, False) or special
        known = self._backend.special_tokens
        new = [t for t in tokens if t not in known]
        if new:
            self._backend = self._backend.with_added_tokens(new)

    bos_token = _role_property("bos_token")
    eos_token = _role_property("eos_token")
    unk_token = _role_property("unk_token")
    sep_token = _role_property("sep_token")
    pad_token = _role_property("pad_token")
    cls_token = _role_property("cls_token")
    mask_token = _role_property("mask_token")
    bos_token_id = _role_id_property("bos_token")
    eos_token_id = _role_id_property("eos_token")
    unk_token_id = _role_id_property("unk_token")
    sep_token_id = _role_id_property("sep_token")
    pad_token_id = _role_id_property("pad_token")
    cls_token_id = _role_id_property("cls_token")
    mask_token_id = _role_id_property("mask_token")

    @property
    def extra_special_tokens(self) -> list[str]:
        """The special tokens without a role (transformers 4's ``additional_special_tokens``)."""
        return list(self._extra_special)

    additional_special_tokens = extra_special_tokens

    @property
    def special_tokens_map(self) -> dict:
        return {k: v for k, v in self._roles.items() if v is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [v for v in self._roles.values() if v is not None] + self._extra_special
        tokens += [t for t, special in self._added.items() if special]
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {t: self._backend.token_to_id(t) for t in self._added}

    def __len__(self) -> int:
        return self._backend.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return {self._backend.id_to_token(i): i for i in range(len(self))}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"added={len(self) - self.vocab_size}, add_prefix_space={self.add_prefix_space}, "
                f"padding_side={self.padding_side!r}, special_tokens={self.special_tokens_map})")

    # -- text -> ids ------------------------------------------------------------------------------
    def _encode_text(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not self.add_prefix_space:
            return self._backend.encode(text, allowed_special="all")
        # As the tokenizers library: added tokens are split off first, then each other
        # non-empty piece gets a leading space unless it already has one.
        ids = []
        for k, piece in enumerate(_split_pattern(frozenset(self._backend.special_tokens)).split(text)):
            if k % 2:
                ids.append(self._backend.token_to_id(piece))
            elif piece:
                ids += self._backend.encode(piece if piece.startswith(" ") else " " + piece)
        return ids

    def _encode_input(self, text, is_split_into_words: bool) -> list[int]:
        if not is_split_into_words:
            return self._encode_text(text)
        if isinstance(text, str) or not all(isinstance(w, str) for w in text):
            raise TypeError("with is_split_into_words=True, each input must be a list of words (str)")
        return [i for word in text for i in self._encode_text(word)]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs) -> list[str]:
        """Byte-level token strings ("Ġworld" for " world"); added tokens as their own text."""
        ids = self._encode_text(text) + (self._encode_text(pair) if pair is not None else [])
        return [self._backend.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens):
        """One id for a str, a list for a list; unknown tokens give the unk id (as transformers)."""
        if isinstance(tokens, str):
            try:
                return self._backend.token_to_id(tokens)
            except TokenizerError:
                return None if self._roles["unk_token"] is None else self._backend.token_to_id(self._roles["unk_token"])
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, (int, np.integer)):
            return self._backend.id_to_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(i) for i in self._id_list(ids) if i not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        ids = []
        for token in tokens:
            try:
                ids.append(self._backend.token_to_id(token))
            except TokenizerError:
                raise TokenizerError(f"convert_tokens_to_string: {token!r} is not a token of this vocabulary") from None
        return self._decode_bytes(ids)

    # -- ids -> text ------------------------------------------------------------------------------
    @staticmethod
    def _id_list(token_ids) -> list[int]:
        arr = to_numpy(token_ids, "token_ids")
        if arr.ndim > 1:
            raise ValueError(f"decode takes one sequence of ids, got shape {arr.shape}; use batch_decode for several")
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
        return [int(i) for i in arr.reshape(-1)]

    def _decode_bytes(self, ids: list[int]) -> str:
        return self._backend.decode_bytes(ids).decode("utf-8", errors=self.errors)

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
               **kwargs) -> str:
        """Text for ids (an int, a list, an array or a tensor); invalid UTF-8 handled per
        ``errors`` (default "replace"). Tokenization spaces are never cleaned up: transformers 5
        refuses that for byte-level BPE too, as it corrupts text."""
        ids = self._id_list(token_ids)
        if skip_special_tokens:
            skip = set(self.all_special_ids)
            ids = [i for i in ids if i not in skip]
        return self._decode_bytes(ids)

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **kwargs) -> list[str]:
        return [self.decode(seq, skip_special_tokens=skip_special_tokens, **kwargs) for seq in sequences]

    # -- encode and __call__ ----------------------------------------------------------------------
    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
               max_length: int | None = None, stride: int = 0, padding_side: str | None = None,
               return_tensors: str | None = None, **kwargs):
        """The ids of ``text`` (followed by ``text_pair``'s), with ``__call__``'s padding and
        truncation rules; ``return_tensors`` gives a ``(1, seq)`` array or tensor."""
        kwargs["return_attention_mask"] = False
        enc = self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                   max_length=max_length, stride=stride, padding_side=padding_side, return_tensors=return_tensors,
                   **kwargs)
        return enc["input_ids"]

    def __call__(self, text=None, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
                 max_length: int | None = None, stride: int = 0, is_split_into_words: bool = False,
                 pad_to_multiple_of: int | None = None, padding_side: str | None = None,
                 return_tensors: str | None = None, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool | None = None, return_overflowing_tokens: bool = False,
                 return_special_tokens_mask: bool = False, return_offsets_mapping: bool = False,
                 return_length: bool = False, verbose: bool = True, **kwargs) -> BatchEncoding:
        """``input_ids`` and ``attention_mask`` for a str, a pair, or a batch of them.

        As transformers: no padding and no truncation by default (a ``max_length`` alone
        truncates); ``padding`` True/"longest", "max_length", False; ``truncation`` True /
        "longest_first", "only_first", "only_second", False; ``stride`` and
        ``return_overflowing_tokens`` give overlapping windows and ``overflow_to_sample_mapping``;
        ``return_tensors`` None (lists), "np" or "pt". A ragged batch with ``return_tensors``
        is an error, as is padding without a pad token.
        """
        old_name = kwargs.pop("truncation_strategy", None)       # pytorch-transformers' name of truncation=
        if truncation is None and old_name is not None:
            truncation = old_name
        unknown = sorted(set(kwargs) - {"split_special_tokens", "text_target"})
        if unknown:
            raise TypeError(f"{type(self).__name__}.__call__: unsupported argument(s) {', '.join(unknown)}")
        if return_offsets_mapping:
            raise ValueError("return_offsets_mapping is not supported by fastgpt's tokenizer (it keeps no "
                             "character offsets)")
        check_return_tensors(return_tensors)
        side = padding_side or self.padding_side
        if side not in ("left", "right") or self.truncation_side not in ("left", "right"):
            raise ValueError(f"padding_side and truncation_side must be 'left' or 'right', got {side!r} and "
                             f"{self.truncation_side!r}")
        if padding not in _PADDING:
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        pad_mode = _PADDING[padding]
        strategy = _truncation_strategy(truncation, max_length, pad_mode)
        if pad_mode != "do_not_pad" and self.pad_token is None:
            raise ValueError("Asking to pad but the tokenizer does not have a padding token. Set one, e.g. "
                             "`tokenizer.pad_token = tokenizer.eos_token`, or add one with "
                             "`tokenizer.add_special_tokens({'pad_token': '[PAD]'})`.")
        limit = self.model_max_length if max_length is None else max_length
        if pad_mode == "max_length" and limit >= VERY_LARGE_INTEGER:
            warnings.warn("padding='max_length' without max_length, and this tokenizer has no model_max_length: "
                          "no padding (as transformers)", UserWarning, stacklevel=2)
            pad_mode = "do_not_pad"

        batched = isinstance(text, (list, tuple)) and (not is_split_into_words or (text and not isinstance(text[0], str)))
        texts = list(text) if batched else [text]
        pairs = (list(text_pair) if batched else [text_pair]) if text_pair is not None else [None] * len(texts)
        if len(pairs) != len(texts):
            raise ValueError(f"text has {len(texts)} entries but text_pair has {len(pairs)}")

        rows, mapping = [], []
        for n, (t, p) in enumerate(zip(texts, pairs)):
            first = self._encode_input(t, is_split_into_words)
            second = None if p is None else self._encode_input(p, is_split_into_words)
            kept = truncate(first, second, strategy, limit, stride, self.truncation_side)
            if not return_overflowing_tokens:
                kept = kept[:1]
            rows += kept
            mapping += [n] * len(kept)

        ids = [f + (s or []) for f, s in rows]
        types = [[0] * len(f) + [1] * len(s or []) for f, s in rows]
        mask = [[1] * len(r) for r in ids]
        width = padded_length([len(r) for r in ids], pad_mode, limit, pad_to_multiple_of)
        if width is not None:
            pad_id = self.pad_token_id
            for k, r in enumerate(ids):
                n = width - len(r)
                if n > 0:
                    ids[k], mask[k], types[k] = _pad(side, n, (ids[k], pad_id), (mask[k], 0), (types[k], 0))
        out = {"input_ids": ids}
        if return_token_type_ids:
            out["token_type_ids"] = types
        if return_attention_mask is not False:
            out["attention_mask"] = mask
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [[0] * len(r) for r in ids]    # GPT-2 adds no special tokens
        if return_overflowing_tokens:
            out["overflow_to_sample_mapping"] = mapping
        if return_length:
            out["length"] = [len(r) for r in ids]
        single = not batched and not return_overflowing_tokens
        result = BatchEncoding()
        for key, value in out.items():
            if key in ("overflow_to_sample_mapping", "length"):
                result[key] = _as_tensor(value, return_tensors, key)
            elif single and return_tensors is None:
                result[key] = value[0]
            else:
                result[key] = _as_tensor(value, return_tensors, key)
        return result


def _pad(side: str, n: int, *columns) -> tuple[list, ...]:
    return tuple(([fill] * n + seq) if side == "left" else (seq + [fill] * n) for seq, fill in columns)


_INIT_KEYS = frozenset({"added_tokens_decoder", "errors", "unk_token", "bos_token", "eos_token", "pad_token", "add_prefix_space",
                        "model_max_length", "padding_side", "truncation_side", "clean_up_tokenization_spaces",
                        "additional_special_tokens", *ROLES})


def _read_tokenizer_config(folder: Path) -> dict:
    """The settings and roles of a folder's tokenizer_config.json / special_tokens_map.json."""
    saved = {"model_max_length": VERY_LARGE_INTEGER}
    for name in _TOKENIZER_FILES:
        file = folder / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"{file}: cannot read ({e})") from None
        for key, value in data.items():
            if key in _INIT_KEYS:
                saved[key] = value["content"] if isinstance(value, dict) and "content" in value else value
    if saved.get("model_max_length") is None:
        saved["model_max_length"] = VERY_LARGE_INTEGER
    saved["model_max_length"] = int(saved["model_max_length"])
    return saved


class GPT2TokenizerFast(GPT2Tokenizer):
    """The same tokenizer: transformers' fast and slow GPT-2 tokenizers give the same ids."""
