"""The one name table from Hugging Face GPT-2 checkpoints to fastgpt's weight layout.

Hugging Face names may carry a ``transformer.`` prefix (GPT2LMHeadModel) or not (GPT2Model).
Its Conv1D weights are ``[in, out]``; fastgpt keeps linear weights ``[out, in]``, so those four
matrices per block are transposed here, once: a copy at load that makes every decode matvec
read contiguous rows. Everything else (embeddings, norms, biases) is used as stored, which
for float32 safetensors means a read-only view of the memory map.
"""

from __future__ import annotations

import re

import numpy as np

from ..config import GPT2Config
from ..quant import as_float32
from ..registry import resolve_model_path
from ..weights import BlockWeights, GPT2Weights
from .errors import WeightsError


class CheckpointMismatchError(WeightsError):
    """Tensors missing, unexpected or mis-shaped for the config; the message lists them all."""


# Buffers that transformers saves in some versions; they hold no parameters.
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
# Task heads on top of the model body (GPT2DoubleHeadsModel's multiple-choice summary):
# a language model does not use them; load_pretrained_parts hands them back.
TASK_HEAD_PREFIXES = ("multiple_choice_head.",)

_BLOCK_TABLE = {
    # HF name under h.{i}.      fastgpt field    transpose (Conv1D [in, out] -> [out, in])
    "ln_1.weight": ("ln_1_g", False),
    "ln_1.bias": ("ln_1_b", False),
    "attn.c_attn.weight": ("attn_qkv_w", True),
    "attn.c_attn.bias": ("attn_qkv_b", False),
    "attn.c_proj.weight": ("attn_proj_w", True),
    "attn.c_proj.bias": ("attn_proj_b", False),
    "ln_2.weight": ("ln_2_g", False),
    "ln_2.bias": ("ln_2_b", False),
    "mlp.c_fc.weight": ("mlp_fc_w", True),
    "mlp.c_fc.bias": ("mlp_fc_b", False),
    "mlp.c_proj.weight": ("mlp_proj_w", True),
    "mlp.c_proj.bias": ("mlp_proj_b", False),
}
_TOP_TABLE = {"wte.weight": "wte", "wpe.weight": "wpe", "ln_f.weight": "ln_f_g", "ln_f.bias": "ln_f_b"}


def _hf_shapes(config: GPT2Config) -> dict[str, tuple]:
    C, F, V, P = config.n_embd, config.d_ff, config.vocab_size, config.n_positions
    block = {
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (C, F), "mlp.c_fc.bias": (F,),
        "mlp.c_proj.weight": (F, C), "mlp.c_proj.bias": (C,),
    }
    shapes = {"wte.weight": (V, C), "wpe.weight": (P, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(config.n_layer):
        shapes.update({f"h.{i}.{k}": v for k, v in block.items()})
    return shapes


def _tensor_problems(name: str, arr, shape: tuple) -> list[str]:
    """Why a checkpoint tensor cannot be the weight ``name`` of ``shape``: floats only, because
    converting integers or booleans would load a corrupt or foreign file as garbage weights."""
    problems = []
    if tuple(arr.shape) != shape:
        problems.append(f"tensor {name} has shape {tuple(arr.shape)}, expected {shape}")
    if np.dtype(arr.dtype).kind != "f":
        problems.append(f"tensor {name} is stored as {arr.dtype}, expected floating-point weights")
    return problems


def _as_float32(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.float32:
        return arr
    return np.ascontiguousarray(arr, dtype=np.float32)


def weights_from_hf_state_dict(tensors: dict, config: GPT2Config, source: str = "checkpoint") -> GPT2Weights:
    """Map Hugging Face GPT-2 tensor names to ``GPT2Weights``; one error lists every problem."""
    stripped = {}
    for name, arr in tensors.items():
        key = name[len("transformer."):] if name.startswith("transformer.") else name
        stripped[key] = arr
    lm_head = stripped.pop("lm_head.weight", None)
    # Before the name table is built: its size follows n_layer, a number read from config.json,
    # so it is kept proportional to the checkpoint (every block has tensors of its own).
    if config.n_layer > len(stripped):
        raise CheckpointMismatchError(
            f"{source}: config.json says n_layer={config.n_layer}, but the checkpoint holds only "
            f"{len(stripped)} tensors")
    expected = _hf_shapes(config)
    problems = []
    for name, shape in expected.items():
        arr = stripped.get(name)
        if arr is None:
            problems.append(f"missing tensor {name} (expected shape {shape})")
        else:
            problems += _tensor_problems(name, arr, shape)
    unexpected = sorted(n for n in stripped if n not in expected and not _IGNORED.match(n))
    problems += [f"unexpected tensor {n}" for n in unexpected]
    V, C = config.vocab_size, config.n_embd
    if lm_head is not None:
        problems += _tensor_problems("lm_head.weight", lm_head, (V, C))
    if problems:
        raise CheckpointMismatchError(f"{source} does not match its config.json:\n  " + "\n  ".join(problems))

    def get(name, transpose):
        arr = stripped[name]
        if transpose:
            return np.ascontiguousarray(np.asarray(arr).T, dtype=np.float32)
        return _as_float32(np.asarray(arr))

    top = {field: get(name, False) for name, field in _TOP_TABLE.items()}
    blocks = [
        BlockWeights(**{field: get(f"h.{i}.{name}", t) for name, (field, t) in _BLOCK_TABLE.items()})
        for i in range(config.n_layer)
    ]
    wte = top["wte"]
    head = wte
    # An untied head that merely duplicates wte (some exports save both) is shared, not loaded twice.
    if lm_head is not None and not np.array_equal(np.asarray(lm_head), wte):
        head = _as_float32(np.asarray(lm_head))
    return GPT2Weights(wte=wte, wpe=top["wpe"], blocks=blocks, ln_f_g=top["ln_f_g"], ln_f_b=top["ln_f_b"], lm_head=head)


def load_pretrained(path) -> tuple[GPT2Config, GPT2Weights]:
    config, weights, _ = load_pretrained_parts(path)
    return config, weights


def load_pretrained_parts(path) -> tuple[GPT2Config, GPT2Weights, dict[str, np.ndarray]]:
    """The config, the language model's weights and the task-head tensors (TASK_HEAD_PREFIXES,
    by their checkpoint names; none in a converted folder)."""
    from .files import load_checkpoint_tensors

    folder = resolve_model_path(path)
    from ..convert import is_converted, load_converted  # here: convert imports the loaders

    if is_converted(folder):  # written by `fastgpt convert`: fastgpt's layout and dtype, mapped as is
        return (*load_converted(folder), {})
    config = GPT2Config.from_pretrained(folder)
    tensors = dict(load_checkpoint_tensors(folder))
    heads = {name: tensors.pop(name) for name in list(tensors) if name.startswith(TASK_HEAD_PREFIXES)}
    return config, weights_from_hf_state_dict(tensors, config, source=str(folder)), heads


def weights_to_hf_state_dict(weights: GPT2Weights, prefix: str = "transformer.") -> dict[str, np.ndarray]:
    """The inverse of ``weights_from_hf_state_dict``: Hugging Face names and layouts (Conv1D
    matrices back to ``[in, out]``, as transposed views; 16/8-bit matrices widened to float32;
    missing biases as zeros),
    plus ``lm_head.weight`` (the same array as wte when tied) when ``prefix`` is given."""
    top = {name: as_float32(getattr(weights, field)) for name, field in _TOP_TABLE.items()}
    # transformers' order: embeddings, blocks, final norm, head
    tensors = {prefix + name: top[name] for name in ("wte.weight", "wpe.weight")}
    for i, blk in enumerate(weights.blocks):
        for name, (field, transposed) in _BLOCK_TABLE.items():
            arr = getattr(blk, field)
            if arr is None:                  # a bias-free checkpoint: GPT-2's layout has zero biases
                arr = np.zeros(getattr(blk, field[:-2] + "_w").shape[0], np.float32)
            arr = as_float32(arr)
            tensors[f"{prefix}h.{i}.{name}"] = arr.T if transposed else arr
    tensors.update({prefix + name: top[name] for name in ("ln_f.weight", "ln_f.bias")})
    if prefix:
        tensors["lm_head.weight"] = top["wte.weight"] if weights.tied_head else as_float32(weights.lm_head)
    return tensors
