"""transformers' output objects: fields by attribute, by key, or by position.

As in transformers, ``keys()`` and positions skip the fields that are None, so
``out[0]`` is the loss when labels were given and the logits otherwise, and
``return_dict=False`` returns ``out.to_tuple()``. ``past_key_values`` is accepted as the
name transformers 4.x used for today's ``cache`` field.
"""

from __future__ import annotations

from typing import ClassVar

_ALIASES = {"past_key_values": "cache"}


class ModelOutput(dict):
    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **values):
        super().__init__()
        values = {_ALIASES.get(k, k): v for k, v in values.items()}
        unknown = sorted(set(values) - set(self.fields))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(unknown)}; fields: {', '.join(self.fields)}")
        for name in self.fields:
            setattr(self, name, values.get(name))

    def __setattr__(self, name, value):
        name = _ALIASES.get(name, name)
        super().__setattr__(name, value)
        if name in self.fields:
            if value is None:
                self.pop(name, None)
            else:
                # re-insert in field order, so positions stay transformers'
                kept = {k: v for k, v in self.items()}
                kept[name] = value
                self.clear()
                self.update((k, kept[k]) for k in self.fields if k in kept)

    def __getattr__(self, name):
        if name in _ALIASES:
            return getattr(self, _ALIASES[name])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}; fields: {', '.join(self.fields)}")

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(_ALIASES.get(key, key))

    def __contains__(self, key):
        return super().__contains__(_ALIASES.get(key, key))

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={_short(v)}" for k, v in self.items())
        return f"{type(self).__name__}({inner})"


def _short(value) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"<{type(value).__name__} {tuple(shape)}>"
    if isinstance(value, tuple):
        return f"<tuple of {len(value)}>"
    return repr(value)


class BaseModelOutputWithPastAndCrossAttentions(ModelOutput):
    fields = ("last_hidden_state", "cache", "hidden_states", "attentions", "cross_attentions")


class CausalLMOutputWithCrossAttentions(ModelOutput):
    fields = ("loss", "logits", "cache", "hidden_states", "attentions", "cross_attentions")


class GPT2DoubleHeadsModelOutput(ModelOutput):
    fields = ("loss", "mc_loss", "logits", "mc_logits", "cache", "hidden_states", "attentions")


class GenerateDecoderOnlyOutput(ModelOutput):
    fields = ("sequences", "scores", "logits", "attentions", "hidden_states", "cache")


class GenerateBeamDecoderOnlyOutput(ModelOutput):
    fields = ("sequences", "sequences_scores", "scores", "logits", "beam_indices", "attentions", "hidden_states",
              "cache")


#: fastgpt 0.1's name for the language-model output.
CausalLMOutput = CausalLMOutputWithCrossAttentions
