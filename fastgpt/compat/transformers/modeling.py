"""transformers' GPT-2 model classes, for inference, over one fastgpt ``Model`` each.

``GPT2Model`` (the body: ``last_hidden_state``), ``GPT2LMHeadModel`` (``logits``, ``loss``,
``generate``) and ``GPT2DoubleHeadsModel`` (also ``mc_logits`` / ``mc_loss`` from the
``multiple_choice_head.summary`` weights) share the construction and the
``torch.nn.Module`` habits inference code relies on (``eval()``, ``.to("cpu")``,
``state_dict()``, ``parameters()``, ``num_parameters()``, ``save_pretrained``). The forward
pass is fastgpt's own ``Model.forward``; this module only translates arguments and results.

Out of scope, with ``OutOfScopeError`` (a ``NotImplementedError``): ``train()``,
``loss.backward()``, GPUs and dtype conversions after loading (load with ``dtype=``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._numpy_ops import ACTIVATION_FUNCTIONS
from ...config import ConfigError
from ...loaders.gpt2 import CheckpointMismatchError, load_pretrained_parts, weights_to_hf_state_dict
from ...loaders.safetensors import write_safetensors
from ...model import Model
from . import hub
from ._losses import causal_lm_loss
from ._tensors import OutOfScopeError, as_loss, as_output, loaded_torch, to_numpy, wants_torch
from .configuration import GPT2Config, as_compat_config
from .generation import GenerationConfig, GenerationMixin
from .loading import check_to_args, split_load_kwargs, weights_dtype
from .outputs import CausalLMOutputWithCrossAttentions


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

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}(n_layer={c.n_layer}, n_embd={c.n_embd}, n_head={c.n_head}, "
                f"vocab_size={c.vocab_size}, n_positions={c.n_positions}, backend={self.model.backend.name!r}, "
                f"weights={self.model.dtype})")


class GPT2LMHeadModel(GenerationMixin, GPT2PreTrainedModel):
    """transformers' ``GPT2LMHeadModel``: logits, the language-model loss, and ``generate``."""

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        """``.logits`` (batch, seq, vocab) float32 and, with ``labels``, ``.loss``."""
        unsupported = {k: v for k, v in dict(past_key_values=past_key_values, token_type_ids=token_type_ids,
                                             position_ids=position_ids, head_mask=head_mask,
                                             inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                                             output_hidden_states=output_hidden_states, **kwargs).items() if v}
        if unsupported:
            raise NotImplementedError(f"not yet: {', '.join(unsupported)}")
        torch_out = wants_torch(input_ids, attention_mask, labels)
        ids = to_numpy(input_ids, "input_ids")
        if ids.ndim == 1:
            ids = ids[None, :]
        if attention_mask is None:
            logits = self.model.forward(ids)
        else:
            mask = to_numpy(attention_mask, "attention_mask").astype(bool)
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask has shape {mask.shape}, input_ids {ids.shape}")
            B, T = ids.shape
            lead = np.argmax(mask, axis=1)
            cache = self.model.new_cache(batch_size=B, max_len=T)
            if lead.any():
                cache.set_left_padding(lead)
            logits = self.model.forward(np.ascontiguousarray(ids), cache=cache)
        loss = None if labels is None else causal_lm_loss(logits, to_numpy(labels, "labels"))
        out = CausalLMOutputWithCrossAttentions(loss=as_loss(loss, torch_out), logits=as_output(logits, torch_out))
        return out if (return_dict if return_dict is not None else self.config.return_dict) else out.to_tuple()


class GPT2Model(GPT2PreTrainedModel):
    """transformers' ``GPT2Model``: the body, returning ``last_hidden_state`` (after ``ln_f``)."""

    _state_prefix = ""
    _has_lm_head = False

    def forward(self, *args, **kwargs):
        raise NotImplementedError("not yet")


class SequenceSummary:
    """GPT2DoubleHeadsModel's ``multiple_choice_head``: one vector per sequence (the hidden
    state at ``cls_index``, the first, the last, or the mean), projected and activated."""

    _ACTIVATIONS = {None: None, "linear": None, "tanh": np.tanh, "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x))}

    def __init__(self, config: GPT2Config, tensors: dict, seed: int):
        self.summary_type = config.summary_type
        if self.summary_type not in ("last", "first", "mean", "cls_index"):
            raise ConfigError(f"GPT2Config.summary_type={self.summary_type!r}: expected 'last', 'first', 'mean' or "
                              "'cls_index' (transformers implements no other)")
        activation = config.summary_activation
        if activation in self._ACTIVATIONS:
            self.activation = self._ACTIVATIONS[activation]
        elif activation in ACTIVATION_FUNCTIONS:
            self.activation = lambda x, f=ACTIVATION_FUNCTIONS[activation]: f(x, np.empty_like(x))
        else:
            raise ConfigError(f"GPT2Config.summary_activation={activation!r} is not supported")
        C = config.n_embd
        n_out = config.num_labels if config.summary_proj_to_labels and config.num_labels > 0 else C
        self.weight = self.bias = None
        if config.summary_use_proj:
            w, b = tensors.get(f"{_MC}weight"), tensors.get(f"{_MC}bias")
            if w is None or b is None:      # a checkpoint without the head: initialised, as transformers warns
                rng = np.random.default_rng(seed)
                w = rng.standard_normal((n_out, C), dtype=np.float32) * np.float32(config.initializer_range)
                b = np.zeros(n_out, np.float32)
            if tuple(w.shape) != (n_out, C) or tuple(b.shape) != (n_out,):
                raise CheckpointMismatchError(f"{_MC}weight/bias have shapes {tuple(w.shape)} / {tuple(b.shape)}, "
                                              f"expected {(n_out, C)} / {(n_out,)}")
            self.weight, self.bias = np.asarray(w, np.float32), np.asarray(b, np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        return {} if self.weight is None else {f"{_MC}weight": self.weight, f"{_MC}bias": self.bias}

    def __call__(self, hidden: np.ndarray, cls_index: np.ndarray | None) -> np.ndarray:
        # hidden: (..., T, C); cls_index: (...) positions, default the last one.
        T = hidden.shape[-2]
        if self.summary_type == "last":
            x = hidden[..., -1, :]
        elif self.summary_type == "first":
            x = hidden[..., 0, :]
        elif self.summary_type == "mean":
            x = hidden.mean(axis=-2)
        else:
            if cls_index is None:
                cls_index = np.full(hidden.shape[:-2], T - 1)
            cls_index = np.asarray(cls_index)
            if cls_index.shape != hidden.shape[:-2] or cls_index.dtype.kind not in "iu":
                raise ValueError(f"mc_token_ids must be integers of shape {hidden.shape[:-2]}, got "
                                 f"{cls_index.dtype} {cls_index.shape}")
            if ((cls_index < 0) | (cls_index >= T)).any():
                raise ValueError(f"mc_token_ids must be positions in [0, {T}), got {cls_index.ravel().tolist()}")
            x = np.take_along_axis(hidden, cls_index[..., None, None], axis=-2)[..., 0, :]
        if self.weight is not None:
            x = x @ self.weight.T + self.bias
        return x if self.activation is None else self.activation(x).astype(np.float32)


_MC = "multiple_choice_head.summary."


class GPT2DoubleHeadsModel(GenerationMixin, GPT2PreTrainedModel):
    """transformers' ``GPT2DoubleHeadsModel``: language-model logits and one multiple-choice
    score per sequence (input ids of shape (batch, num_choices, seq))."""

    def _init_heads(self, tensors: dict, seed: int) -> None:
        self.config.num_labels = 1                    # as transformers' __init__ does
        self.multiple_choice_head = SequenceSummary(self.config, tensors, seed)

    def _head_tensors(self) -> dict[str, np.ndarray]:
        return self.multiple_choice_head.tensors()

    def forward(self, *args, **kwargs):
        raise NotImplementedError("not yet")
