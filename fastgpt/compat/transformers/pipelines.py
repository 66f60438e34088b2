"""transformers' ``pipeline("text-generation", ...)`` over the compat model and tokenizer.

As in transformers 5: a str gives ``[{"generated_text": ...}, ...]`` (one dict per returned
sequence), a list of str gives one such list per prompt; ``return_full_text`` (default True)
puts the prompt text in front of the new text, decoded with ``skip_special_tokens=True``;
``return_tensors=True`` gives ``generated_token_ids`` instead. Unless the call, the
pipeline's construction or the model's generation_config.json set them, generation uses the
pipeline's defaults: ``max_new_tokens=256``, ``do_sample=True``, ``temperature=0.7``.
Prompts run ``batch_size`` at a time, left-padded (the pipeline sets
``tokenizer.padding_side = "left"``, as transformers does), which needs a pad token.

Other tasks and chat (lists of messages) are refused with an error naming them.
"""

from __future__ import annotations

import numpy as np

from ._tensors import check_device
from .auto import AutoModelForCausalLM, AutoTokenizer
from .generation import DEFAULTS as GENERATE_OPTIONS
from .generation import EXTRAS as GENERATE_EXTRAS
from .modeling import GPT2LMHeadModel
from .tokenization import GPT2Tokenizer

#: transformers' TextGenerationPipeline._default_generation_config.
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
_SAMPLING_ONLY = frozenset({"temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"})
_POSTPROCESS = frozenset({"return_full_text", "return_tensors", "return_text", "clean_up_tokenization_spaces",
                          "skip_special_tokens"})
_PREPROCESS = frozenset({"prefix", "truncation", "padding", "add_special_tokens", "handle_long_generation"})


def pipeline(task: str | None = None, model=None, tokenizer=None, *, device=None, device_map=None, dtype=None,
             torch_dtype=None, batch_size: int | None = None, framework: str | None = None, model_kwargs=None,
             **kwargs) -> "TextGenerationPipeline":
    """``pipeline("text-generation", model=..., tokenizer=...)``: ``model`` is a name, a folder
    or a loaded ``GPT2LMHeadModel``; ``tokenizer`` a name, a folder or a tokenizer (default:
    the model's name). Generation options given here apply to every call."""
    if task not in (None, "text-generation"):
        raise ValueError(f"pipeline task {task!r} is not supported: fastgpt provides 'text-generation' only")
    if model is None:
        raise ValueError("pipeline needs model= (a name, a folder, or a loaded model): fastgpt has no default model")
    if framework not in (None, "pt"):
        raise ValueError(f"framework={framework!r}: fastgpt's pipeline returns what the PyTorch one returns")
    check_device(device, "pipeline(device=...)")
    if isinstance(model, str):
        load = dict(model_kwargs or {})
        if dtype is not None or torch_dtype is not None:
            load["dtype"] = dtype if dtype is not None else torch_dtype
        if device_map is not None:
            load["device_map"] = device_map
        tokenizer = model if tokenizer is None else tokenizer
        model = AutoModelForCausalLM.from_pretrained(model, **load)
    elif not isinstance(model, GPT2LMHeadModel):
        raise TypeError(f"pipeline(model=...) must be a name, a folder or a fastgpt.compat.transformers "
                        f"GPT2LMHeadModel, got {type(model).__name__}")
    if tokenizer is None:
        if not model.name_or_path:
            raise ValueError("pipeline: give tokenizer= (the model was not loaded by name, so its tokenizer is unknown)")
        tokenizer = model.name_or_path
    if isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    elif not isinstance(tokenizer, GPT2Tokenizer):
        raise TypeError(f"pipeline(tokenizer=...) must be a name, a folder or a GPT2Tokenizer, got "
                        f"{type(tokenizer).__name__}")
    return TextGenerationPipeline(model, tokenizer, batch_size=batch_size, **kwargs)


class TextGenerationPipeline:
    """Complete prompts with a GPT-2 model; see the module docstring for the results."""

    task = "text-generation"

    def __init__(self, model: GPT2LMHeadModel, tokenizer: GPT2Tokenizer, batch_size: int | None = None, **kwargs):
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.padding_side == "right":        # decoder-only batches are left-padded (transformers does this too)
            tokenizer.padding_side = "left"
        self.batch_size = batch_size
        self._call_kwargs = self._check_kwargs(kwargs)

    @property
    def device(self):
        return self.model.device

    @staticmethod
    def _check_kwargs(kwargs: dict) -> dict:
        known = _POSTPROCESS | _PREPROCESS | set(GENERATE_OPTIONS) | set(GENERATE_EXTRAS) | {
            "max_length", "stop_sequence", "batch_size", "min_length", "min_new_tokens"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"text-generation pipeline: unsupported argument(s) {', '.join(unknown)}")
        return dict(kwargs)

    def _generate_kwargs(self, call: dict) -> dict:
        """The call's generation options over the pipeline's, plus the pipeline's defaults for
        what neither they nor the model's generation config set (sampling ones only when sampling)."""
        given = {k: v for k, v in call.items() if k in GENERATE_OPTIONS or k in GENERATE_EXTRAS
                 or k in ("min_length", "stop_sequence")}
        if "stop_sequence" in given:
            stop = given.pop("stop_sequence")
            given["stop_strings"] = [stop] if isinstance(stop, str) else list(stop)
            given["tokenizer"] = self.tokenizer
        model_set = {k for k, v in vars(self.model.generation_config).items() if v is not None}
        is_set = set(given) | model_set
        added = {k: v for k, v in PIPELINE_DEFAULTS.items()
                 if k not in is_set and not (k == "max_new_tokens" and "max_length" in is_set)}
        if self.tokenizer.pad_token_id is not None and "pad_token_id" not in is_set:
            added["pad_token_id"] = self.tokenizer.pad_token_id
        merged = {**given, **added}
        if not merged.get("do_sample", getattr(self.model.generation_config, "do_sample", None)):
            merged = {k: v for k, v in merged.items() if k not in _SAMPLING_ONLY or k in given}
        return merged

    def __call__(self, text_inputs, **kwargs):
        call = {**self._call_kwargs, **self._check_kwargs(kwargs)}
        single = isinstance(text_inputs, str)
        prompts = [text_inputs] if single else list(text_inputs)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("text-generation inputs must be a str or a list of str (chat messages are not supported)")
        if call.get("handle_long_generation") is not None:
            raise ValueError("handle_long_generation is not supported: fastgpt refuses prompts that do not fit")
        return_type = self._return_type(call)
        generate_kwargs = self._generate_kwargs(call)
        batch_size = call.get("batch_size", self.batch_size) or 1
        if batch_size > 1 and len(prompts) > 1 and self.tokenizer.pad_token_id is None:
            raise ValueError("Pipeline with tokenizer without pad_token cannot do batching. You can try to set it "
                             "with `pipe.tokenizer.pad_token_id = model.config.eos_token_id`.")
        results = []
        for start in range(0, len(prompts), batch_size):
            results += self._run_batch(prompts[start:start + batch_size], call, generate_kwargs, return_type)
        return results[0] if single else results

    @staticmethod
    def _return_type(call: dict) -> str:
        if call.get("return_tensors"):
            return "tensors"
        return "full_text" if call.get("return_full_text", True) else "new_text"

    def _run_batch(self, prompts: list[str], call: dict, generate_kwargs: dict, return_type: str) -> list:
        prefix = call.get("prefix") or ""
        tok_kwargs = {k: call[k] for k in ("truncation", "add_special_tokens", "max_length") if k in call}
        # Each prompt is tokenized alone, then the batch is padded (transformers' pad_collate_fn).
        rows = [self.tokenizer(prefix + p, **tok_kwargs)["input_ids"] for p in prompts]
        n_prompt = max(len(r) for r in rows)
        if n_prompt == 0:                        # empty prompts: generate from the BOS token, as transformers
            ids = mask = None
        else:
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            left = self.tokenizer.padding_side == "left"
            ids = np.array([[pad] * (n_prompt - len(r)) + r if left else r + [pad] * (n_prompt - len(r))
                            for r in rows], dtype=np.int64)
            mask = np.array([[0] * (n_prompt - len(r)) + [1] * len(r) if left else [1] * len(r) + [0] * (n_prompt - len(r))
                             for r in rows], dtype=np.int64)
        sequences = self.model.generate(input_ids=ids, attention_mask=mask, **generate_kwargs)
        per_prompt = len(sequences) // len(prompts)
        skip = call.get("skip_special_tokens", True)
        out = []
        for i, prompt in enumerate(prompts):
            records = []
            for seq in sequences[i * per_prompt:(i + 1) * per_prompt].tolist():
                if return_type == "tensors":
                    records.append({"generated_token_ids": seq})
                    continue
                text = self.tokenizer.decode(seq[n_prompt:], skip_special_tokens=skip)
                records.append({"generated_text": prompt + text if return_type == "full_text" else text})
            out.append(records)
        return out
