"""(pytorch-)transformers' GPT-2 classes on fastgpt, for inference code written against them.

Change the import and the usual script runs unchanged, with NumPy arrays out::

    from fastgpt.compat.transformers import GPT2LMHeadModel, GPT2Tokenizer

    tok = GPT2Tokenizer.from_pretrained("gpt2")               # bundled vocabulary, no download
    model = GPT2LMHeadModel.from_pretrained("path/to/gpt2")   # a local Hugging Face folder
    ids = tok("Hello, my dog is", return_tensors="np").input_ids
    out = model.generate(ids, max_new_tokens=20, do_sample=True, top_k=50, seed=0)
    print(tok.decode(out[0], skip_special_tokens=True))

What maps where: ``GPT2Config`` is fastgpt's config that also accepts (and ignores)
transformers' training-only keys; ``GPT2LMHeadModel`` wraps a fastgpt ``Model`` (``__call__``
-> ``.logits``) and its ``generate`` drives fastgpt's ``Generator``, translating arguments
with transformers' meanings (below); the tokenizers wrap fastgpt's byte-level BPE.

``generate`` semantics, as transformers 4.4x-5.x: ``max_new_tokens`` wins over
``max_length``; ``max_length`` (default 20, as in transformers 4.x) counts the prompt's
columns (an error if the prompt already fills it). ``temperature``,
``top_k`` (default 50) and ``top_p`` act only with ``do_sample=True``;
``repetition_penalty`` acts in both modes. ``eos_token_id=None`` means the config's; rows
that produced EOS are padded with ``pad_token_id`` (default: the first EOS id) until every
row is done. ``attention_mask`` marks left padding (``tokenizer.padding_side = "left"``);
each row is run as it would be alone, with positions counted from its first real token,
as transformers' generate does. The result is the input columns followed by the new ids,
``(batch * num_return_sequences, length)`` int64.

Differences: sampling draws from NumPy generators seeded by ``seed=`` (transformers uses
torch's global RNG), so sampled ids differ from torch's while greedy ids match; arrays come
back as NumPy (``return_tensors="pt"`` in the tokenizer still gives torch tensors, and
torch tensors are accepted everywhere). ``repetition_penalty`` sees each row's real tokens
only (transformers also counts left-padding tokens). Non-goals: beam search, training,
``past_key_values``, ``return_dict_in_generate``, GPUs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import regex

from ..config import ConfigError
from ..config import GPT2Config as _BaseConfig
from ..generate import Generator
from ..model import Model
from ..registry import ModelNotFoundError, resolve_model_path
from ..tokenizer import Tokenizer, TokenizerError

__all__ = [
    "GPT2Config",
    "GPT2LMHeadModel",
    "CausalLMOutput",
    "GPT2Tokenizer",
    "GPT2TokenizerFast",
    "BatchEncoding",
]

#: Hub names of OpenAI's GPT-2 family: all share GPT-2's vocabulary, which fastgpt bundles.
GPT2_VOCAB_NAMES = frozenset({
    "gpt2", "distilgpt2", "gpt2-medium", "gpt2-large", "gpt2-xl",
    "openai-community/gpt2", "openai-community/gpt2-medium", "openai-community/gpt2-large",
    "openai-community/gpt2-xl", "distilbert/distilgpt2",
})
_GPT2_MAX_LENGTH = 1024
VERY_LARGE_INTEGER = int(1e30)       # transformers' model_max_length when a folder sets none

# from_pretrained keyword arguments that only concern downloading, devices or dtypes: accepted
# and ignored (fastgpt reads local files and computes in float32 on the CPU).
_IGNORED_LOAD_KWARGS = frozenset({
    "cache_dir", "local_files_only", "revision", "token", "use_auth_token", "force_download",
    "trust_remote_code", "torch_dtype", "dtype", "device_map", "low_cpu_mem_usage",
    "use_safetensors", "attn_implementation", "use_fast", "subfolder",
})
# Config keys that would change GPT-2's arithmetic: accepted only at their defaults.
_NUMERIC_CONFIG_KEYS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                        "add_cross_attention": False}


def _check_load_kwargs(where: str, kwargs: dict) -> None:
    unknown = sorted(k for k in kwargs if k not in _IGNORED_LOAD_KWARGS)
    if unknown:
        raise TypeError(f"{where}: unsupported argument(s) {', '.join(unknown)}; fastgpt accepts and ignores "
                        f"only {', '.join(sorted(_IGNORED_LOAD_KWARGS))}")


def _resolve_model(name_or_path) -> Path:
    try:
        return resolve_model_path(name_or_path)
    except ModelNotFoundError as e:
        if str(name_or_path) in GPT2_VOCAB_NAMES:
            raise ModelNotFoundError(
                f"{e}. fastgpt never downloads: fetch the weights once (e.g. `huggingface-cli download "
                f"{name_or_path} --local-dir {Path(str(name_or_path)).name}`) and pass that folder"
            ) from None
        raise


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):      # a torch tensor, without importing torch
        return value.detach().cpu().numpy()
    return np.asarray(value)


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------

class GPT2Config(_BaseConfig):
    """fastgpt's GPT2Config, constructible like transformers' (extra keys are kept as
    attributes and ignored), with transformers' attribute aliases."""

    def __init__(self, vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                 activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=50256,
                 eos_token_id=50256, **kwargs):
        for key, default in _NUMERIC_CONFIG_KEYS.items():
            if key in kwargs and kwargs[key] != default:
                raise ConfigError(f"GPT2Config.{key}={kwargs[key]!r} changes GPT-2's arithmetic; fastgpt "
                                  f"implements only {key}={default!r}")
        super().__init__(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                         n_head=n_head, n_inner=n_inner, activation_function=activation_function,
                         layer_norm_epsilon=layer_norm_epsilon, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id)
        object.__setattr__(self, "_extra", dict(kwargs))

    def __getattr__(self, name):
        extra = self.__dict__.get("_extra", {})
        if name in extra:
            return extra[name]
        if name == "pad_token_id":
            return None
        raise AttributeError(f"GPT2Config has no attribute {name!r}")

    # transformers' names for the same numbers
    n_ctx = property(lambda self: self.n_positions)
    max_position_embeddings = property(lambda self: self.n_positions)
    hidden_size = property(lambda self: self.n_embd)
    num_attention_heads = property(lambda self: self.n_head)
    num_hidden_layers = property(lambda self: self.n_layer)

    @classmethod
    def from_pretrained(cls, name_or_path, **kwargs) -> "GPT2Config":
        """Read ``config.json`` from a folder or bundled model; ``kwargs`` override its keys."""
        folder = _resolve_model(name_or_path)
        base = _BaseConfig.from_pretrained(folder)      # checks model_type and every field, with the path
        with open(folder / "config.json", encoding="utf-8") as f:
            d = json.load(f)
        d.pop("model_type", None)
        d.update({f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
        d.update(kwargs)
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{folder / 'config.json'}: {e}") from None


def _as_compat_config(config) -> GPT2Config:
    if isinstance(config, GPT2Config):
        return config
    if isinstance(config, _BaseConfig):
        return GPT2Config(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
    raise TypeError(f"config must be a GPT2Config, got {type(config).__name__}")


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

class CausalLMOutput:
    """``.logits``: float32 ``(batch, seq, vocab)``; ``out[0]`` and ``out["logits"]`` work too."""

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    def __getitem__(self, key):
        if key == 0 or key == "logits":
            return self.logits
        raise KeyError(f"CausalLMOutput has only logits (index 0 or 'logits'), not {key!r}")

    def keys(self):
        return ["logits"]

    def to_tuple(self) -> tuple:
        return (self.logits,)


_GENERATE_EXTRAS = ("min_new_tokens", "no_repeat_ngram_size", "min_p", "seed")
# Accepted and ignored (num_beams and return_dict_in_generate only at their defaults, checked).
_IGNORED_GENERATE_KWARGS = frozenset({"use_cache", "num_beams", "early_stopping", "output_scores",
                                      "return_dict_in_generate"})


def _left_pad_counts(mask: np.ndarray) -> np.ndarray:
    """Per row, the number of leading 0s; raises unless each row is 0...0 1...1."""
    m = mask.astype(bool)                                          # (B, T)
    B, T = m.shape
    pads = T - m.sum(axis=1)                                       # (B,)
    expected = np.arange(T)[None, :] >= pads[:, None]              # (B, T) the left-padded shape
    bad = (pads == T) | (m != expected).any(axis=1)                # (B,)
    if bad.any():
        b = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"attention_mask row {b} is {m[b].astype(int).tolist()}: generate needs left padding (0s, then "
            "at least one 1). Set tokenizer.padding_side = 'left' before tokenizing the batch."
        )
    return pads


class GPT2LMHeadModel:
    """transformers' ``GPT2LMHeadModel`` for inference, backed by a fastgpt ``Model``."""

    def __init__(self, config, *, backend: str = "auto", num_threads: int | None = None, seed: int = 0):
        """A randomly initialised model (GPT-2's init, seeded), like ``GPT2LMHeadModel(config)``."""
        self.config = _as_compat_config(config)
        self.model = Model.random(self.config, seed=seed, backend=backend, num_threads=num_threads)
        self.name_or_path = ""

    @classmethod
    def from_pretrained(cls, name_or_path, *, backend: str = "auto", num_threads: int | None = None,
                        **kwargs) -> "GPT2LMHeadModel":
        """Load a local Hugging Face GPT-2 folder or a bundled model (nothing is downloaded)."""
        _check_load_kwargs("GPT2LMHeadModel.from_pretrained", kwargs)
        from ..loaders.gpt2 import load_pretrained

        folder = _resolve_model(name_or_path)
        base, weights = load_pretrained(folder)              # fastgpt's own loader, every format it reads
        config = GPT2Config.from_pretrained(folder) if (folder / "config.json").is_file() else _as_compat_config(base)
        self = cls.__new__(cls)
        self.config = config
        self.model = Model(config, weights, backend=backend, num_threads=num_threads)
        self.name_or_path = str(name_or_path)
        return self

    # torch.nn.Module habits that inference scripts call
    def eval(self) -> "GPT2LMHeadModel":
        return self

    def to(self, *args, **kwargs) -> "GPT2LMHeadModel":
        """Accepted and ignored: fastgpt computes in float32 on the CPU."""
        return self

    @property
    def device(self) -> str:
        return "cpu"

    def num_parameters(self) -> int:
        return self.model.num_parameters()

    def __call__(self, input_ids, attention_mask=None, **kwargs) -> CausalLMOutput:
        """Logits for every position. ``attention_mask`` may mark left padding (each row then
        runs with positions counted from its first real token, as in generate) or right
        padding (ignored: real tokens never see later ones); logits at padded positions are
        unspecified. ``return_dict``/``use_cache`` are accepted and ignored."""
        unknown = sorted(set(kwargs) - {"return_dict", "use_cache"})
        if unknown:
            raise TypeError(f"GPT2LMHeadModel.__call__: unsupported argument(s) {', '.join(unknown)}")
        ids = _to_numpy(input_ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        if attention_mask is None:
            return CausalLMOutput(self.model.forward(ids))
        mask = _to_numpy(attention_mask).astype(bool)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {mask.shape}, input_ids {ids.shape}")
        B, T = ids.shape
        lead = np.argmax(mask, axis=1)                              # (B,) first real token
        real = mask.sum(axis=1)
        if (real == 0).any() or not all(mask[b, lead[b]:lead[b] + real[b]].all() for b in range(B)):
            raise ValueError("attention_mask rows must be one run of 1s (left and/or right padding around it)")
        cache = self.model.new_cache(batch_size=B, max_len=T)
        if lead.any():
            cache.set_left_padding(lead)
        return CausalLMOutput(self.model.forward(np.ascontiguousarray(ids), cache=cache))

    forward = __call__

    def generate(self, input_ids=None, max_length: int | None = 20, max_new_tokens: int | None = None,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = 50, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, pad_token_id: int | None = None,
                 eos_token_id: int | list[int] | None = None, attention_mask=None,
                 num_return_sequences: int = 1, **kwargs) -> np.ndarray:
        """Prompt columns + generated ids, ``(batch * num_return_sequences, length)`` int64.

        Arguments mean what they mean in transformers (see the module docstring). Also
        accepted: ``seed`` (NumPy seeding of the draws), ``min_new_tokens``,
        ``no_repeat_ngram_size``, ``min_p``; ``use_cache``/``num_beams=1`` are ignored.
        """
        extras = {k: kwargs.pop(k) for k in _GENERATE_EXTRAS if k in kwargs}
        if kwargs.get("num_beams", 1) != 1:
            raise ValueError("beam search (num_beams > 1) is not supported by fastgpt")
        if kwargs.get("return_dict_in_generate"):
            raise ValueError("return_dict_in_generate=True is not supported: generate returns the id array")
        unknown = sorted(set(kwargs) - _IGNORED_GENERATE_KWARGS)
        if unknown:
            raise TypeError(f"generate: unsupported argument(s) {', '.join(unknown)}")
        if input_ids is None:
            raise ValueError("generate needs input_ids (fastgpt has no BOS-only generation)")
        ids = _to_numpy(input_ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
            raise ValueError(f"input_ids must be (batch, seq) integer ids, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        B, T = ids.shape
        n_ctx = self.config.n_positions

        if attention_mask is None and pad_token_id is not None and (ids == pad_token_id).any():
            eos_ids = _id_list(eos_token_id if eos_token_id is not None else self.config.eos_token_id)
            if pad_token_id not in eos_ids:          # transformers infers the mask from pad tokens then
                attention_mask = ids != pad_token_id
        pads = (np.zeros(B, np.int64) if attention_mask is None
                else _left_pad_counts(_to_numpy(attention_mask).reshape(B, T).astype(np.int64)))

        if max_new_tokens is not None:
            n_new = max_new_tokens
        else:
            if max_length is None:
                raise ValueError("give max_length (which counts the prompt) or max_new_tokens")
            n_new = max_length - T
            if n_new <= 0:
                raise ValueError(f"Input length of input_ids is {T}, but `max_length` is set to {max_length}. "
                                 "Increase `max_length` or, better yet, set `max_new_tokens`.")

        options = dict(max_new_tokens=n_new, do_sample=do_sample, repetition_penalty=repetition_penalty,
                       eos_token_id=eos_token_id, num_return_sequences=num_return_sequences, **extras)
        if do_sample:
            options.update(temperature=temperature, top_k=0 if top_k is None else top_k, top_p=top_p)
        prompts = [ids[b, pads[b]:].tolist() for b in range(B)]
        new = Generator(self.model).generate_ids(prompts, **options)   # rows grouped by prompt

        n = max(len(row) for row in new)
        fill = pad_token_id
        if fill is None:
            eos_ids = _id_list(eos_token_id if eos_token_id is not None else self.config.eos_token_id)
            fill = eos_ids[0] if eos_ids else None
        if fill is None and any(len(row) < n for row in new):
            raise ValueError("rows ended at different lengths but there is no pad_token_id to fill them")
        out = np.full((len(new), T + n), 0 if fill is None else fill, np.int64)
        for r, row in enumerate(new):
            out[r, :T] = ids[r // num_return_sequences]
            out[r, T:T + len(row)] = row
        return out


def _id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


# --------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------

class BatchEncoding(dict):
    """A dict of ``input_ids`` / ``attention_mask`` that also allows ``enc.input_ids``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no {name!r} (keys: {', '.join(self)})") from None


def _tensor(rows, return_tensors, what: str):
    if return_tensors is None:
        return rows
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r}")
    if isinstance(rows, list) and rows and isinstance(rows[0], list) and len({len(r) for r in rows}) > 1:
        raise ValueError(f"Unable to create tensor: the {what} rows have different lengths; activate padding "
                         "(padding=True) and/or truncation")
    arr = np.asarray(rows, dtype=np.int64)
    if return_tensors == "pt":
        import torch

        return torch.from_numpy(arr)
    return arr


class GPT2Tokenizer:
    """transformers' GPT-2 tokenizer over fastgpt's byte-level BPE (same ids)."""

    def __init__(self, tokenizer: Tokenizer, *, add_prefix_space: bool = False, pad_token: str | None = None,
                 padding_side: str = "right", truncation_side: str = "right",
                 model_max_length: int = VERY_LARGE_INTEGER, name_or_path: str = ""):
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer must be a fastgpt Tokenizer, got {type(tokenizer).__name__}; "
                            "use GPT2Tokenizer.from_pretrained(name_or_folder)")
        self.tokenizer = tokenizer
        self._add_prefix_space = bool(add_prefix_space)
        self.model_max_length = model_max_length
        self.name_or_path = name_or_path
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self._pad_token = None
        self.pad_token = pad_token
        # Splits text around special tokens (longest first), keeping them: add_prefix_space
        # applies to each piece between them.
        names = sorted(tokenizer.special_tokens, key=lambda t: (-len(t), t))
        self._split = regex.compile("(" + "|".join(map(regex.escape, names)) + ")") if names else None

    @classmethod
    def from_pretrained(cls, name_or_path, *, add_prefix_space: bool = False, pad_token: str | None = None,
                        padding_side: str = "right", model_max_length: int | None = None, **kwargs) -> "GPT2Tokenizer":
        """GPT-2's bundled vocabulary for "gpt2", "distilgpt2", "gpt2-medium", "gpt2-large",
        "gpt2-xl" (and their openai-community/ names); otherwise a folder or bundled model."""
        _check_load_kwargs(f"{cls.__name__}.from_pretrained", kwargs)
        name = str(name_or_path)
        if name in GPT2_VOCAB_NAMES and not Path(name).is_dir():
            tok, max_len = Tokenizer.gpt2(), _GPT2_MAX_LENGTH
        else:
            folder = _resolve_model(name_or_path)
            tok, max_len = Tokenizer.from_pretrained(folder), VERY_LARGE_INTEGER
            cfg_file = folder / "tokenizer_config.json"
            if cfg_file.is_file():
                with open(cfg_file, encoding="utf-8") as f:
                    cfg = json.load(f)
                max_len = int(cfg.get("model_max_length", max_len))
                add_prefix_space = add_prefix_space or bool(cfg.get("add_prefix_space", False))
        return cls(tok, add_prefix_space=add_prefix_space, pad_token=pad_token, padding_side=padding_side,
                   model_max_length=model_max_length or max_len, name_or_path=name)

    # -- special tokens ------------------------------------------------------------------
    @property
    def add_prefix_space(self) -> bool:
        return self._add_prefix_space

    @property
    def eos_token(self) -> str | None:
        return self.tokenizer.eos_token

    bos_token = unk_token = eos_token

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    bos_token_id = unk_token_id = eos_token_id

    @property
    def pad_token(self) -> str | None:
        return self._pad_token

    @pad_token.setter
    def pad_token(self, token: str | None) -> None:
        if token is not None:
            self.tokenizer.token_to_id(token)             # raises TokenizerError if unknown
        self._pad_token = token

    @property
    def pad_token_id(self) -> int | None:
        return None if self._pad_token is None else self.tokenizer.token_to_id(self._pad_token)

    @pad_token_id.setter
    def pad_token_id(self, token_id: int | None) -> None:
        self._pad_token = None if token_id is None else self.tokenizer.id_to_token(token_id)

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [t for t in (self.eos_token, self._pad_token) if t is not None]
        tokens += [t for t in self.tokenizer.special_tokens if t not in tokens]
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.tokenizer.token_to_id(t) for t in self.all_special_tokens]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def __len__(self) -> int:
        return self.tokenizer.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return {self.tokenizer.id_to_token(i): i for i in range(self.tokenizer.vocab_size)}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"add_prefix_space={self._add_prefix_space}, pad_token={self._pad_token!r})")

    # -- text <-> ids --------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not self._add_prefix_space:
            return self.tokenizer.encode(text, allowed_special="all")
        # As the fast tokenizer: special tokens are split off first, then each other
        # non-empty piece gets a leading space unless it already starts with one.
        ids = []
        pieces = self._split.split(text) if self._split is not None else [text]
        for k, piece in enumerate(pieces):
            if k % 2:
                ids.append(self.tokenizer.token_to_id(piece))
            elif piece:
                ids += self.tokenizer.encode(piece if piece.startswith(" ") else " " + piece)
        return ids

    def _max_len(self, max_length: int | None) -> int:
        return self.model_max_length if max_length is None else max_length

    def _truncate(self, ids: list[int], limit: int) -> list[int]:
        if len(ids) <= limit:
            return ids
        return ids[:limit] if self.truncation_side == "right" else ids[len(ids) - limit:]

    def tokenize(self, text: str) -> list[str]:
        """Byte-level token strings ("Ġworld" for " world")."""
        return [self.tokenizer.id_to_token(i) for i in self._encode(text)]

    def convert_tokens_to_ids(self, tokens):
        """One id for a str, a list for a list; unknown tokens give the unk id (as transformers)."""
        if isinstance(tokens, str):
            try:
                return self.tokenizer.token_to_id(tokens)
            except TokenizerError:
                return self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, (int, np.integer)):
            return self.tokenizer.id_to_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.tokenizer.id_to_token(int(i)) for i in _to_numpy(ids).reshape(-1) if int(i) not in skip]

    def encode(self, text: str, add_special_tokens: bool = True, truncation: bool | str | None = None,
               max_length: int | None = None, return_tensors: str | None = None):
        """Token ids (GPT-2 adds no special tokens); ``return_tensors`` gives a ``(1, seq)`` array."""
        ids = self._encode(text)
        if truncation:
            ids = self._truncate(ids, self._max_len(max_length))
        return ids if return_tensors is None else _tensor([ids], return_tensors, "input_ids")

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False) -> str:
        """Text for ids (a list, an array or tensor, or one int). No space clean-up: transformers
        refuses it for byte-level BPE as it corrupts text."""
        ids = _to_numpy(token_ids).reshape(-1).tolist()
        if skip_special_tokens:
            skip = set(self.all_special_ids)
            ids = [i for i in ids if i not in skip]
        return self.tokenizer.decode(ids)

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **kwargs) -> list[str]:
        return [self.decode(seq, skip_special_tokens=skip_special_tokens, **kwargs) for seq in sequences]

    def __call__(self, text, padding: bool | str = True, truncation: bool | str | None = True,
                 max_length: int | None = None, return_tensors: str | None = "np",
                 return_attention_mask: bool = True) -> BatchEncoding:
        """``{"input_ids", "attention_mask"}`` for a str or a list of str, with transformers'
        padding (True/"longest", "max_length", False), truncation (to ``max_length`` or
        ``model_max_length``) and ``return_tensors`` (None, "np", "pt")."""
        if self.padding_side not in ("left", "right") or self.truncation_side not in ("left", "right"):
            raise ValueError(f"padding_side and truncation_side must be 'left' or 'right', got "
                             f"{self.padding_side!r} and {self.truncation_side!r}")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("text must be a str or a list of str")
        rows = [self._encode(t) for t in texts]
        if truncation not in (None, False, "do_not_truncate"):
            limit = self._max_len(max_length)
            rows = [self._truncate(r, limit) for r in rows]
        masks = [[1] * len(r) for r in rows]
        if padding not in (False, None, "do_not_pad"):
            if padding in (True, "longest"):
                width = max((len(r) for r in rows), default=0)
            elif padding == "max_length":
                width = self._max_len(max_length)
                if width >= VERY_LARGE_INTEGER:
                    raise ValueError("padding='max_length' needs max_length=...: this tokenizer has no "
                                     "model_max_length (its folder has no tokenizer_config.json)")
            else:
                raise ValueError("padding must be True, False, 'longest', 'max_length' or 'do_not_pad', "
                                 f"got {padding!r}")
            if self._pad_token is None and any(len(r) < width for r in rows):
                raise ValueError("Asking to pad but the tokenizer does not have a padding token. Set one, e.g. "
                                 "`tokenizer.pad_token = tokenizer.eos_token`.")
            pad = self.pad_token_id
            for k, r in enumerate(rows):
                n = width - len(r)
                if n > 0:
                    fill, zeros = [pad] * n, [0] * n
                    if self.padding_side == "left":
                        rows[k], masks[k] = fill + r, zeros + masks[k]
                    else:
                        rows[k], masks[k] = r + fill, masks[k] + zeros
        if single:
            rows, masks = (rows[0], masks[0]) if return_tensors is None else (rows, masks)
        out = BatchEncoding(input_ids=_tensor(rows, return_tensors, "input_ids"))
        if return_attention_mask:
            out["attention_mask"] = _tensor(masks, return_tensors, "attention_mask")
        return out


class GPT2TokenizerFast(GPT2Tokenizer):
    """The same tokenizer (transformers' fast and slow GPT-2 tokenizers give the same ids)."""
