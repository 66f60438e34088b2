"""OpenAI's request and response shapes for the server, and what they mean for fastgpt.

Requests are pydantic models mirroring OpenAI's legacy completions API (and vLLM's extra
fields: ``top_k``, ``min_p``, ``repetition_penalty``, ``min_tokens``, ``ignore_eos``,
``return_tokens_as_token_ids``), and transformers' ``no_repeat_ngram_size``. Types
are strict (``"max_tokens": "16"`` or ``true`` is an error, not 16 or 1). Unknown fields are
accepted and reported by :meth:`CompletionRequest.ignored_fields` for the log, as vLLM does.
A bad value raises :class:`RequestError` naming the field (``param``), which the app returns
as a 400 in OpenAI's error shape. Responses are plain dicts built here.

Mapping to :class:`~fastgpt.GenerationConfig`: ``temperature == 0`` is greedy (argmax), as in
OpenAI's API and vLLM, and so is any temperature below ``SAMPLING_EPS`` (vLLM's rule: see
there); ``null`` means a field's default; otherwise sampling at that temperature with ``top_p``, ``top_k``
(-1 or 0: off) and ``min_p``. ``max_tokens`` -> ``max_new_tokens``, ``min_tokens`` ->
``min_new_tokens``, ``ignore_eos`` -> no EOS id, ``logit_bias`` keys (token ids as strings)
-> ints. ``seed`` seeds each prompt's ``n`` choices as ``Generator`` seeds
``num_return_sequences=n``. Finish reasons: EOS and stop strings are "stop", else "length".

Non-goals: chat (GPT-2 has no chat format), ``suffix`` (no insertion), ``best_of`` other than ``n``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..generate import GenerationConfig

__all__ = ["CompletionRequest", "DetokenizeRequest", "RequestError", "TokenizeRequest",
           "error_body", "param_of", "parse", "token_text"]

#: OpenAI's limits on the legacy endpoint (vLLM's are looser; clients are written for these).
MAX_LOGPROBS = 20
MAX_N = 128
#: A temperature below this samples greedily, as in vLLM: a draw at it differs from the argmax only
#: between logits closer than a few 1e-5, and far below it dividing the logits overflows float32.
SAMPLING_EPS = 1e-5


class RequestError(ValueError):
    """A client's mistake: HTTP ``status`` with OpenAI's error fields."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 code: str | None = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code
        self.type = type


def error_body(message: str, type: str, param: str | None = None, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    def ignored_fields(self) -> list[str]:
        """Fields present in the request that the server does not know (logged, not errors)."""
        nested = [f"{name}.{key}" for name, value in self
                  if isinstance(value, StreamOptions) for key in value.model_extra or ()]
        return sorted([*(self.model_extra or ()), *nested])


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class CompletionRequest(_Request):
    model: str | None = None
    prompt: Any
    max_tokens: int | None = Field(16, ge=0)
    temperature: float | None = Field(1.0, ge=0.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    stop: Any = None
    seed: int | None = Field(None, ge=0, lt=2 ** 63)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None
    # vLLM's extra sampling fields
    top_k: int = Field(-1, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    return_tokens_as_token_ids: bool = False      # logprobs name tokens "token_id:<id>" (vLLM)
    no_repeat_ngram_size: int = Field(0, ge=0)    # transformers' n-gram ban (fastgpt's own)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data):
        """OpenAI's API takes null for its optional fields, meaning the default. (The fields typed
        ``... | None`` keep null: for ``max_tokens`` it means what the context leaves, as in vLLM.)"""
        if isinstance(data, dict) and None in data.values():
            return {k: v for k, v in data.items() if v is not None or k not in _NULL_MEANS_DEFAULT}
        return data

    @field_validator("prompt")
    @classmethod
    def _prompt_shape(cls, value):
        def is_id(t):
            return isinstance(t, int) and not isinstance(t, bool)
        ok = (isinstance(value, str)
              or (isinstance(value, list) and value and (
                  all(isinstance(p, str) for p in value)
                  or all(is_id(t) for t in value)
                  or all(isinstance(p, list) and all(is_id(t) for t in p) for p in value))))
        if not ok:
            raise ValueError("must be a string, a non-empty list of strings, a list of token ids "
                             "or a list of token-id lists")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value):
        items = [value] if isinstance(value, str) else value
        if value is not None and not (isinstance(items, list)
                                      and all(isinstance(s, str) and s for s in items)):
            raise ValueError("must be a non-empty string or a list of non-empty strings")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value):
        for key, bias in (value or {}).items():
            if not re.fullmatch(r"[0-9]+", key):       # ASCII: \d would take "١" for 1
                raise ValueError(f"keys must be token ids (as strings), got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"values must be in [-100, 100], got {bias!r} for token {key}")
        return value

    # -- what it means --------------------------------------------------------------------------
    def checked(self) -> "CompletionRequest":
        """Cross-field checks that pydantic's per-field ones cannot make."""
        if self.stream_options is not None and not self.stream:
            raise RequestError("`stream_options` is only allowed with `stream: true`", "stream_options")
        if self.best_of is not None and self.best_of != self.n:
            raise RequestError("`best_of` other than `n` is not supported (fastgpt returns every "
                               "choice it generates)", "best_of")
        if self.suffix:
            raise RequestError("`suffix` is not supported: GPT-2 models only continue text", "suffix")
        if self.n > 1 and self.greedy:
            raise RequestError(f"`n`={self.n} needs `temperature` >= {SAMPLING_EPS}: greedy decoding "
                               "(temperature 0, or below that) gives the same completion every time", "n")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise RequestError(f"`min_tokens` ({self.min_tokens}) must be at most `max_tokens` "
                               f"({self.max_tokens})", "min_tokens")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature is not None and self.temperature < SAMPLING_EPS

    def generation_config(self, max_tokens: int) -> GenerationConfig:
        """The options of one prompt's ``n`` choices, ``max_tokens`` already resolved."""
        options: dict[str, Any] = dict(
            max_new_tokens=max_tokens, min_new_tokens=self.min_tokens,
            repetition_penalty=self.repetition_penalty, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, seed=self.seed,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            num_return_sequences=self.n, stop=self.stop,
            logit_bias={int(k): v for k, v in self.logit_bias.items()} if self.logit_bias else None,
            eos_token_id=[] if self.ignore_eos else None,
        )
        if not self.greedy:
            options.update(do_sample=True, temperature=self.temperature if self.temperature is not None else 1.0,
                           top_p=self.top_p if self.top_p is not None else 1.0,
                           top_k=max(self.top_k, 0), min_p=self.min_p)
        try:
            return GenerationConfig(**options)
        except ValueError as exc:
            raise RequestError(str(exc), param_of(str(exc))) from None


_NULL_MEANS_DEFAULT = frozenset({
    "n", "stream", "echo", "presence_penalty", "frequency_penalty", "top_k", "min_p", "repetition_penalty",
    "min_tokens", "ignore_eos", "return_tokens_as_token_ids", "no_repeat_ngram_size"})


class TokenizeRequest(_Request):
    """vLLM's ``/tokenize``: text in, ids out."""
    model: str | None = None
    prompt: str


class DetokenizeRequest(_Request):
    """vLLM's ``/detokenize``: ids in, text out."""
    model: str | None = None
    tokens: list[int]


def parse(model: type[_Request], data: Any) -> _Request:
    """Validate a decoded JSON body; RequestError naming the first bad field."""
    if not isinstance(data, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _loc(first["loc"])
        message = first["msg"]
        if first["type"] == "missing":
            message = "field required"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        more = len(exc.errors()) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise RequestError(f"`{param}`: {message}{tail}", param) from None


def _loc(loc: tuple) -> str:
    """pydantic's error location -> "stop[1]", "stream_options.include_usage"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


# GenerationConfig's option names -> the API's field names, to name the field in its errors.
_API_NAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens", "eos_token_id": "ignore_eos",
              "num_return_sequences": "n", "logit_bias": "logit_bias"}


def param_of(message: str) -> str | None:
    """The field a library error names (its first `backticked` word, in the API's terms, or a
    prompt it is about)."""
    m = re.search(r"`([a-z_]+)(?:\[[^\]]*\])?`", message)
    if m is not None:
        return _API_NAMES.get(m.group(1), m.group(1))
    return "prompt" if "prompt" in message else None


def token_text(tokenizer, token_id: int, as_id: bool = False) -> str:
    """A token as OpenAI's logprobs show it: its text, or ``bytes:\\xNN...`` when its bytes are
    not whole UTF-8 characters; ``as_id``: ``token_id:<id>`` (vLLM's
    ``return_tokens_as_token_ids``)."""
    if as_id:
        return f"token_id:{token_id}"
    raw = tokenizer.decode_bytes([token_id])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
