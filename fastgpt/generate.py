"""Text generation: prefill once, then one cached forward of shape (batch, 1) per new token.

Purpose: the decoding controls users know from transformers' ``generate`` and llama.cpp
(greedy or sampling, penalties, n-gram ban, logit bias, min/max new tokens, EOS ids, stop
strings, seeds), for one prompt or a batch, with streaming and log-probabilities.

Beam search (``num_beams > 1``) is its own algorithm in ``beam_search.py``; ``generate`` and
``generate_ids`` hand such calls to it.

Non-goals: speculative decoding, growing or shrinking the batch while it runs.

Design:

* One ``KVCache`` per call, allocated once for ``longest prompt + max_new_tokens`` slots.
  Prompts of different lengths are left-padded; ``KVCache.set_left_padding`` makes each
  row's positions count from its first real token and makes attention skip the padding,
  so a row of a batch computes what it computes alone (greedy: the same tokens).
* Rows finish independently (EOS, stop string, length). A finished row keeps being fed a
  pad token so the batch keeps its shape; its outputs are ignored. The loop ends when
  every row has finished.
* Each step: raw logits -> ``sampling.process_logits`` (the processor chain, in the order
  documented in ``sampling.py``) -> ``sample_token`` or ``greedy_token`` -> (optional)
  log-probabilities. Greedy without any processor is a bare argmax on the raw logits. These
  per-row rules (and EOS, stop strings, streaming hold-back) live in ``sequence.py``, which the
  serving engine drives too; this module adds the options, the checks, seeding and the loop.
* Options are validated up front by :class:`GenerationConfig` and
  ``SamplingParams.validate(vocab_size)``: a bad value raises ``ValueError`` naming the
  option before the model runs.

Semantics worth knowing (each chosen to match transformers unless noted):

* Greedy is the default. ``temperature``, ``top_k``, ``top_p`` and ``min_p`` only act when
  ``do_sample=True``; set without it they are ignored with a ``UserWarning`` (as
  transformers warns). The penalties, the n-gram ban, ``logit_bias`` and
  ``min_new_tokens`` act in both modes.
* ``eos_token_id=None`` means the model config's EOS id(s), keeping only ids inside the
  vocabulary (small test models keep GPT-2's 50256 with a tiny vocabulary); ``[]`` means
  no EOS at all (llama.cpp's ``--ignore-eos``).
* Returned ids include the token that ended the row, as in transformers: the EOS token, or
  the token that completed a stop string. Returned text never includes them: it stops
  right before the EOS token or the stop string.
* Stop strings are matched on the decoded text of the generated tokens only (not the
  prompt, as in OpenAI's API), incrementally, so a stop string that spans several tokens
  is caught. The earliest match among several stop strings wins.
* Seeds: each call derives its randomness from ``np.random.SeedSequence(seed)``; row ``r``
  of the batch (prompt-major: prompt ``i``'s ``j``-th sequence is row
  ``i * num_return_sequences + j``) draws from ``default_rng(SeedSequence(seed).spawn(B)[r])``.
  A row's draws therefore do not depend on the other rows or on when they finish, row 0
  of a batch draws what a single prompt draws with the same seed, and the global
  ``np.random`` state is never used. ``seed=None`` takes fresh entropy from the OS.
* Log-probabilities are ``log_softmax`` of the step's raw logits, before any processor,
  temperature or filter (what OpenAI reports).
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import warnings
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np

from . import memory
from .beam_search import BeamSearchOutput, beam_search, check_beam_options
from .kv_cache import KVCache, Workspace
from .model import Model, TokenIdError
from .sampling import SamplingParams
from .sequence import GenerationResult, Sequence, TokenChooser

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

__all__ = ["GenerationConfig", "GenerationResult", "GenerationTrace", "Generator"]


class PromptIdsError(TokenIdError, TypeError):
    """prompt_ids that are not lists of integer ids (a ValueError like every bad id; a TypeError
    too, for callers that caught what this raised before)."""


_TRUNCATE = (None, "left")
_PAD_ID = 0          # fed at padding slots and to finished rows; never attended to or read


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


@dataclass
class GenerationConfig:
    """Every generation option, with neutral defaults (greedy, nothing filtered).

    Pass them as keyword arguments to :meth:`Generator.generate` (and ``generate_ids``,
    ``stream``, ``iter_ids``), or build one and pass ``config=``; keyword arguments given
    next to ``config`` override its fields. Checked on construction (``ValueError`` naming
    the option); the ids are checked against the vocabulary when a call starts.

    Length: ``max_new_tokens`` (>= 0), ``min_new_tokens`` (EOS is banned before that many
    tokens; stop strings still apply). Decoding: ``do_sample`` (False = greedy argmax),
    ``temperature`` (> 0), ``top_k`` (0 = off), ``top_p`` ((0, 1], 1 = off), ``min_p``
    ([0, 1], 0 = off) -- these four only with ``do_sample``. Penalties: ``repetition_penalty``
    (transformers/CTRL: seen tokens' positive logits divided, negative multiplied; 1 = off),
    ``presence_penalty`` / ``frequency_penalty`` (OpenAI, generated tokens only; 0 = off),
    ``no_repeat_ngram_size`` (0 = off), ``logit_bias`` ({token id: value added}, -inf bans).
    Ending: ``eos_token_id`` (None = the model's, an id, a list, or [] for none), ``stop``
    (a string or a list of strings), ``stop_in_prompt`` (False: a stop string must lie in the
    generated text, as OpenAI's ``stop``; True: it may begin in the prompt's text and end in the
    generated text, as transformers' ``stop_strings``). ``seed`` (None or an int >= 0),
    ``num_return_sequences`` (rows per prompt: sampling, or up to ``num_beams`` best beams),
    ``truncate`` (None: a prompt that does not fit ``n_positions - max_new_tokens`` is an
    error; "left": keep its last tokens). Beam search (fastgpt/beam_search.py): ``num_beams``
    (1 = off), ``length_penalty`` (a hypothesis scores its summed log-probabilities / new
    tokens ** length_penalty), ``early_stopping`` (True, False or "never", as transformers).
    """

    max_new_tokens: int = 32
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    logit_bias: dict[int, float] | None = None
    eos_token_id: int | list[int] | None = None
    stop: str | SequenceOf[str] | None = None
    stop_in_prompt: bool = False
    seed: int | None = None
    num_return_sequences: int = 1
    truncate: str | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> "GenerationConfig":
        """Raise ValueError naming the first bad option; return ``self``."""
        for name in ("max_new_tokens", "min_new_tokens"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"`{name}` must be an integer >= 0, got {value!r}.")
        self.sampling_params(self.eos_token_id)       # the processors' own checks
        if self.stop is not None and not isinstance(self.stop, str):
            self.stop = self.stop_strings()           # a one-shot iterable is read once
        self.stop_strings()
        if not isinstance(self.stop_in_prompt, (bool, np.bool_)):
            raise ValueError(f"`stop_in_prompt` must be a bool, got {self.stop_in_prompt!r}.")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(f"`seed` must be None or an integer >= 0, got {self.seed!r}.")
        n = self.num_return_sequences
        if not _is_int(n) or n < 1:
            raise ValueError(f"`num_return_sequences` must be an integer >= 1, got {n!r}.")
        check_beam_options(self.num_beams, self.length_penalty, self.early_stopping,
                           n if self.num_beams > 1 else 1)
        if self.num_beams > 1 and self.stop is not None:
            raise ValueError("`stop` strings are not supported with beam search (num_beams > 1).")
        if n > 1 and not self.do_sample and self.num_beams == 1:
            raise ValueError(
                f"`num_return_sequences={n}` needs do_sample=True: greedy decoding would "
                "return the same sequence every time (transformers refuses it too)."
            )
        if self.truncate not in _TRUNCATE:
            raise ValueError(
                f"`truncate` must be None (a too-long prompt is an error) or 'left' (keep the "
                f"prompt's last tokens), got {self.truncate!r}."
            )
        return self

    def stop_strings(self) -> tuple[str, ...]:
        """``stop`` as a tuple of non-empty strings (``()`` when None)."""
        stop = self.stop
        if stop is None:
            return ()
        items = (stop,) if isinstance(stop, str) else stop
        try:
            items = tuple(items)
        except TypeError:
            items = None
        if items is None or not all(isinstance(s, str) and s for s in items):
            raise ValueError(
                f"`stop` must be None, a non-empty string or a list of non-empty strings, "
                f"got {stop!r}."
            )
        return items

    def sampling_params(self, eos_token_id) -> SamplingParams:
        """The processor chain's settings, with ``eos_token_id`` already resolved."""
        return SamplingParams(
            do_sample=self.do_sample, temperature=self.temperature, top_k=self.top_k,
            top_p=self.top_p, min_p=self.min_p, repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size, logit_bias=self.logit_bias,
            min_new_tokens=self.min_new_tokens, eos_token_id=eos_token_id,
        )

    def ignored_options(self) -> list[str]:
        """The sampling-only options set to a non-neutral value while ``do_sample`` is False."""
        if self.do_sample:
            return []
        neutral = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
        return [f"{k}={getattr(self, k)!r}" for k, v in neutral.items() if getattr(self, k) != v]


_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(GenerationConfig))


@dataclass
class GenerationTrace:
    """:meth:`Generator.trace_ids`' answer: ``results`` (as generate_ids with
    ``return_result``) and, per generated position, ``logits`` and ``scores``: (rows, vocab)
    float32, the raw logits and the processed scores each row chose from (a row that had
    already finished carries its raw logits in both)."""

    results: list[GenerationResult]
    logits: list[np.ndarray]
    scores: list[np.ndarray]


# --------------------------------------------------------------------------------------
# One call: validated settings, the rows, and the decode loop.
# --------------------------------------------------------------------------------------


class _Run:
    """One generate call: its validated sequences and the decode loop; ``steps()`` runs it."""

    def __init__(self, gen: "Generator", prompts: list[list[int]], cfg: GenerationConfig, *,
                 need_text: bool, want_logprobs: bool, top_logprobs: int):
        self.model = gen.model
        self.cfg = cfg
        self.trace: tuple[list, list] | None = None      # (raw logits, scores) per step, when traced
        self.rows = gen.new_sequences(prompts, cfg, need_text=need_text,
                                      return_logprobs=want_logprobs, top_logprobs=top_logprobs)
        self.want_logprobs = self.rows[0].chooser.want_logprobs
        ignored = cfg.ignored_options()
        if ignored:
            warnings.warn(
                f"do_sample is False, so {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} "
                "ignored: these options only "
                "act when sampling. Pass do_sample=True to sample (greedy decoding is argmax).",
                UserWarning, stacklevel=3)   # -> the caller of generate/stream

    def steps(self) -> Iterator[list[Sequence]]:
        """Run the decode loop, yielding the rows after each generated position."""
        rows, model = self.rows, self.model
        max_new = self.cfg.max_new_tokens
        if max_new == 0:
            for row in rows:
                row.finish_empty()
            return
        B = len(rows)
        V = model.config.vocab_size
        P = max(row.n_prompt for row in rows)
        cache = model.new_cache(batch_size=B, max_len=P + max_new)
        cache.set_left_padding([P - row.n_prompt for row in rows])
        ids = np.full((B, P), _PAD_ID, np.int64)                    # (B, P) left-padded
        for b, row in enumerate(rows):
            ids[b, P - row.n_prompt:] = row.prompt
        logits = model.forward(ids, cache=cache, last_only=True)    # (B, V), cache workspace
        token_buf = np.full((B, 1), _PAD_ID, np.int64)              # (B, 1) reused each step
        scratch = None if rows[0].chooser.plain_greedy else np.empty((B, V), np.float32)
        while True:
            active = None if self.trace is None else np.array([not row.finished for row in rows])
            for b, row in enumerate(rows):
                if row.finished:
                    token_buf[b, 0] = _PAD_ID
                    continue
                token_buf[b, 0] = row.advance(logits[b], None if scratch is None else scratch[b])
            if active is not None:
                self._record(logits, scratch, active)
            yield rows
            if all(row.finished for row in rows):
                return
            logits = model.forward(token_buf, cache=cache, last_only=True)   # (B, V)

    def _record(self, logits: np.ndarray, scratch: np.ndarray | None, active: np.ndarray) -> None:
        """Keep this step's (B, V) raw logits and scores; rows already finished get their raw
        logits as scores (nothing chose from them)."""
        raw = logits.copy()
        scores = raw.copy() if scratch is None else scratch.copy()
        scores[~active] = raw[~active]
        self.trace[0].append(raw)
        self.trace[1].append(scores)

    def run(self) -> list[Sequence]:
        for _ in self.steps():
            pass
        return self.rows


# --------------------------------------------------------------------------------------
# The public class.
# --------------------------------------------------------------------------------------


class Generator:
    """Generate from a :class:`Model`; a tokenizer is needed for text in or out.

    ``gen.generate("prompt", max_new_tokens=40)`` -> completion text;
    ``gen.generate_ids(ids, max_new_tokens=8)`` -> new token ids;
    ``gen.stream("prompt", ...)`` -> text pieces as they become final;
    ``gen.iter_ids(ids, ...)`` -> new ids one at a time. Options: see
    :class:`GenerationConfig`; all are keyword-only.

    Thread-safe: one Generator (and its Model) may serve any number of threads at once; each
    call owns its KV cache and RNG and gives bitwise what it gives alone. A stream or iterator
    belongs to the thread that iterates it.
    """

    def __init__(self, model: Model, tokenizer: Tokenizer | None = None):
        self.model = model
        self.tokenizer = tokenizer

    # -- checks -------------------------------------------------------------------------
    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this Generator has no tokenizer; pass one, or use generate_ids with token ids")
        return self.tokenizer

    def _config(self, max_new_tokens, config: GenerationConfig | None, options: dict) -> GenerationConfig:
        unknown = [k for k in options if k not in _OPTION_NAMES]
        if unknown:
            hints = [m for k in unknown for m in difflib.get_close_matches(k, _OPTION_NAMES, n=1)]
            if set(unknown) & {"return_logprobs", "top_logprobs", "return_result"}:
                hint = " (results and log-probabilities come from generate and generate_ids)."
            elif hints:
                hint = f"; did you mean {', '.join(map(repr, hints))}?"
            else:
                hint = "."
            raise TypeError(f"unknown generation option(s) {', '.join(map(repr, unknown))}{hint} "
                            f"Options: {', '.join(_OPTION_NAMES)}.")
        if config is not None and not isinstance(config, GenerationConfig):
            raise TypeError(f"`config` must be a GenerationConfig, got {type(config).__name__}.")
        if max_new_tokens is not None:
            options["max_new_tokens"] = max_new_tokens
        if config is None:
            return GenerationConfig(**options)
        return dataclasses.replace(config, **options)

    def _resolve_eos(self, eos_token_id) -> list[int]:
        if eos_token_id is not None:
            return [eos_token_id] if _is_int(eos_token_id) else list(eos_token_id)
        eos = self.model.config.eos_token_id
        if eos is None:
            return []
        ids = [eos] if _is_int(eos) else list(eos)
        # An id outside the vocabulary can never be generated: drop it.
        return [int(i) for i in ids if i < self.model.config.vocab_size]

    def new_sequences(self, prompts: list[list[int]], config: GenerationConfig, *,
                      need_text: bool = True, return_logprobs: bool = False,
                      top_logprobs: int = 0, check_memory: bool = True) -> list[Sequence]:
        """The sequences a call on ``prompts`` (lists of ids) runs, checked and seeded.

        Prompt-major: prompt ``i``'s ``j``-th of ``config.num_return_sequences`` sequences is
        item ``i * n + j``, and when sampling it draws from its own
        ``default_rng(SeedSequence(config.seed).spawn(len(items))[i * n + j])``. Raises
        ValueError naming the option or prompt at fault (ids, length, stop without a
        tokenizer) and MemoryLimitError when ``check_memory`` and the call's own cache could not
        fit (a caller that decodes into a cache it already holds passes False). Each sequence is
        driven by :meth:`Sequence.advance`; this is how the serving engine runs a request
        exactly as a call here would.
        """
        V = self.model.config.vocab_size
        eos = self._resolve_eos(config.eos_token_id)
        params = config.sampling_params(eos).validate(V)
        stops = config.stop_strings()
        if stops and self.tokenizer is None:
            raise ValueError("`stop` strings are matched on decoded text: this Generator has no "
                             "tokenizer; pass one to Generator(model, tokenizer)")
        if need_text:
            self._require_tokenizer()
        if not isinstance(return_logprobs, (bool, np.bool_)):
            raise ValueError(f"`return_logprobs` must be a bool, got {return_logprobs!r}.")
        if not _is_int(top_logprobs) or not 0 <= top_logprobs <= V:
            raise ValueError(f"`top_logprobs` must be an integer in [0, {V}] (the vocabulary "
                             f"size), got {top_logprobs!r}.")
        chooser = TokenChooser(params, return_logprobs, top_logprobs)
        decode = need_text or bool(stops)
        eos_set = frozenset(eos)
        fitted = [self._fit_prompt("the prompt" if len(prompts) == 1 else f"prompt {i}", p, config)
                  for i, p in enumerate(prompts)]
        if check_memory:
            _check_memory(self.model, fitted, config)
        n = len(fitted) * config.num_return_sequences
        rngs = ([np.random.default_rng(child) for child in np.random.SeedSequence(config.seed).spawn(n)]
                if params.do_sample else [None] * n)
        # The prompt's last characters, once per prompt, when a stop string may begin there: 4
        # tokens per character at most (UTF-8) cover the longest stop string's reach.
        reach = 4 * max(len(s) for s in stops) if stops and config.stop_in_prompt else 0
        prompts_in = [(ids, dropped, self.tokenizer.decode(ids[-reach:]) if reach else "") for ids, dropped in fitted]
        items = [item for item in prompts_in for _ in range(config.num_return_sequences)]
        return [Sequence(ids, dropped, config.max_new_tokens, eos_set, stops,
                         self.tokenizer.decoder() if decode else None, chooser, rng, stop_context=tail)
                for (ids, dropped, tail), rng in zip(items, rngs)]

    def _fit_prompt(self, where: str, ids: list[int], cfg: GenerationConfig) -> tuple[list[int], int]:
        """Check one prompt's ids and length; returns (ids to use, tokens dropped)."""
        if len(ids) == 0:
            raise ValueError(f"{where} is empty: give at least one token")
        V, n_ctx = self.model.config.vocab_size, self.model.config.n_positions
        for t, tok in enumerate(ids):
            if not 0 <= tok < V:
                raise TokenIdError(f"{where}: token id {tok} at position {t} is outside the vocabulary [0, {V})")
        n, max_new = len(ids), cfg.max_new_tokens
        if n + max_new <= n_ctx:
            return ids, 0
        keep = n_ctx - max_new
        if cfg.truncate is None or keep < 1:
            hint = ("lower max_new_tokens" if keep < 1 else
                    "shorten it, lower max_new_tokens, or pass truncate='left' to keep its last "
                    f"{keep} tokens")
            raise ValueError(
                f"{where} of {n} tokens + max_new_tokens={max_new} exceeds the model's context of "
                f"n_positions={n_ctx}; {hint}"
            )
        return ids[n - keep:], n - keep

    def _encode_prompts(self, prompt) -> tuple[list[list[int]], bool]:
        if isinstance(prompt, str):
            return [self._require_tokenizer().encode(prompt)], True
        if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
            tok = self._require_tokenizer()
            return [tok.encode(p) for p in prompt], False
        raise TypeError(
            f"`prompt` must be a str or a non-empty list of str, got {_describe(prompt)}; "
            "for token ids use generate_ids"
        )

    @staticmethod
    def _id_prompts(prompt_ids) -> tuple[list[list[int]], bool]:
        bad = PromptIdsError(
            "`prompt_ids` must be a list of token ids or a non-empty list of such lists "
            f"(or a 1-D / 2-D integer array), got {_describe(prompt_ids)}"
        )
        if isinstance(prompt_ids, np.ndarray):
            if prompt_ids.dtype.kind not in "iu" or prompt_ids.ndim not in (1, 2):
                raise bad
            return (([prompt_ids.tolist()], True) if prompt_ids.ndim == 1
                    else (prompt_ids.tolist(), False))
        if not isinstance(prompt_ids, (list, tuple)) or isinstance(prompt_ids, str):
            raise bad
        if all(_is_int(t) for t in prompt_ids):
            return [[int(t) for t in prompt_ids]], True      # one prompt (may be empty)
        rows = []
        for p in prompt_ids:
            if isinstance(p, np.ndarray) and p.ndim == 1 and p.dtype.kind in "iu":
                p = p.tolist()
            if not isinstance(p, (list, tuple)) or not all(_is_int(t) for t in p):
                raise bad
            rows.append([int(t) for t in p])
        return rows, False

    # -- streaming ----------------------------------------------------------------------
    def stream(self, prompt: str, max_new_tokens: int | None = None, *,
               config: GenerationConfig | None = None, **options) -> Iterator[str]:
        """Yield the completion of one prompt as text pieces.

        A piece is yielded as soon as it is final: never half of a multi-byte character,
        never text that could still turn out to be the start of a stop string, and nothing
        from a stop string on. The pieces join to the ``text`` of the result.
        Options are checked when ``stream`` is called; the model runs as you iterate. The
        iterator's return value (``StopIteration.value``) is the :class:`GenerationResult`.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"stream takes one prompt (a str), got {_describe(prompt)}; "
                            "for a batch use generate")
        cfg = self._config(max_new_tokens, config, options)
        if cfg.num_beams != 1:
            raise ValueError("stream makes one sequence as it goes: beam search (num_beams > 1) needs generate")
        if cfg.num_return_sequences != 1:
            raise ValueError("stream makes one sequence: `num_return_sequences` must be 1, "
                             f"got {cfg.num_return_sequences}; use generate for several")
        prompts, _ = self._encode_prompts(prompt)
        run = _Run(self, prompts, cfg, need_text=True, want_logprobs=False, top_logprobs=0)
        return _stream_text(run)

    def iter_ids(self, prompt_ids, max_new_tokens: int | None = None, *,
                 config: GenerationConfig | None = None, **options) -> Iterator[int]:
        """Yield the new token ids of one prompt one at a time (the last may be EOS).

        The iterator's return value (``StopIteration.value``) is the :class:`GenerationResult`.
        """
        prompts, single = self._id_prompts(prompt_ids)
        if not single:
            raise TypeError("iter_ids takes one prompt (a list of ids); for a batch use generate_ids")
        cfg = self._config(max_new_tokens, config, options)
        if cfg.num_beams != 1:
            raise ValueError("iter_ids makes one sequence as it goes: beam search (num_beams > 1) needs generate_ids")
        if cfg.num_return_sequences != 1:
            raise ValueError("iter_ids makes one sequence: `num_return_sequences` must be 1, "
                             f"got {cfg.num_return_sequences}; use generate_ids for several")
        run = _Run(self, prompts, cfg, need_text=False, want_logprobs=False, top_logprobs=0)
        return _stream_ids(run)

    # -- whole completions ----------------------------------------------------------------
    def generate(self, prompt: str | list[str], max_new_tokens: int | None = None, *,
                 config: GenerationConfig | None = None, return_logprobs: bool = False,
                 top_logprobs: int = 0, return_result: bool = False, **options):
        """Complete one prompt or a batch; the prompt itself is not repeated.

        ``prompt``: a str -> a str; a list of str -> a list of str, one per row. Rows are
        left-padded and run as one batch; each row's result is what that prompt gives alone
        (greedy: the same tokens). With ``num_return_sequences=n`` each prompt gets n rows,
        grouped by prompt (``[p0s0, p0s1, ..., p1s0, ...]``), and the result is always a list.
        With ``return_logprobs``, ``top_logprobs > 0`` (implies ``return_logprobs``) or
        ``return_result``, :class:`GenerationResult` objects replace the strings.
        ``max_new_tokens=None`` takes the config's (default 32). Other options: see
        :class:`GenerationConfig`.
        """
        cfg = self._config(max_new_tokens, config, options)
        prompts, single = self._encode_prompts(prompt)
        if cfg.num_beams > 1:
            results = self._beam_results(prompts, cfg, return_logprobs or top_logprobs)
            out = results if return_result else [r.text for r in results]
            return out[0] if single and cfg.num_return_sequences == 1 else out
        run = _Run(self, prompts, cfg, need_text=True, want_logprobs=return_logprobs,
                   top_logprobs=top_logprobs)
        rows = run.run()
        as_result = return_result or run.want_logprobs
        out = [row.result() if as_result else row.text for row in rows]
        return out[0] if single and cfg.num_return_sequences == 1 else out

    def generate_ids(self, prompt_ids, max_new_tokens: int | None = None, *,
                     config: GenerationConfig | None = None, return_logprobs: bool = False,
                     top_logprobs: int = 0, return_result: bool = False, **options):
        """The new token ids (not the prompt's), including a final EOS token as transformers.

        ``prompt_ids``: one list of ids -> one list; a list of lists (or a 2-D array) -> a
        list of lists, batched as in :meth:`generate`. Results and options as in
        :meth:`generate`; a result's ``text`` is None without a tokenizer.
        """
        prompts, single = self._id_prompts(prompt_ids)
        cfg = self._config(max_new_tokens, config, options)
        as_result = return_result or return_logprobs or (_is_int(top_logprobs) and top_logprobs > 0)
        if cfg.num_beams > 1:
            results = self._beam_results(prompts, cfg, return_logprobs or top_logprobs)
            out = results if as_result else [r.token_ids for r in results]
            return out[0] if single and cfg.num_return_sequences == 1 else out
        run = _Run(self, prompts, cfg, need_text=False, want_logprobs=return_logprobs,
                   top_logprobs=top_logprobs)
        if as_result and self.tokenizer is not None:
            for row in run.rows:                 # results carry text when we can decode
                if row.decoder is None:
                    row.decoder = self.tokenizer.decoder()
        rows = run.run()
        out = [row.result() if as_result else list(row.ids) for row in rows]
        return out[0] if single and cfg.num_return_sequences == 1 else out

    def trace_ids(self, prompt_ids, max_new_tokens: int | None = None, *, config: GenerationConfig | None = None,
                  **options) -> "GenerationTrace":
        """:meth:`generate_ids` (one result per row, grouped by prompt) plus, per generated
        position, every row's raw logits and its scores after the processors (what it chose
        from), as transformers' ``output_logits`` / ``output_scores``."""
        prompts, _ = self._id_prompts(prompt_ids)
        cfg = self._config(max_new_tokens, config, options)
        if cfg.num_beams > 1:
            raise ValueError("trace_ids follows one sequence per row: for beam search use beam_search()")
        run = _Run(self, prompts, cfg, need_text=False, want_logprobs=False, top_logprobs=0)
        run.trace = ([], [])
        rows = run.run()
        return GenerationTrace([row.result() for row in rows], run.trace[0], run.trace[1])

    # -- beam search ----------------------------------------------------------------------------
    def beam_search(self, prompt_ids, max_new_tokens: int | None = None, *, config: GenerationConfig | None = None,
                    return_scores: bool = False, return_logits: bool = False, **options) -> BeamSearchOutput:
        """Beam search (fastgpt/beam_search.py) from one prompt or a batch of id lists: each
        prompt's ``num_return_sequences`` best hypotheses with their scores and beam indices,
        and with ``return_scores`` / ``return_logits`` every step's processed log-probabilities
        / raw logits. Options as :meth:`generate_ids` (``num_beams`` defaults to 4 here)."""
        options.setdefault("num_beams", 4)
        prompts, _ = self._id_prompts(prompt_ids)
        cfg = self._config(max_new_tokens, config, options)
        return self._run_beams(prompts, cfg, return_scores, return_logits)

    def _run_beams(self, prompts: list[list[int]], cfg: GenerationConfig, return_scores: bool,
                   return_logits: bool) -> BeamSearchOutput:
        eos = self._resolve_eos(cfg.eos_token_id)
        params = cfg.sampling_params(eos).validate(self.model.config.vocab_size)
        for i, p in enumerate(prompts):
            _, dropped = self._fit_prompt("the prompt" if len(prompts) == 1 else f"prompt {i}", p, cfg)
            if dropped:
                raise ValueError("truncate='left' is not supported with beam search: shorten the prompt")
        return beam_search(self.model, prompts, num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens,
                           eos_token_id=eos, params=params, length_penalty=cfg.length_penalty,
                           early_stopping=cfg.early_stopping, num_return_sequences=cfg.num_return_sequences,
                           seed=cfg.seed, return_scores=return_scores, return_logits=return_logits)

    def _beam_results(self, prompts: list[list[int]], cfg: GenerationConfig, logprobs) -> list[GenerationResult]:
        if logprobs:
            raise ValueError("log-probabilities are not reported with beam search (num_beams > 1)")
        eos = frozenset(self._resolve_eos(cfg.eos_token_id))
        results = []
        for hyps in self._run_beams(prompts, cfg, False, False).hypotheses:
            for h in hyps:
                ended = bool(h.token_ids) and h.token_ids[-1] in eos
                kept = h.token_ids[:-1] if ended else h.token_ids       # text stops before EOS, as elsewhere
                text = None if self.tokenizer is None else self.tokenizer.decode(kept)
                results.append(GenerationResult(text, h.token_ids, finish_reason="eos" if ended else "length",
                                                score=h.score))
        return results


def _check_memory(model: Model, fitted: list, cfg: GenerationConfig) -> None:
    """MemoryLimitError naming num_return_sequences and the prompts if the call's cache and
    prefill activations cannot fit, before any row is built."""
    n_rows = len(fitted) * cfg.num_return_sequences
    longest = max(len(ids) for ids, _ in fitted)
    slots = longest + cfg.max_new_tokens
    prefill_positions = n_rows * min(longest, model.prefill_chunk)
    need = KVCache.nbytes_for(model.config, n_rows, slots, model.kv_dtype) + Workspace.nbytes_for(model.config, prefill_positions, n_rows)
    memory.require(need, f"generating {n_rows} rows (num_return_sequences={cfg.num_return_sequences} x "
                         f"{len(fitted)} prompt(s)) of up to {slots} tokens")


def _stream_text(run: _Run):
    row = run.rows[0]
    for _ in run.steps():
        piece = row.release()
        if piece:
            yield piece
    piece = row.release()
    if piece:
        yield piece
    return row.result()


def _stream_ids(run: _Run):
    row = run.rows[0]
    sent = 0
    for _ in run.steps():
        while sent < len(row.ids):
            yield row.ids[sent]
            sent += 1
    return row.result()


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
