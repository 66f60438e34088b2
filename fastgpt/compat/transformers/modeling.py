"""transformers' GPT-2 model classes, for inference, over one fastgpt ``Model`` each.

``GPT2Model`` (the body: ``last_hidden_state``), ``GPT2LMHeadModel`` (``logits``, ``loss``,
``generate``) and ``GPT2DoubleHeadsModel`` (also ``mc_logits`` / ``mc_loss`` from the
``multiple_choice_head.summary`` weights) share the construction and the
``torch.nn.Module`` habits inference code relies on (``eval()``, ``.to("cpu")``,
``state_dict()``, ``parameters()``, ``num_parameters()``, ``save_pretrained``). The forward
pass is fastgpt's own ``Model.forward_full``; this module only translates arguments and results.

Out of scope, with ``OutOfScopeError`` (a ``NotImplementedError``): ``train()``,
``loss.backward()``, GPUs, dtype conversions after loading (load with ``dtype=``) and
``resize_token_embeddings``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...loaders.gpt2 import load_pretrained_parts, weights_to_hf_state_dict
from ...loaders.safetensors import write_safetensors
from ...model import Model
from ...quant import as_float32
from . import hub
from ._losses import causal_lm_loss, cross_entropy
from ._tensors import OutOfScopeError, as_loss, as_output, loaded_torch, to_numpy, wants_torch
from .cache import Cache, as_kv_cache
from .configuration import GPT2Config, as_compat_config
from .generation import GenerationConfig, GenerationMixin
from .loading import check_to_args, split_load_kwargs, weights_dtype
from .outputs import (BaseModelOutputWithPastAndCrossAttentions, CausalLMOutputWithCrossAttentions,
                      GPT2DoubleHeadsModelOutput)
from .sequence_summary import SequenceSummary


class GPT2PreTrainedModel:
    """What every GPT-2 class shares: loading, saving, and the module surface."""

    config_class = GPT2Config
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    _state_prefix = "transformer."       # where the body's tensors sit in this class's state dict
    _has_lm_head = True

    def __init__(self, config, *, backend: str = "auto", num_threads: int | None = None, seed: int = 0):
        """A randomly initialised model (GPT-2's init, seeded), like ``GPT2LMHeadModel(config)``."""
        self.config = as_compat_config(config)
        self.model = Model.random(self.config.engine_config(), seed=seed, backend=backend, num_threads=num_threads)
        self._init_heads({}, seed)
        self.generation_config = GenerationConfig.from_model_config(self.config)
        self.name_or_path = ""

    def _init_heads(self, tensors: dict, seed: int) -> None:
        """Task heads beyond the language model (GPT2DoubleHeadsModel's); none here."""

    @classmethod
    def from_config(cls, config, **kwargs):
        return cls(config, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path, *, config=None, cache_dir=None, revision=None, backend: str = "auto",
                        num_threads: int | None = None, dtype=None, torch_dtype=None, **kwargs):
        """Load a Hugging Face GPT-2 folder, a bundled model, or a Hub name from the local
        cache (nothing is downloaded). ``dtype`` / ``torch_dtype`` choose the precision the
        weights are held in (float32, float16, bfloat16; fastgpt computes in float32); other
        keyword arguments that name config fields override them, as in transformers."""
        overrides = split_load_kwargs(f"{cls.__name__}.from_pretrained", kwargs, config_keys=True)
        folder = hub.resolve(name_or_path, cache_dir=cache_dir, revision=revision)
        engine_config, weights, heads = load_pretrained_parts(folder)
        if config is None:
            config = (GPT2Config.from_pretrained(folder) if (folder / "config.json").is_file()
                      else as_compat_config(engine_config))
        config = as_compat_config(config)
        config.update(overrides)
        self = cls.__new__(cls)
        self.config = config
        self.model = Model(engine_config, weights, backend=backend, num_threads=num_threads,
                           dtype=weights_dtype(dtype if dtype is not None else torch_dtype))
        self._init_heads(heads, seed=0)
        self.generation_config = (GenerationConfig.from_pretrained(folder)
                                  if (folder / "generation_config.json").is_file()
                                  else GenerationConfig.from_model_config(config))
        self.name_or_path = str(name_or_path)
        return self

    # -- torch.nn.Module habits ---------------------------------------------------------------------
    training = False

    def eval(self):
        return self

    def train(self, mode: bool = True):
        if mode:
            raise OutOfScopeError(f"{type(self).__name__}.train()")
        return self

    def requires_grad_(self, requires_grad: bool = True):
        if requires_grad:
            raise OutOfScopeError(f"{type(self).__name__}.requires_grad_(True)")
        return self

    def to(self, *args, **kwargs):
        """The CPU and float32 are accepted (and change nothing); a GPU or a dtype is refused."""
        check_to_args(f"{type(self).__name__}.to", *args, **kwargs)
        return self

    def cpu(self):
        return self

    def float(self):
        return self

    def cuda(self, *args, **kwargs):
        raise OutOfScopeError(f"{type(self).__name__}.cuda()")

    def half(self):
        raise OutOfScopeError(f"{type(self).__name__}.half() (load with dtype='float16' instead)")

    def bfloat16(self):
        raise OutOfScopeError(f"{type(self).__name__}.bfloat16() (load with dtype='bfloat16' instead)")

    def resize_token_embeddings(self, *args, **kwargs):
        raise OutOfScopeError(f"{type(self).__name__}.resize_token_embeddings() (new embedding rows need training)")

    @property
    def device(self):
        torch = loaded_torch()
        return torch.device("cpu") if torch is not None else "cpu"

    @property
    def dtype(self):
        """float32: what fastgpt computes in, whatever the weights are held in."""
        torch = loaded_torch()
        return torch.float32 if torch is not None else np.dtype(np.float32)

    def can_generate(self) -> bool:
        return self._has_lm_head

    # -- parameters -----------------------------------------------------------------------------------
    def _numpy_state_dict(self) -> dict[str, np.ndarray]:
        """{transformers name: read-only float32 view in transformers' layout}."""
        tensors = weights_to_hf_state_dict(self.model.weights, prefix=self._state_prefix)
        if not self._has_lm_head:
            tensors.pop("lm_head.weight", None)
        tensors.update(self._head_tensors())
        views = {}
        for name, arr in tensors.items():
            view = arr.view()
            view.flags.writeable = False
            views[name] = view
        return views

    def _head_tensors(self) -> dict[str, np.ndarray]:
        return {}

    def state_dict(self) -> dict:
        """transformers' names and layouts. NumPy: read-only views of the weights; with torch
        imported: torch tensors (copies, so that writing to them cannot change the model)."""
        torch_out = loaded_torch() is not None
        return {name: as_output(arr, torch_out) for name, arr in self._numpy_state_dict().items()}

    def named_parameters(self):
        for name, arr in self.state_dict().items():
            if not (name == "lm_head.weight" and self.model.weights.tied_head):  # tied: wte, counted once
                yield name, arr

    def parameters(self):
        for _, arr in self.named_parameters():
            yield arr

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        sizes = {name: arr.size for name, arr in self._numpy_state_dict().items()
                 if not (name == "lm_head.weight" and self.model.weights.tied_head)}
        if exclude_embeddings:
            sizes = {k: v for k, v in sizes.items() if not k.endswith(("wte.weight", "wpe.weight"))}
        return int(sum(sizes.values()))

    def save_pretrained(self, save_directory, safe_serialization: bool = True, **kwargs) -> None:
        """config.json, generation_config.json and model.safetensors, as transformers writes them
        (a tied lm_head is not stored); transformers and fastgpt load the folder back."""
        if not safe_serialization:
            raise ValueError("save_pretrained writes safetensors only (safe_serialization=True)")
        folder = Path(save_directory)
        if folder.is_file():
            raise ValueError(f"save_pretrained: {folder} is a file; give a folder")
        folder.mkdir(parents=True, exist_ok=True)
        config = GPT2Config.from_dict(self.config.to_dict())
        config.architectures = [type(self).__name__]
        config.tie_word_embeddings = self.model.weights.tied_head
        config.save_pretrained(folder)
        self.generation_config.save_pretrained(folder)
        tensors = {k: np.ascontiguousarray(v) for k, v in self._numpy_state_dict().items()
                   if not (k == "lm_head.weight" and self.model.weights.tied_head)}
        write_safetensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- the forward pass ---------------------------------------------------------------------------
    def get_input_embeddings(self) -> "Embedding":
        return Embedding(self.model)

    def _transformer(self, input_ids, past_key_values, attention_mask, token_type_ids, position_ids, head_mask,
                     inputs_embeds, use_cache, output_attentions, output_hidden_states, compute_logits,
                     kwargs: dict) -> "_BodyOutput":
        """GPT2Model's forward, in transformers' terms, on fastgpt's Model.forward_full.

        Leading dimensions of the ids (GPT2DoubleHeadsModel's (batch, choices, seq)) are
        flattened into rows and restored on the results."""
        past = _one_of(kwargs, past_key_values)
        if kwargs.pop("encoder_hidden_states", None) is not None or kwargs.pop("encoder_attention_mask", None) is not None:
            raise ValueError("encoder_hidden_states: GPT-2's cross-attention (add_cross_attention) is not supported")
        unknown = sorted(k for k, v in kwargs.items() if v is not None)
        if unknown:
            raise TypeError(f"{type(self).__name__}.forward: unsupported argument(s) {', '.join(unknown)}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You have to specify either input_ids or inputs_embeds (exactly one of them)")
        torch_out = wants_torch(input_ids, inputs_embeds, attention_mask, token_type_ids, position_ids, head_mask)
        config = self.model.config
        ids = embeds = None
        if input_ids is not None:
            ids = _integers(input_ids, "input_ids")
            if ids.ndim == 0:
                raise ValueError(f"input_ids must have shape (batch, seq), got a single id {int(ids)}")
            if ids.size == 0:
                raise ValueError(f"input_ids is empty (shape {tuple(ids.shape)}): give at least one token per row")
            lead, T = ids.shape[:-1] or (1,), ids.shape[-1]
            ids = ids.reshape(-1, T)
        else:
            embeds = to_numpy(inputs_embeds, "inputs_embeds").astype(np.float32)
            if embeds.ndim < 2:
                raise ValueError(f"inputs_embeds must have shape (batch, seq, n_embd), got {embeds.shape}")
            if embeds.ndim == 2:
                embeds = embeds[None]
            lead, T = embeds.shape[:-2], embeds.shape[-2]
            embeds = embeds.reshape(-1, T, embeds.shape[-1])
        B = int(np.prod(lead))
        use_cache = self.config.use_cache if use_cache is None else use_cache
        kv = None if past is None else as_kv_cache(past, config)
        past_len = 0 if kv is None else kv.pos
        # Positions the caller did not give are ours to count: say which input is too long
        # rather than blame position_ids, which the caller never passed.
        if position_ids is None and past_len + T > config.n_positions:
            name = "input_ids" if input_ids is not None else "inputs_embeds"
            past_note = f" after the {past_len} tokens in past_key_values" if past_len else ""
            raise ValueError(f"{name} has {T} tokens{past_note}, but the model's context is {config.n_positions} "
                             "tokens (n_positions)")
        if kv is None:
            kv = self.model.new_cache(batch_size=B, max_len=config.n_positions if use_cache else T)
        if kv.batch_size != B:
            raise ValueError(f"past_key_values hold {kv.batch_size} rows, the input has {B}")
        if token_type_ids is not None:           # GPT-2 embeds token types with wte, as tokens
            types = _shaped(_integers(token_type_ids, "token_type_ids"), (B, T), "token_type_ids")
            embeds = (self.model.token_embeddings(ids) if embeds is None else embeds) + self.model.token_embeddings(types)
            ids = None
        positions = (np.arange(past_len, past_len + T)[None, :].repeat(B, 0) if position_ids is None
                     else _shaped(_integers(position_ids, "position_ids"), (-1, T), "position_ids"))
        mask = None if attention_mask is None else _shaped(to_numpy(attention_mask, "attention_mask"), (B, -1),
                                                           "attention_mask")
        if head_mask is not None:
            head_mask = to_numpy(head_mask, "head_mask").astype(np.float32)
        out = self.model.forward_full(ids, kv, inputs_embeds=embeds, position_ids=positions, attention_mask=mask,
                                      head_mask=head_mask,
                                      output_hidden_states=self._flag(output_hidden_states, "output_hidden_states"),
                                      output_attentions=self._flag(output_attentions, "output_attentions"),
                                      compute_logits=compute_logits)
        return _BodyOutput(out, Cache(kv, torch_out) if use_cache else None, torch_out, tuple(lead), T)

    def _flag(self, value, name: str) -> bool:
        return bool(getattr(self.config, name) if value is None else value)

    def _returns(self, output, return_dict):
        return output if (self.config.return_dict if return_dict is None else return_dict) else output.to_tuple()

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}(n_layer={c.n_layer}, n_embd={c.n_embd}, n_head={c.n_head}, "
                f"vocab_size={c.vocab_size}, n_positions={c.n_positions}, backend={self.model.backend.name!r}, "
                f"weights={self.model.dtype})")


class GPT2LMHeadModel(GenerationMixin, GPT2PreTrainedModel):
    """transformers' ``GPT2LMHeadModel``: logits, the language-model loss, and ``generate``."""

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, logits_to_keep: int = 0,
                **kwargs) -> CausalLMOutputWithCrossAttentions:
        """``logits`` (batch, seq, vocab); with ``labels``, ``loss`` (position t predicts
        labels[t + 1], -100 ignored); ``cache`` / ``past_key_values`` unless ``use_cache=False``.
        The arguments are the API reference's (``past=`` and ``cache=`` name the past too)."""
        body = self._transformer(input_ids, past_key_values, attention_mask, token_type_ids, position_ids,
                                 head_mask, inputs_embeds, use_cache, output_attentions, output_hidden_states,
                                 True, kwargs)
        logits = body.shaped(body.out.logits)
        if logits_to_keep:
            logits = logits[..., -logits_to_keep:, :]
        loss = None if labels is None else causal_lm_loss(
            logits, _shaped(_integers(labels, "labels"), logits.shape[:-1], "labels"))
        return self._returns(CausalLMOutputWithCrossAttentions(
            loss=as_loss(loss, body.torch_out), logits=body.tensor(logits), cache=body.cache,
            hidden_states=body.hidden_states(), attentions=body.attentions()), return_dict)

    @property
    def transformer(self) -> "GPT2Model":
        """The body, sharing this model's weights (transformers' ``model.transformer``)."""
        return GPT2Model._sharing(self)


class GPT2Model(GPT2PreTrainedModel):
    """transformers' ``GPT2Model``: the body, returning ``last_hidden_state`` (after ``ln_f``)."""

    _state_prefix = ""
    _has_lm_head = False

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs) -> BaseModelOutputWithPastAndCrossAttentions:
        """``last_hidden_state`` (batch, seq, n_embd), after the final layer norm; the cache;
        hidden states and attentions when asked."""
        body = self._transformer(input_ids, past_key_values, attention_mask, token_type_ids, position_ids,
                                 head_mask, inputs_embeds, use_cache, output_attentions, output_hidden_states,
                                 False, kwargs)
        return self._returns(BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=body.tensor(body.shaped(body.out.last_hidden_state)), cache=body.cache,
            hidden_states=body.hidden_states(), attentions=body.attentions()), return_dict)

    @classmethod
    def _sharing(cls, other: GPT2PreTrainedModel) -> "GPT2Model":
        body = cls.__new__(cls)
        body.config, body.model, body.name_or_path = other.config, other.model, other.name_or_path
        body.generation_config = other.generation_config
        return body


class GPT2DoubleHeadsModel(GenerationMixin, GPT2PreTrainedModel):
    """transformers' ``GPT2DoubleHeadsModel``: language-model logits and one multiple-choice
    score per sequence (input ids of shape (batch, num_choices, seq))."""

    def _init_heads(self, tensors: dict, seed: int) -> None:
        self.config.num_labels = 1                    # as transformers' __init__ does
        self.multiple_choice_head = SequenceSummary(self.config, tensors, seed)

    def _head_tensors(self) -> dict[str, np.ndarray]:
        return self.multiple_choice_head.tensors()

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, mc_token_ids=None, labels=None,
                mc_labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                **kwargs) -> GPT2DoubleHeadsModelOutput:
        """``logits`` (batch, choices, seq, vocab) and ``mc_logits`` (batch, choices): the
        multiple-choice head on the hidden state at ``mc_token_ids`` (default: the last
        token); ``loss`` from ``labels`` (the old API's ``lm_labels``), ``mc_loss`` from
        ``mc_labels``, as transformers computes them."""
        lm_labels = kwargs.pop("lm_labels", None)
        if labels is None:
            labels = lm_labels
        body = self._transformer(input_ids, past_key_values, attention_mask, token_type_ids, position_ids,
                                 head_mask, inputs_embeds, use_cache, output_attentions, output_hidden_states,
                                 True, kwargs)
        logits = body.shaped(body.out.logits)
        hidden = body.shaped(body.out.last_hidden_state)
        cls_index = None if mc_token_ids is None else _shaped(_integers(mc_token_ids, "mc_token_ids"),
                                                                hidden.shape[:-2], "mc_token_ids")
        mc_logits = self.multiple_choice_head(hidden, cls_index)                 # (..., num_labels)
        if mc_logits.shape[-1] == 1:                                             # transformers' squeeze(-1)
            mc_logits = mc_logits[..., 0]
        loss = None if labels is None else causal_lm_loss(
            logits, _shaped(_integers(labels, "labels"), logits.shape[:-1], "labels"))
        mc_loss = None
        if mc_labels is not None:
            flat = mc_logits.reshape(-1, mc_logits.shape[-1])
            mc_loss = cross_entropy(flat, _integers(mc_labels, "mc_labels").reshape(-1), "mc_labels")
        t = body.torch_out
        return self._returns(GPT2DoubleHeadsModelOutput(
            loss=as_loss(loss, t), mc_loss=as_loss(mc_loss, t), logits=body.tensor(logits),
            mc_logits=body.tensor(np.ascontiguousarray(mc_logits, dtype=np.float32)), cache=body.cache,
            hidden_states=body.hidden_states(), attentions=body.attentions()), return_dict)


class Embedding:
    """``get_input_embeddings()``: ``embedding(ids)`` gives wte's rows; ``.weight`` the table
    (read-only), as torch's ``nn.Embedding``."""

    def __init__(self, model: Model):
        self._model = model

    @property
    def weight(self):
        table = as_float32(self._model.weights.wte).view()
        table.flags.writeable = False
        return as_output(table, loaded_torch() is not None)

    def __call__(self, input_ids):
        return as_output(self._model.token_embeddings(_integers(input_ids, "input_ids")), wants_torch(input_ids))


class _BodyOutput:
    """One body pass: fastgpt's ForwardOutput, the cache, and how to hand results back."""

    def __init__(self, out, cache, torch_out: bool, lead: tuple, T: int):
        self.out, self.cache, self.torch_out, self.lead, self.T = out, cache, torch_out, lead, T

    def shaped(self, arr: np.ndarray) -> np.ndarray:
        """(rows, T, ...) back to the input's leading dimensions."""
        return arr.reshape(self.lead + (self.T,) + arr.shape[2:])

    def tensor(self, arr):
        return as_output(arr, self.torch_out)

    def hidden_states(self):
        """transformers' tuple: the embeddings, each block's output, the last one after ln_f."""
        states = self.out.hidden_states
        if states is None:
            return None
        return tuple(self.tensor(self.shaped(h)) for h in states[:-1] + (self.out.last_hidden_state,))

    def attentions(self):
        probs = self.out.attentions
        return None if probs is None else tuple(self.tensor(p.reshape(self.lead + p.shape[1:])) for p in probs)


def _one_of(kwargs: dict, past_key_values):
    """The past under any of its names: past_key_values, cache (transformers 5), past (the old API)."""
    given = {name: value for name, value in (("past_key_values", past_key_values), ("cache", kwargs.pop("cache", None)),
                                             ("past", kwargs.pop("past", None))) if value is not None}
    if len(given) > 1:
        raise ValueError(f"give the past once: got {', '.join(given)}")
    return next(iter(given.values()), None)


def _shaped(arr: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    """arr reshaped to shape (one -1 allowed), or a ValueError naming the argument."""
    try:
        return arr.reshape(shape)
    except ValueError:
        raise ValueError(f"{name} has shape {arr.shape}, which does not fit {tuple(shape)} "
                         "(the input ids' shape)") from None


def _integers(value, name: str) -> np.ndarray:
    arr = to_numpy(value, name)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)
