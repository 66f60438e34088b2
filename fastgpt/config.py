"""GPT-2 hyperparameters, read from a Hugging Face ``config.json`` and validated.

Weight layout used everywhere inside fastgpt (the loaders translate into it once):
linear weights are stored ``[out, in]`` row-major, so that decoding's matrix-vector
product reads each output row as one contiguous dot product. Hugging Face's Conv1D
stores ``[in, out]``; the loader transposes it once at load time.

Non-goals: the many GPT-2 config fields that only matter for training (dropouts,
initializer range, summary heads) are accepted and ignored.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from . import jsonfile
from .jsonfile import short_repr

#: activation_function values we implement (Hugging Face ACT2FN names).
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "relu", "silu", "swish", "quick_gelu")


#: Largest size or token id a config may hold: a GPT-2 has nothing near it, and the kernels
#: take thread counts and some sizes as C ints.
MAX_INT = 2**31 - 1
#: config.json is a few hundred bytes; anything near this is not a model config.
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """A config.json (or a GPT2Config argument) is missing, malformed or inconsistent."""


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None means 4 * n_embd, as in Hugging Face
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    bos_token_id: int | list[int] | None = 50256
    eos_token_id: int | list[int] | None = 50256

    def __post_init__(self):
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            # n_layer may be 0: embeddings, final norm and head only (picoGPT's blocks=[] case)
            lowest = 0 if name == "n_layer" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= MAX_INT:
                kind = "non-negative" if lowest == 0 else "positive"
                raise ConfigError(f"GPT2Config.{name} must be a {kind} integer up to {MAX_INT}, got {short_repr(value)}")
        if self.n_inner is not None and (
            isinstance(self.n_inner, bool) or not isinstance(self.n_inner, int) or not 0 < self.n_inner <= MAX_INT
        ):
            raise ConfigError(f"GPT2Config.n_inner must be a positive integer up to {MAX_INT} or None, "
                              f"got {short_repr(self.n_inner)}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"GPT2Config.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.activation_function not in ACTIVATIONS:
            raise ConfigError(
                f"GPT2Config.activation_function {short_repr(self.activation_function)} is not supported; "
                f"expected one of {', '.join(ACTIVATIONS)}"
            )
        eps = self.layer_norm_epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not _positive_finite(eps):
            raise ConfigError(f"GPT2Config.layer_norm_epsilon must be a positive number and finite, got {short_repr(eps)}")
        # Hugging Face only warns when these fall outside the vocabulary (small test models
        # keep GPT-2's 50256); such an id can never be generated, so it is harmless here too.
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            ids = value if isinstance(value, (list, tuple)) else [value]
            if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_INT
                                             for i in ids):
                raise ConfigError(f"GPT2Config.{name} must be a token id in [0, {MAX_INT}], a list of them, "
                                  f"or None, got {short_repr(value)}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def d_ff(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def num_parameters(self, tied_head: bool = True) -> int:
        C, F, V, P = self.n_embd, self.d_ff, self.vocab_size, self.n_positions
        per_block = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (F * C + F) + (C * F + C)
        return V * C + P * C + self.n_layer * per_block + 2 * C + (0 if tied_head else V * C)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "GPT2Config":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ConfigError(f"{source}: model_type is {short_repr(model_type)}; fastgpt runs GPT-2 ('gpt2') "
                              "checkpoints only")
        for name, implemented in ARITHMETIC_OPTIONS.items():
            if name in d and d[name] != implemented:
                raise ConfigError(f"{source}: {name}={short_repr(d[name])} is not implemented by fastgpt (only "
                                  f"{name}={implemented!r}): it changes GPT-2's attention arithmetic")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json_file(cls, path) -> "GPT2Config":
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config.json not found")
        return cls.from_dict(jsonfile.read_json(path, ConfigError, MAX_CONFIG_BYTES), source=str(path))

    @classmethod
    def from_pretrained(cls, folder) -> "GPT2Config":
        return cls.from_json_file(Path(folder) / "config.json")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model_type"] = "gpt2"
        return d


def _positive_finite(x: int | float) -> bool:
    try:
        return 0 < float(x) < math.inf
    except OverflowError:  # an int too large for a float
        return False


#: transformers' GPT2Config options that change the arithmetic, and the one value fastgpt runs:
#: a checkpoint with another value must not load and silently compute something else.
ARITHMETIC_OPTIONS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False}


#: Shapes of OpenAI's released GPT-2 sizes, for random models in benchmarks and tests.
PRESETS = {
    "gpt2": GPT2Config(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": GPT2Config(n_layer=24, n_embd=1024, n_head=16),
    "gpt2-large": GPT2Config(n_layer=36, n_embd=1280, n_head=20),
    "gpt2-xl": GPT2Config(n_layer=48, n_embd=1600, n_head=25),
}
