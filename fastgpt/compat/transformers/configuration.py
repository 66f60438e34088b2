"""transformers' ``GPT2Config``: every field it documents, mutable, saved as transformers saves it.

The fields that shape the arithmetic are handed to fastgpt's own (frozen, validated)
``fastgpt.GPT2Config`` when a model is built; the training-only ones (dropouts,
``initializer_range``) are kept and saved but change nothing at inference. Values that would
change GPT-2's arithmetic in ways fastgpt does not implement are refused when set, naming
the field.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from ...config import ARITHMETIC_OPTIONS, ConfigError
from ...config import GPT2Config as EngineConfig
from . import hub

#: transformers' defaults, in its to_dict() order (transformers 5.x GPT2Config).
DEFAULTS = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
    "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "summary_type": "cls_index", "summary_use_proj": True,
    "summary_activation": None, "summary_proj_to_labels": True, "summary_first_dropout": 0.1,
    "scale_attn_weights": True, "use_cache": True, "bos_token_id": 50256, "eos_token_id": 50256,
    "pad_token_id": None, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
    "add_cross_attention": False, "tie_word_embeddings": True,
    # PreTrainedConfig's own
    "architectures": None, "output_hidden_states": False, "output_attentions": False, "return_dict": True,
    "dtype": None, "chunk_size_feed_forward": 0, "is_encoder_decoder": False, "id2label": None, "label2id": None, "problem_type": None,
    "prefix": None, "task_specific_params": None,
}
# The values fastgpt implements for fields that change the arithmetic (or the architecture).
_FIXED = {**ARITHMETIC_OPTIONS, "add_cross_attention": False, "is_encoder_decoder": False}
_ENGINE_FIELDS = tuple(f.name for f in dataclasses.fields(EngineConfig))
# Old and alternative names (transformers' attribute_map; pytorch-transformers' n_ctx).
ATTRIBUTE_MAP = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions", "num_attention_heads": "n_head",
                 "num_hidden_layers": "n_layer", "n_ctx": "n_positions"}
_NOT_SAVED = {"name_or_path", "transformers_version"}


class GPT2Config:
    """Constructed like ``transformers.GPT2Config(**kwargs)``; unknown keys are kept as
    attributes (as transformers does) and saved. ``n_ctx`` (pytorch-transformers) is
    ``n_positions``: GPT-2 attends as far back as it has position embeddings."""

    model_type = "gpt2"
    attribute_map = ATTRIBUTE_MAP

    def __init__(self, **kwargs):
        n_ctx = kwargs.pop("n_ctx", None)
        kwargs.pop("model_type", None)
        kwargs.pop("transformers_version", None)
        kwargs.setdefault("dtype", kwargs.pop("torch_dtype", None))
        object.__setattr__(self, "name_or_path", kwargs.pop("name_or_path", kwargs.pop("_name_or_path", "")))
        for key, value in DEFAULTS.items():
            setattr(self, key, copy.deepcopy(kwargs.pop(key, value)))
        for key, value in kwargs.items():
            setattr(self, ATTRIBUTE_MAP.get(key, key), value)
        if n_ctx is not None and n_ctx != self.n_positions:
            raise ConfigError(f"GPT2Config: n_ctx={n_ctx} differs from n_positions={self.n_positions}; GPT-2 attends "
                              "over n_positions (the position table), so give one value")
        if self.id2label is None:
            self.num_labels = 2
        self.engine_config()                   # refuse an unrunnable config now, naming the field

    def __setattr__(self, name, value):
        name = ATTRIBUTE_MAP.get(name, name)
        if name in _FIXED and value != _FIXED[name]:
            raise ConfigError(f"GPT2Config.{name}={value!r} is not implemented by fastgpt (only "
                              f"{name}={_FIXED[name]!r}): it changes GPT-2's arithmetic")
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        if name in ATTRIBUTE_MAP:
            return getattr(self, ATTRIBUTE_MAP[name])
        raise AttributeError(f"GPT2Config has no attribute {name!r}")

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        self.id2label = {i: f"LABEL_{i}" for i in range(n)}
        self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict

    def engine_config(self) -> EngineConfig:
        """fastgpt's validated config for the fields that shape the computation."""
        return EngineConfig(**{k: getattr(self, k) for k in _ENGINE_FIELDS})

    # -- dicts and files --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {k: copy.deepcopy(v) for k, v in vars(self).items() if k not in _NOT_SAVED}
        d["model_type"] = self.model_type
        return d

    def to_diff_dict(self) -> dict:
        """Only what differs from a default GPT2Config, as transformers writes to config.json."""
        default = GPT2Config().to_dict()
        return {k: v for k, v in self.to_dict().items() if k == "model_type" or default.get(k, object()) != v}

    def to_json_string(self, use_diff: bool = True) -> str:
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory) -> None:
        folder = Path(save_directory)
        if folder.is_file():
            raise ValueError(f"save_pretrained: {folder} is a file; give a folder")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(self.to_json_string(use_diff=False), encoding="utf-8")

    def update(self, values: dict) -> None:
        for key, value in values.items():
            setattr(self, key, value)

    def __eq__(self, other) -> bool:
        return isinstance(other, GPT2Config) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"GPT2Config {self.to_json_string()}"

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "GPT2Config":
        model_type = config_dict.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ConfigError(f"model_type {model_type!r} is not GPT-2: fastgpt runs 'gpt2' checkpoints only")
        d = dict(config_dict)
        if isinstance(d.get("id2label"), dict):
            d["id2label"] = {int(k): v for k, v in d["id2label"].items()}
        return cls(**{**d, **kwargs})

    @classmethod
    def from_json_file(cls, path) -> "GPT2Config":
        EngineConfig.from_json_file(path)          # the same checks and messages as fastgpt's loader
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_pretrained(cls, name_or_path, *, cache_dir=None, revision=None, **kwargs) -> "GPT2Config":
        """``config.json`` of a folder, a bundled model or a cached Hub name; ``kwargs`` override
        its keys (transformers' download options are accepted and ignored)."""
        from .loading import split_load_kwargs

        overrides = split_load_kwargs(f"{cls.__name__}.from_pretrained", kwargs, config_keys=True)
        folder = hub.resolve(name_or_path, cache_dir=cache_dir, revision=revision)
        try:
            config = cls.from_json_file(folder / "config.json")
            config.update(overrides)
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if str(folder) in msg else f"{folder / 'config.json'}: {msg}") from None
        object.__setattr__(config, "name_or_path", str(name_or_path))
        return config


def as_compat_config(config) -> GPT2Config:
    """A compat GPT2Config from either kind (fastgpt's own is converted, field by field)."""
    if isinstance(config, GPT2Config):
        return config
    if isinstance(config, EngineConfig):
        return GPT2Config(**{k: getattr(config, k) for k in _ENGINE_FIELDS})
    raise TypeError(f"config must be a GPT2Config, got {type(config).__name__}")
