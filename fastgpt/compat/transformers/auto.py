"""transformers' Auto classes for the GPT-2 family: every name resolves to the GPT-2 classes.

A folder (or cached Hub name) whose config.json declares another ``model_type`` is refused
with an error naming it, rather than run with GPT-2's code.
"""

from __future__ import annotations

import json

from ...config import ConfigError
from . import hub
from .configuration import GPT2Config
from .modeling import GPT2LMHeadModel, GPT2Model
from .tokenization import GPT2Tokenizer, GPT2TokenizerFast

_GPT2_TOKENIZERS = (None, "GPT2Tokenizer", "GPT2TokenizerFast")


def _check_model_type(config: GPT2Config | dict, where) -> None:
    model_type = config.get("model_type", "gpt2") if isinstance(config, dict) else config.model_type
    if model_type != "gpt2":
        raise ConfigError(f"{where}: model_type is {model_type!r}; fastgpt's Auto classes resolve GPT-2 ('gpt2') "
                          "checkpoints only")


class AutoConfig:
    @classmethod
    def from_pretrained(cls, name_or_path, **kwargs) -> GPT2Config:
        return GPT2Config.from_pretrained(name_or_path, **kwargs)

    @classmethod
    def for_model(cls, model_type: str, **kwargs) -> GPT2Config:
        _check_model_type({"model_type": model_type}, "AutoConfig.for_model")
        return GPT2Config(**kwargs)


class AutoTokenizer:
    @classmethod
    def from_pretrained(cls, name_or_path, *, use_fast: bool = True, cache_dir=None, revision=None,
                        **kwargs) -> GPT2Tokenizer:
        """GPT-2's tokenizer for a GPT-2-family name or folder (the bundled vocabulary for the
        OpenAI names); a folder declaring another model or tokenizer class is an error."""
        name = str(name_or_path)
        if name not in hub.GPT2_VOCAB_NAMES:
            folder = hub.resolve(name_or_path, cache_dir=cache_dir, revision=revision, needs="")
            for file, key in (("config.json", "model_type"), ("tokenizer_config.json", "tokenizer_class")):
                if (folder / file).is_file():
                    try:
                        data = json.loads((folder / file).read_text(encoding="utf-8"))
                    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                        raise ConfigError(f"{folder / file}: cannot read ({e})") from None
                    if key == "model_type":
                        _check_model_type(data, folder / file)
                    elif data.get(key) not in _GPT2_TOKENIZERS:
                        raise ConfigError(f"{folder / file}: tokenizer_class is {data.get(key)!r}; fastgpt provides "
                                          "GPT-2's byte-level BPE tokenizer only")
        return GPT2TokenizerFast.from_pretrained(name_or_path, cache_dir=cache_dir, revision=revision, **kwargs)


class _AutoModel:
    _model_class: type

    @classmethod
    def from_pretrained(cls, name_or_path, *args, **kwargs):
        config = kwargs.get("config")
        if config is not None:
            _check_model_type(config, f"{cls.__name__}.from_pretrained(config=...)")
        return cls._model_class.from_pretrained(name_or_path, *args, **kwargs)

    @classmethod
    def from_config(cls, config, **kwargs):
        _check_model_type(config, f"{cls.__name__}.from_config")
        return cls._model_class(config, **kwargs)


class AutoModel(_AutoModel):
    """Resolves GPT-2 checkpoints to ``GPT2Model``."""
    _model_class = GPT2Model


class AutoModelForCausalLM(_AutoModel):
    """Resolves GPT-2 checkpoints to ``GPT2LMHeadModel``."""
    _model_class = GPT2LMHeadModel
