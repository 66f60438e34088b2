"""transformers' ``generate`` and ``GenerationConfig`` on fastgpt's ``Generator``.

Arguments resolve as in transformers 5: the call's keyword arguments over its
``generation_config=`` over the model's ``generation_config`` (the folder's
generation_config.json) over transformers' global defaults. So, as there:

* Length: ``max_new_tokens`` wins over ``max_length``, which counts the prompt's columns (an
  error if the prompt already fills it). With neither set anywhere, 20 new tokens, capped
  so that the whole sequence fits ``n_positions`` (transformers 5; 4.x counted the prompt
  in those 20). ``min_length`` / ``min_new_tokens`` likewise.
* ``temperature``, ``top_k`` (default 50), ``top_p``, ``min_p`` act only with
  ``do_sample=True``; ``repetition_penalty`` and ``no_repeat_ngram_size`` act in every mode.
* ``eos_token_id=None`` means the model's; rows that end are padded with ``pad_token_id``
  (default: the first EOS id) until every row is done. ``attention_mask`` marks left
  padding (``tokenizer.padding_side = "left"``); without one, a ``pad_token_id`` that is not
  EOS marks it. Each row computes what it computes alone.
* The result: the input columns followed by the new ids, ``(batch * num_return_sequences,
  length)`` int64, as a torch tensor when the input was one. With ``return_dict_in_generate``,
  a ``GenerateDecoderOnlyOutput`` (beam search: ``GenerateBeamDecoderOnlyOutput``) holding
  ``sequences`` and, when asked, per step ``scores`` (after the processors) and ``logits``
  (raw); rows that have already finished carry raw logits in both (transformers' values
  there come from feeding padding and mean nothing either).
* Beam search (``num_beams > 1``): fastgpt/beam_search.py, transformers' procedure, so the
  sequences are transformers'.

Sampling draws from NumPy generators, seeded per call from torch's global generator when
torch is imported (else Python's ``random``), so ``torch.manual_seed(s)`` / ``set_seed(s)``
makes runs repeat (the draws themselves differ from torch's); ``seed=`` gives one explicitly.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from ...generate import Generator
from ._tensors import as_output, to_numpy, wants_torch
from .outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from .seeding import draw_seed

#: transformers 5's global defaults (GenerationConfig._get_default_generation_params) for what
#: fastgpt implements; max_length 20 counts new tokens when nothing sets a length.
DEFAULTS = {
    "max_length": 20, "max_new_tokens": None, "min_length": 0, "min_new_tokens": None, "do_sample": False,
    "num_beams": 1, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None, "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0, "length_penalty": 1.0, "early_stopping": False, "num_return_sequences": 1,
    "pad_token_id": None, "bos_token_id": None, "eos_token_id": None, "use_cache": True,
    "output_scores": False, "output_logits": False, "return_dict_in_generate": False,
}
# Neutral values of options fastgpt does not implement: accepted only at these.
_UNIMPLEMENTED = {"output_attentions": False, "output_hidden_states": False, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "diversity_penalty": 0.0,
                  "num_beam_groups": 1, "encoder_repetition_penalty": 1.0, "bad_words_ids": None,
                  "force_words_ids": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                  "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None,
                  "guidance_scale": None, "penalty_alpha": None, "max_time": None, "low_memory": None,
                  "exponential_decay_length_penalty": None, "renormalize_logits": False, "remove_invalid_values": False,
                  "top_h": None, "watermarking_config": None, "assistant_model": None, "streamer": None,
                  "logits_processor": None, "stopping_criteria": None, "prefix_allowed_tokens_fn": None,
                  "synced_gpus": None, "cache_implementation": None, "token_healing": None}
_IGNORED = frozenset({"transformers_version", "_from_model_config", "cache_config", "max_cache_len",
                      "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
                      "assistant_lookbehind", "target_lookbehind", "is_assistant", "decoder_start_token_id",
                      "encoder_no_repeat_ngram_size", "return_legacy_cache", "dola_layers"})
# fastgpt options that transformers does not have.
EXTRAS = ("seed", "presence_penalty", "frequency_penalty", "logit_bias")


class GenerationConfig:
    """transformers' GenerationConfig: unset options are None and fall back to the model's
    generation config, then to transformers' defaults (``DEFAULTS``)."""

    def __init__(self, **kwargs):
        for key in (*DEFAULTS, *EXTRAS):
            setattr(self, key, kwargs.pop(key, None))
        for key, value in kwargs.items():
            if key in _UNIMPLEMENTED or key in _IGNORED or key == "stop_strings":
                setattr(self, key, value)
            else:
                raise TypeError(f"GenerationConfig: unknown option {key!r}")

    def update(self, **kwargs) -> dict:
        """Set the given options; returns the ones that are not generation options."""
        unused = {}
        for key, value in kwargs.items():
            if key in DEFAULTS or key in EXTRAS or key in _UNIMPLEMENTED or key in _IGNORED or key == "stop_strings":
                setattr(self, key, value)
            else:
                unused[key] = value
        return unused

    def to_dict(self) -> dict:
        return copy.deepcopy(vars(self))

    def to_diff_dict(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if v is not None}

    def __repr__(self) -> str:
        return f"GenerationConfig {json.dumps(self.to_diff_dict(), indent=2, sort_keys=True)}"

    def __eq__(self, other) -> bool:
        return isinstance(other, GenerationConfig) and self.to_diff_dict() == other.to_diff_dict()

    def save_pretrained(self, save_directory) -> None:
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "generation_config.json").write_text(
            json.dumps(self.to_diff_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationConfig":
        return cls(**{k: v for k, v in d.items() if k not in _IGNORED})

    @classmethod
    def from_pretrained(cls, folder) -> "GenerationConfig":
        file = Path(folder) / "generation_config.json"
        try:
            return cls.from_dict(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{file}: cannot read ({e})") from None

    @classmethod
    def from_model_config(cls, config) -> "GenerationConfig":
        return cls(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                   pad_token_id=config.pad_token_id)


def _id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(to_numpy(value, "token id").item())] if not isinstance(value, int) else [value]


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


class GenerationMixin:
    """``generate`` for the models with a language-model head."""

    def _resolve_generation_options(self, generation_config, kwargs) -> dict:
        if generation_config is not None and not isinstance(generation_config, GenerationConfig):
            raise TypeError(f"generation_config must be a GenerationConfig, got {type(generation_config).__name__}")
        opts = dict(DEFAULTS)
        for source in (self.generation_config, generation_config):
            if source is not None:
                opts.update({k: v for k, v in vars(source).items() if v is not None})
        unknown = sorted(k for k in kwargs if k not in DEFAULTS and k not in EXTRAS and k not in _UNIMPLEMENTED
                         and k not in _IGNORED and k not in ("stop_strings", "tokenizer"))
        if unknown:
            raise TypeError(f"generate: unsupported argument(s) {', '.join(unknown)}")
        opts.update({k: v for k, v in kwargs.items() if v is not None})     # None: unset, as transformers 5
        for key, neutral in _UNIMPLEMENTED.items():
            if opts.get(key, neutral) not in (neutral, None):
                raise ValueError(f"generate: {key}={opts[key]!r} is not supported by fastgpt")
        opts["_length_set"] = any(
            kwargs.get(k) is not None or (src is not None and getattr(src, k, None) is not None)
            for k in ("max_length", "max_new_tokens") for src in (self.generation_config, generation_config))
        return opts

    def generate(self, inputs=None, generation_config: GenerationConfig | None = None, *, input_ids=None,
                 attention_mask=None, **kwargs):
        """Prompt columns + generated ids (see the module docstring for the semantics)."""
        if inputs is None:
            inputs = input_ids
        torch_out = wants_torch(inputs, attention_mask)
        opts = self._resolve_generation_options(generation_config, kwargs)
        if inputs is None:                       # start from the BOS token, as transformers does
            bos = opts["bos_token_id"] if opts["bos_token_id"] is not None else self.config.bos_token_id
            if bos is None:
                raise ValueError("generate needs input_ids, or a bos_token_id to start from")
            inputs = np.array([[int(bos)]], dtype=np.int64)
        ids = to_numpy(inputs, "input_ids")
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
            raise ValueError(f"input_ids must be (batch, seq) integer ids, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        B, T = ids.shape

        eos_ids = _id_list(opts["eos_token_id"] if opts["eos_token_id"] is not None else self.config.eos_token_id)
        pad = opts["pad_token_id"]
        pad = int(pad) if pad is not None else (eos_ids[0] if eos_ids else None)
        if attention_mask is None and pad is not None and pad not in eos_ids and (ids == pad).any():
            attention_mask = ids != pad          # transformers infers the mask from the pad token then
        pads = (np.zeros(B, np.int64) if attention_mask is None
                else _left_pad_counts(to_numpy(attention_mask, "attention_mask").reshape(B, T)))
        n_new = self._new_token_count(opts, T)
        min_new = opts["min_new_tokens"]
        if min_new is None:
            min_new = max(0, (opts["min_length"] or 0) - T)

        options = dict(max_new_tokens=n_new, min_new_tokens=min_new, do_sample=bool(opts["do_sample"]),
                       repetition_penalty=opts["repetition_penalty"],
                       no_repeat_ngram_size=opts["no_repeat_ngram_size"],
                       # an id outside the vocabulary (a small model keeping GPT-2's 50256) never ends a row
                       eos_token_id=[i for i in eos_ids if 0 <= i < self.config.vocab_size],
                       num_return_sequences=opts["num_return_sequences"],
                       **{k: opts[k] for k in EXTRAS if opts.get(k) is not None})
        if opts.get("stop_strings"):
            # transformers' StopStringCriteria also matches a string that begins in the prompt
            options.update(stop=opts["stop_strings"], stop_in_prompt=True)
        if options["do_sample"]:
            options.update(temperature=opts["temperature"], top_k=opts["top_k"] or 0, top_p=opts["top_p"],
                           min_p=opts["min_p"] or 0.0)
            options.setdefault("seed", draw_seed())
        tokenizer = getattr(opts.get("tokenizer"), "_backend", None)
        generator = Generator(self.model, tokenizer)
        prompts = [ids[b, pads[b]:].tolist() for b in range(B)]
        if opts["num_beams"] > 1:
            return self._beam_generate(generator, ids, prompts, options, opts, eos_ids, pad, torch_out)
        if not opts["return_dict_in_generate"]:
            new = generator.generate_ids(prompts, **options)      # rows grouped by prompt
            return as_output(self._assemble(ids, new, opts["num_return_sequences"], pad), torch_out)
        trace = generator.trace_ids(prompts, **options)
        sequences = self._assemble(ids, [r.token_ids for r in trace.results], opts["num_return_sequences"], pad)
        return GenerateDecoderOnlyOutput(
            sequences=as_output(sequences, torch_out),
            scores=as_output(tuple(trace.scores), torch_out) if opts["output_scores"] else None,
            logits=as_output(tuple(trace.logits), torch_out) if opts["output_logits"] else None)

    def _beam_generate(self, generator, ids, prompts, options, opts, eos_ids, pad, torch_out):
        """Beam search, with transformers' result: the best beams' rows, padded after their end
        with ``pad_token_id or eos_token_id[0]`` (transformers' expression, so a pad id 0 pads
        with EOS), and with ``return_dict_in_generate`` the scores and beam indices."""
        want = opts["return_dict_in_generate"]
        out = generator.beam_search(prompts, num_beams=opts["num_beams"], length_penalty=opts["length_penalty"],
                                    early_stopping=opts["early_stopping"],
                                    return_scores=bool(want and opts["output_scores"]),
                                    return_logits=bool(want and opts["output_logits"]), **options)
        hyps = [h for per_prompt in out.hypotheses for h in per_prompt]
        fill = (pad or eos_ids[0]) if eos_ids else -1
        sequences = self._assemble(ids, [h.token_ids for h in hyps], opts["num_return_sequences"], fill)
        if not want:
            return as_output(sequences, torch_out)
        width = sequences.shape[1] - ids.shape[1]
        beam_indices = np.full((len(hyps), width), -1, np.int64)
        for r, h in enumerate(hyps):
            beam_indices[r, :len(h.beam_indices)] = h.beam_indices
        scores = np.array([h.score for h in hyps], np.float32)
        return GenerateBeamDecoderOnlyOutput(
            sequences=as_output(sequences, torch_out),
            sequences_scores=as_output(scores, torch_out) if opts["output_scores"] else None,
            scores=None if out.scores is None else as_output(tuple(out.scores), torch_out),
            logits=None if out.logits is None else as_output(tuple(out.logits), torch_out),
            beam_indices=as_output(beam_indices, torch_out))

    def _new_token_count(self, opts: dict, T: int) -> int:
        if opts["max_new_tokens"] is not None:
            return int(opts["max_new_tokens"])
        if opts["_length_set"]:
            max_length = int(opts["max_length"])
        else:                    # transformers 5: 20 new tokens, the whole within the position table
            max_length = min(DEFAULTS["max_length"] + T, self.config.n_positions)
        if T >= max_length:
            raise ValueError(f"Input length of input_ids is {T}, but `max_length` is set to {max_length}. "
                             "Increase `max_length` or, better yet, set `max_new_tokens`.")
        return max_length - T

    @staticmethod
    def _assemble(ids: np.ndarray, new: list[list[int]], per_prompt: int, pad: int | None) -> np.ndarray:
        """(B * per_prompt, T + longest) int64: each prompt row, then its new ids, then padding."""
        T = ids.shape[1]
        n = max((len(row) for row in new), default=0)
        if pad is None and any(len(row) < n for row in new):
            raise ValueError("rows ended at different lengths but there is no pad_token_id to fill them")
        out = np.full((len(new), T + n), 0 if pad is None else pad, np.int64)
        for r, row in enumerate(new):
            out[r, :T] = ids[r // per_prompt]
            out[r, T:T + len(row)] = row
        return out
