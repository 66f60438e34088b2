"""The GPT-2 of "Build a Large Language Model (From Scratch)" (S. Raschka, ch. 4-5) on fastgpt.

Change the imports and the book's inference code runs unchanged::

    from fastgpt.compat.llms_from_scratch import GPTModel, generate_text_simple, generate

The book's model is GPT-2 with its own names: ``tok_emb``, ``pos_emb``, ``trf_blocks.{i}``
with separate ``att.W_query / W_key / W_value`` (``nn.Linear``, bias only when
``qkv_bias``), ``att.out_proj``, ``ff.layers.0`` / ``ff.layers.2``, ``norm1`` / ``norm2`` /
``final_norm`` with ``scale`` / ``shift``, and an untied ``out_head``. ``nn.Linear`` already
stores ``[out, in]``, fastgpt's layout, so the one name table below only renames, and
concatenates Q, K and V into fastgpt's fused ``[3C, C]`` projection (biases into ``[3C]``,
or none). The head stays a separate array unless it equals ``tok_emb`` (then it is shared).

``cfg`` uses the book's keys: vocab_size, context_length, emb_dim, n_heads, n_layers,
drop_rate (ignored: inference has no dropout) and qkv_bias (default False).

Generation follows the book's loops exactly, including the sliding window: the model sees
at most the last ``context_size`` tokens. While the sequence fits the window, fastgpt's KV
cache makes each new token cost one position; once it slides, every position's absolute
position changes, so each step recomputes the window, which is what the book computes.
Ids go in and come out as ``(batch, seq)`` integer arrays (torch tensors are accepted).

Differences from the book: sampling draws from ``np.random.default_rng(seed)`` (pass
``seed=``), not torch's generator, so sampled tokens differ from torch's while greedy
tokens match; for a batch, ``eos_id`` stops when every row produced it at the same step
(the book's ``idx_next == eos_id`` only works for one row). Non-goals: training,
``torch.nn.Module`` behaviour beyond ``load_state_dict``, ``eval`` and ``to`` (a no-op).
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from ..config import GPT2Config
from ..model import Model
from ..sampling import apply_temperature, apply_top_k, sample_token
from ..weights import BlockWeights, GPT2Weights, random_weights

__all__ = [
    "GPT_CONFIG_124M",
    "GPTModel",
    "config_from_cfg",
    "weights_from_state_dict",
    "from_state_dict",
    "load",
    "generate_text_simple",
    "generate",
    "text_to_token_ids",
    "token_ids_to_text",
    "load_weights_into_gpt",
    "download_and_load_gpt2",
]

#: The book's configuration of GPT-2 124M (chapter 4).
GPT_CONFIG_124M = {
    "vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12,
    "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False,
}
_REQUIRED = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")

# The book's names under trf_blocks.{i}. -> fastgpt BlockWeights field. Q, K and V go to
# one field and are concatenated in this order (fastgpt splits attn_qkv_w as q | k | v).
_QKV = ("att.W_query", "att.W_key", "att.W_value")
_BLOCK_TABLE = {
    "norm1.scale": "ln_1_g",
    "norm1.shift": "ln_1_b",
    "att.out_proj.weight": "attn_proj_w",
    "att.out_proj.bias": "attn_proj_b",
    "norm2.scale": "ln_2_g",
    "norm2.shift": "ln_2_b",
    "ff.layers.0.weight": "mlp_fc_w",
    "ff.layers.0.bias": "mlp_fc_b",
    "ff.layers.2.weight": "mlp_proj_w",
    "ff.layers.2.bias": "mlp_proj_b",
}
_TOP_TABLE = {"tok_emb.weight": "wte", "pos_emb.weight": "wpe", "final_norm.scale": "ln_f_g",
              "final_norm.shift": "ln_f_b", "out_head.weight": "lm_head"}
# The causal mask is a persistent buffer in the book's MultiHeadAttention: saved, not a weight.
_IGNORED = re.compile(r"^trf_blocks\.\d+\.att\.mask$")


def config_from_cfg(cfg: dict) -> GPT2Config:
    """fastgpt's GPT2Config for the book's cfg dict (tanh GELU, LayerNorm eps 1e-5)."""
    if not isinstance(cfg, dict):
        raise TypeError(f"cfg must be a dict with the book's keys ({', '.join(_REQUIRED)}), got {type(cfg).__name__}")
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"cfg is missing {', '.join(missing)} (the book's keys: {', '.join(_REQUIRED)}, "
                         "drop_rate, qkv_bias)")
    return GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"], n_embd=cfg["emb_dim"],
                      n_layer=cfg["n_layers"], n_head=cfg["n_heads"], activation_function="gelu_new",
                      layer_norm_epsilon=1e-5, bos_token_id=None, eos_token_id=None)


def _to_numpy(value) -> np.ndarray:
    """A state-dict value as an ndarray: numpy arrays, lists, CPU torch tensors (any float dtype)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):        # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def weights_from_state_dict(state_dict, cfg: dict, source: str = "state_dict") -> GPT2Weights:
    """Map the book's parameter names to fastgpt's weights; one error lists every problem."""
    config = config_from_cfg(cfg)
    qkv_bias = bool(cfg.get("qkv_bias", False))
    C, F, V, P = config.n_embd, config.d_ff, config.vocab_size, config.n_positions
    block_shapes = {
        "norm1.scale": (C,), "norm1.shift": (C,), "att.out_proj.weight": (C, C), "att.out_proj.bias": (C,),
        "norm2.scale": (C,), "norm2.shift": (C,), "ff.layers.0.weight": (F, C), "ff.layers.0.bias": (F,),
        "ff.layers.2.weight": (C, F), "ff.layers.2.bias": (C,),
    }
    for q in _QKV:
        block_shapes[f"{q}.weight"] = (C, C)
        if qkv_bias:
            block_shapes[f"{q}.bias"] = (C,)
    expected = {"tok_emb.weight": (V, C), "pos_emb.weight": (P, C), "final_norm.scale": (C,),
                "final_norm.shift": (C,), "out_head.weight": (V, C)}
    for i in range(config.n_layer):
        expected.update({f"trf_blocks.{i}.{k}": s for k, s in block_shapes.items()})

    if not hasattr(state_dict, "items"):
        raise TypeError(f"{source}: expected a mapping of parameter name -> array, got {type(state_dict).__name__}")
    arrays = {name: _to_numpy(v) for name, v in state_dict.items() if not _IGNORED.match(name)}
    problems = []
    for name, shape in expected.items():
        arr = arrays.get(name)
        if arr is None:
            problems.append(f"missing {name} (expected shape {shape})")
        elif arr.shape != shape:
            problems.append(f"{name} has shape {arr.shape}, expected {shape}")
        elif arr.dtype.kind != "f":
            problems.append(f"{name} has dtype {arr.dtype}, expected floating point")
    unexpected = sorted(n for n in arrays if n not in expected)
    if not qkv_bias and any(n.endswith(tuple(f"{q}.bias" for q in _QKV)) for n in unexpected):
        problems.append("Q/K/V biases are present but cfg['qkv_bias'] is False "
                        "(OpenAI's GPT-2 weights need qkv_bias=True)")
    problems += [f"unexpected {n}" for n in unexpected]
    if problems:
        raise ValueError(f"{source} does not match cfg:\n  " + "\n  ".join(problems))

    def f32(name):
        return np.ascontiguousarray(arrays[name], dtype=np.float32)

    blocks = []
    for i in range(config.n_layer):
        pre = f"trf_blocks.{i}."
        fields = {field: f32(pre + name) for name, field in _BLOCK_TABLE.items()}
        fields["attn_qkv_w"] = np.concatenate([f32(f"{pre}{q}.weight") for q in _QKV], axis=0)   # (3C, C)
        fields["attn_qkv_b"] = (np.concatenate([f32(f"{pre}{q}.bias") for q in _QKV]) if qkv_bias else None)
        blocks.append(BlockWeights(**fields))
    wte = f32("tok_emb.weight")
    head = f32("out_head.weight")
    if np.array_equal(head, wte):         # e.g. OpenAI's weights loaded as in chapter 5: tied
        head = wte
    return GPT2Weights(wte=wte, wpe=f32("pos_emb.weight"), blocks=blocks, ln_f_g=f32("final_norm.scale"),
                       ln_f_b=f32("final_norm.shift"), lm_head=head)


def _read_state_dict(path) -> dict:
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from ..loaders.safetensors import read_safetensors

        return read_safetensors(path)
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{path}: reading a .pth file needs torch (`pip install torch`); "
                          "a .safetensors file needs only NumPy") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Chapter 5 also saves {"model_state_dict": ..., "optimizer_state_dict": ...}.
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):
        state = state["model_state_dict"]
    return state


class GPTModel:
    """The book's ``GPTModel(cfg)``: call it on ``(batch, seq)`` ids to get float32 logits
    ``(batch, seq, vocab)``. Until ``load_state_dict`` it holds random GPT-2-style weights
    (made on first use), as a freshly built torch model does."""

    def __init__(self, cfg: dict, *, backend: str = "auto", num_threads: int | None = None, seed: int = 123):
        self.cfg = dict(cfg)
        self.config = config_from_cfg(self.cfg)
        self._backend, self._num_threads, self._seed = backend, num_threads, seed
        self._model: Model | None = None

    @property
    def model(self) -> Model:
        """The fastgpt Model underneath."""
        if self._model is None:
            self._model = Model(self.config, random_weights(self.config, self._seed),
                                backend=self._backend, num_threads=self._num_threads)
        return self._model

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Load the book's parameters (numpy arrays or CPU torch tensors); ``strict`` must stay True."""
        if not strict:
            raise ValueError("load_state_dict(strict=False) is not supported: every parameter is needed")
        weights = weights_from_state_dict(state_dict, self.cfg)
        self._model = Model(self.config, weights, backend=self._backend, num_threads=self._num_threads)

    def eval(self) -> "GPTModel":
        return self

    def to(self, device) -> "GPTModel":
        """Accepted and ignored, so that ``model.to(device)`` lines keep working: fastgpt
        computes on the CPU whatever the device (inputs on a GPU are copied back)."""
        return self

    def __call__(self, in_idx) -> np.ndarray:
        ids = _as_ids(in_idx, "in_idx")
        return self.model.forward(ids)                                # (B, T, V)

    forward = __call__

    def __repr__(self) -> str:
        return f"GPTModel({self.cfg}, backend={self.model.backend.name!r})"


def from_state_dict(state_dict, cfg: dict, *, backend: str = "auto", num_threads: int | None = None) -> GPTModel:
    """A GPTModel holding the book's ``state_dict`` (numpy arrays or CPU torch tensors)."""
    model = GPTModel(cfg, backend=backend, num_threads=num_threads)
    model.load_state_dict(state_dict)
    return model


def load(path, cfg: dict, *, backend: str = "auto", num_threads: int | None = None) -> GPTModel:
    """A GPTModel from ``torch.save(model.state_dict(), "model.pth")`` (needs torch) or a
    ``.safetensors`` file of the same names (NumPy only)."""
    model = GPTModel(cfg, backend=backend, num_threads=num_threads)
    weights = weights_from_state_dict(_read_state_dict(path), cfg, source=os.fspath(path))
    model._model = Model(model.config, weights, backend=backend, num_threads=num_threads)
    return model


# --------------------------------------------------------------------------------------
# Generation (chapters 4 and 5)
# --------------------------------------------------------------------------------------

def _as_ids(idx, name: str) -> np.ndarray:
    arr = _to_numpy(idx)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be (batch, seq) integer token ids with seq >= 1, got shape "
                         f"{arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def _fastgpt_model(model) -> Model:
    if isinstance(model, GPTModel):
        return model.model
    if isinstance(model, Model):
        return model
    raise TypeError(f"model must be a fastgpt.compat.llms_from_scratch.GPTModel (or a fastgpt Model), "
                    f"got {type(model).__name__}; build it with GPTModel(cfg) + load_state_dict, or load(path, cfg)")


def _decode_loop(model, idx, max_new_tokens: int, context_size: int, pick, eos_id=None) -> np.ndarray:
    m = _fastgpt_model(model)
    ids = _as_ids(idx, "idx")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if isinstance(context_size, bool) or not isinstance(context_size, (int, np.integer)) or context_size < 1:
        raise ValueError(f"context_size must be a positive integer, got {context_size!r}")
    B, T = ids.shape
    longest = min(context_size, T + max_new_tokens - 1)             # the longest forward pass
    if max_new_tokens and longest > m.config.n_positions:
        raise ValueError(f"context_size={context_size} lets the model see {longest} tokens, more than its "
                         f"context_length={m.config.n_positions}; pass context_size <= context_length")
    out = np.empty((B, T + max_new_tokens), np.int64)               # (B, L_max) prompt + new
    out[:, :T] = ids
    L = T
    cache = m.new_cache(batch_size=B, max_len=longest) if max_new_tokens and T <= context_size else None
    for _ in range(max_new_tokens):
        if L <= context_size:                                       # the window still starts at 0
            fed = out[:, cache.pos:L]                               # prompt, then the last token
            logits = m.forward(fed, cache=cache, last_only=True)    # (B, V)
        else:                                                       # the window slides: recompute it
            logits = m.forward(out[:, L - context_size:L], last_only=True)
        nxt = pick(logits)                                          # (B,) int64
        if eos_id is not None and bool(np.all(nxt == eos_id)):
            break
        out[:, L] = nxt
        L += 1
    return out[:, :L].copy()


def generate_text_simple(model, idx, max_new_tokens: int, context_size: int) -> np.ndarray:
    """Chapter 4: greedy, ``max_new_tokens`` times. Returns ``(batch, seq + max_new_tokens)``."""
    return _decode_loop(model, idx, max_new_tokens, context_size, lambda logits: np.argmax(logits, axis=-1))


def generate(model, idx, max_new_tokens: int, context_size: int, temperature: float = 0.0,
             top_k: int | None = None, eos_id: int | None = None, *, seed: int | None = None) -> np.ndarray:
    """Chapter 5: top-k filter, then greedy (``temperature == 0``) or a draw from
    ``softmax(logits / temperature)``; stops early at ``eos_id`` (not appended).

    ``seed`` seeds ``np.random.default_rng`` for the draws (an addition: the book uses torch's
    global generator). Returns ``(batch, seq + n_new)`` ids.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    # Checked here, not left to apply_temperature: it would name its own argument (`t`), and
    # only after the prompt has been run.
    if not isinstance(temperature, (int, float, np.floating)) or not 0.0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    rng = np.random.default_rng(seed)

    def pick(logits):                                               # logits: (B, V)
        if top_k is not None:
            logits = apply_top_k(logits, int(top_k))                # keeps ties at the cut, as the book
        if temperature > 0.0:
            scaled = apply_temperature(logits, float(temperature))
            return np.array([sample_token(row, rng) for row in scaled], np.int64)
        return np.argmax(logits, axis=-1)

    return _decode_loop(model, idx, max_new_tokens, context_size, pick, eos_id)


def text_to_token_ids(text: str, tokenizer) -> np.ndarray:
    """Chapter 5's helper: ``(1, seq)`` ids; ``tokenizer`` is tiktoken's or fastgpt's GPT-2."""
    return np.asarray([tokenizer.encode(text, allowed_special={"<|endoftext|>"})], np.int64)


def token_ids_to_text(token_ids, tokenizer) -> str:
    """Chapter 5's helper: decode a ``(1, seq)`` (or ``(seq,)``) id array."""
    return tokenizer.decode(np.asarray(_to_numpy(token_ids)).reshape(-1).tolist())


# --------------------------------------------------------------------------------------
# OpenAI's weights (chapter 5)
# --------------------------------------------------------------------------------------

def download_and_load_gpt2(model_size: str, models_dir: str):
    """``(settings, params)`` of OpenAI's release in ``models_dir/model_size``, read without
    TensorFlow. Nothing is downloaded: the files must be there (the book's script or
    picoGPT's fetch them). ``params`` is the book's (and picoGPT's) nested layout."""
    from .picogpt import load_encoder_hparams_and_params

    _encoder, settings, params = load_encoder_hparams_and_params(model_size, models_dir)
    return settings, params


def load_weights_into_gpt(gpt: GPTModel, params: dict) -> None:
    """Chapter 5's ``load_weights_into_gpt``: OpenAI's params into the book's model (tied head)."""
    from .picogpt import weights_from_params

    if not isinstance(gpt, GPTModel):
        raise TypeError(f"gpt must be a GPTModel, got {type(gpt).__name__}")
    config, weights = weights_from_params(params["wte"], params["wpe"], params["blocks"], params["ln_f"],
                                          gpt.config.n_head)
    C = gpt.config
    mine = (C.vocab_size, C.n_positions, C.n_embd, C.n_layer)
    theirs = (config.vocab_size, config.n_positions, config.n_embd, config.n_layer)
    if mine != theirs:
        raise ValueError(f"params are vocab_size, context_length, emb_dim, n_layers = {theirs}, but the "
                         f"model's cfg says {mine}")
    gpt._model = Model(gpt.config, weights, backend=gpt._backend, num_threads=gpt._num_threads)
