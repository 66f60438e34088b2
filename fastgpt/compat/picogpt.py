"""picoGPT's functions (jaymody/picoGPT ``utils.py`` and ``gpt2.py``) on fastgpt's engine.

Change the imports and picoGPT code runs unchanged::

    from fastgpt.compat.picogpt import load_encoder_hparams_and_params, generate, gpt2

``params`` keep picoGPT's layout: a nested dict named like OpenAI's checkpoint, with
Conv1D weights ``w`` as ``[in, out]`` (``x @ w + b``)::

    wte [n_vocab, n_embd]   wpe [n_ctx, n_embd]   ln_f {g, b}
    blocks[i] = {ln_1 {g, b}, attn {c_attn {w, b}, c_proj {w, b}}, ln_2 {g, b},
                 mlp {c_fc {w, b}, c_proj {w, b}}}

``gpt2`` and ``generate`` map such params into a fastgpt ``Model`` (one name table below,
transposing to fastgpt's ``[out, in]``) and run its kernels: picoGPT's arithmetic (tanh
GELU, LayerNorm eps 1e-5, causal softmax attention, tied head ``x @ wte.T``) in float32,
with a KV cache, so a generated token costs one position, not the whole prefix.
Parameters in another dtype (float64 in picoGPT's tests) are converted to float32.

``load_encoder_hparams_and_params`` reads OpenAI's original release (hparams.json,
encoder.json, vocab.bpe and the TensorFlow checkpoint, read without TensorFlow by
``fastgpt.loaders.tf_checkpoint``), a Hugging Face GPT-2 folder, or a bundled model name.

Differences from picoGPT: nothing is downloaded; ``gpt2`` returns float32 logits; ``generate``
uses the KV cache (same tokens as recomputing the prefix). Non-goals: picoGPT's building
blocks (``gelu``, ``mha``, ...) -- import them from picoGPT if you want to step through them.
"""

from __future__ import annotations

import numbers
import os
import re
from pathlib import Path

import numpy as np

from .. import jsonfile
from ..config import MAX_CONFIG_BYTES, MAX_INT, ConfigError, GPT2Config
from ..jsonfile import short_repr
from ..generate import Generator
from ..model import Model, TokenIdError
from ..tokenizer import Tokenizer, TokenizerError
from ..weights import BlockWeights, GPT2Weights

__all__ = [
    "load_encoder_hparams_and_params",
    "load_gpt2_params_from_tf_ckpt",
    "params_from_weights",
    "weights_from_params",
    "to_model",
    "gpt2",
    "generate",
    "gen_text",
    "main",
]

# picoGPT block path -> (fastgpt BlockWeights field, is a Conv1D weight to transpose)
_BLOCK_TABLE = {
    ("ln_1", "g"): ("ln_1_g", False),
    ("ln_1", "b"): ("ln_1_b", False),
    ("attn", "c_attn", "w"): ("attn_qkv_w", True),
    ("attn", "c_attn", "b"): ("attn_qkv_b", False),
    ("attn", "c_proj", "w"): ("attn_proj_w", True),
    ("attn", "c_proj", "b"): ("attn_proj_b", False),
    ("ln_2", "g"): ("ln_2_g", False),
    ("ln_2", "b"): ("ln_2_b", False),
    ("mlp", "c_fc", "w"): ("mlp_fc_w", True),
    ("mlp", "c_fc", "b"): ("mlp_fc_b", False),
    ("mlp", "c_proj", "w"): ("mlp_proj_w", True),
    ("mlp", "c_proj", "b"): ("mlp_proj_b", False),
}
# picoGPT's functions hard-code these; a checkpoint using others cannot be run by them.
_PICO_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_PICO_EPS = 1e-5
_OPENAI_SIZES = ("124M", "355M", "774M", "1558M")
_HPARAMS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
_BLOCK_SCOPE = re.compile(r"h(\d{1,9})")       # OpenAI's block variables: model/h0/..., model/h11/...


# --------------------------------------------------------------------------------------
# params <-> fastgpt weights
# --------------------------------------------------------------------------------------

def _get(tree, path: tuple, where: str):
    node = tree
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"params: {where}{'.'.join(path[:i + 1])} is missing "
                             "(expected picoGPT's layout, see fastgpt.compat.picogpt)")
        node = node[key]
    return node


def _f32(arr, name: str, shape: tuple, transpose: bool) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind != "f":
        raise ValueError(f"params: {name} must be a floating-point array, got dtype {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"params: {name} has shape {a.shape}, expected {shape}")
    # A .T view of a C-contiguous float32 array (what params_from_weights hands out) comes
    # back without a copy.
    return np.ascontiguousarray(a.T if transpose else a, dtype=np.float32)


def weights_from_params(wte, wpe, blocks, ln_f, n_head: int) -> tuple[GPT2Config, GPT2Weights]:
    """fastgpt's config and weights for picoGPT params (shapes checked, names in errors)."""
    wte, wpe = np.asarray(wte), np.asarray(wpe)
    if wte.ndim != 2 or wpe.ndim != 2 or wte.shape[1] != wpe.shape[1]:
        raise ValueError(f"params: wte {wte.shape} and wpe {wpe.shape} must be [n_vocab, n_embd] and "
                         "[n_ctx, n_embd] with the same n_embd")
    if not isinstance(blocks, (list, tuple)):
        raise ValueError(f"params: blocks must be a list of dicts, got {type(blocks).__name__}")
    (V, C), P = wte.shape, wpe.shape[0]
    fc_shape = np.shape(_get(blocks[0], ("mlp", "c_fc", "w"), "blocks[0].")) if blocks else ()
    F = fc_shape[1] if len(fc_shape) == 2 else 4 * C
    # With no blocks the head count is never used; any divisor of C keeps the config valid.
    heads = n_head if blocks or (n_head and C % n_head == 0) else 1
    config = GPT2Config(vocab_size=V, n_positions=P, n_embd=C, n_layer=len(blocks), n_head=heads,
                        n_inner=None if F == 4 * C else int(F), activation_function="gelu_new",
                        layer_norm_epsilon=_PICO_EPS, bos_token_id=None, eos_token_id=None)
    shapes = {  # fastgpt's [out, in] shapes; picoGPT's Conv1D weights are the transpose
        "ln_1_g": (C,), "ln_1_b": (C,), "attn_qkv_w": (3 * C, C), "attn_qkv_b": (3 * C,),
        "attn_proj_w": (C, C), "attn_proj_b": (C,), "ln_2_g": (C,), "ln_2_b": (C,),
        "mlp_fc_w": (F, C), "mlp_fc_b": (F,), "mlp_proj_w": (C, F), "mlp_proj_b": (C,),
    }
    out_blocks = []
    for i, blk in enumerate(blocks):
        fields = {}
        for path, (field, transpose) in _BLOCK_TABLE.items():
            name = f"blocks[{i}].{'.'.join(path)}"
            shape = shapes[field][::-1] if transpose else shapes[field]
            fields[field] = _f32(_get(blk, path, f"blocks[{i}]."), name, shape, transpose)
        out_blocks.append(BlockWeights(**fields))
    g = _f32(_get(ln_f, ("g",), "ln_f."), "ln_f.g", (C,), False)
    b = _f32(_get(ln_f, ("b",), "ln_f."), "ln_f.b", (C,), False)
    wte32 = _f32(wte, "wte", (V, C), False)
    weights = GPT2Weights(wte=wte32, wpe=_f32(wpe, "wpe", (P, C), False), blocks=out_blocks,
                          ln_f_g=g, ln_f_b=b, lm_head=wte32)      # picoGPT's head is x @ wte.T
    return config, weights


def _dense(arr):
    # A quantized matrix (written by `fastgpt convert`) goes back to float32: picoGPT's params
    # are plain arrays.
    return arr.dequantize() if not isinstance(arr, np.ndarray) and hasattr(arr, "dequantize") else arr


def params_from_weights(weights: GPT2Weights) -> dict:
    """picoGPT params for fastgpt weights: Conv1D weights are ``.T`` views (no copy)."""
    if not weights.tied_head:
        raise ValueError("picoGPT's layout has no separate lm_head (logits are x @ wte.T); "
                         "this model's head is untied")
    blocks = []
    for blk in weights.blocks:
        tree: dict = {}
        for path, (field, transpose) in _BLOCK_TABLE.items():
            arr = _dense(getattr(blk, field))
            if arr is None:
                raise ValueError(f"picoGPT's layout needs every bias; this model has no {field}")
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = arr.T if transpose else arr
        blocks.append(tree)
    return {"wte": _dense(weights.wte), "wpe": weights.wpe, "blocks": blocks,
            "ln_f": {"g": weights.ln_f_g, "b": weights.ln_f_b}}


def to_model(params: dict, n_head: int, *, backend: str = "auto", num_threads: int | None = None) -> Model:
    """A fastgpt Model running picoGPT ``params`` (build it once to call it many times)."""
    missing = [k for k in ("wte", "wpe", "blocks", "ln_f") if k not in params]
    if missing:
        raise ValueError(f"params: missing {', '.join(missing)} (expected picoGPT's layout: wte, wpe, blocks, ln_f)")
    config, weights = weights_from_params(params["wte"], params["wpe"], params["blocks"], params["ln_f"], n_head)
    return Model(config, weights, backend=backend, num_threads=num_threads)


# --------------------------------------------------------------------------------------
# picoGPT's gpt2.py
# --------------------------------------------------------------------------------------

def gpt2(inputs, wte, wpe, blocks, ln_f, n_head, *, backend: str = "auto",
         num_threads: int | None = None) -> np.ndarray:
    """Logits ``[n_seq, n_vocab]`` (float32) for every position of ``inputs`` (a list of ids).

    Converts the params on each call, as picoGPT's signature leaves nothing to keep them
    in; to call it in a loop, build ``to_model(params, n_head)`` once and use ``forward``.
    """
    config, weights = weights_from_params(wte, wpe, blocks, ln_f, n_head)
    model = Model(config, weights, backend=backend, num_threads=num_threads)
    return model.forward(np.asarray(_prompt_ids(model, inputs), np.int64))


def generate(inputs, params, n_head, n_tokens_to_generate, *, backend: str = "auto",
             num_threads: int | None = None) -> list[int]:
    """Greedy decoding as picoGPT: returns the ``n_tokens_to_generate`` new ids.

    Like picoGPT, a list ``inputs`` is extended in place with the new ids. No EOS stop.
    """
    model = to_model(params, n_head, backend=backend, num_threads=num_threads)
    new = Generator(model).generate_ids(_prompt_ids(model, inputs), n_tokens_to_generate, eos_token_id=[])
    if isinstance(inputs, list):
        inputs.extend(new)
    return new


def _prompt_ids(model: Model, inputs) -> list[int]:
    """``inputs`` as a list of ids, checked as Model.forward checks them; TokenIdError (a
    ValueError) naming the first id that is not an integer in the vocabulary, and its position."""
    if isinstance(inputs, (list, tuple)) and not inputs:
        return []                  # the Generator's own message says the prompt is empty
    # As objects, each id is checked as it is: int() would turn 1.7 into 1 and "1" into 1,
    # and a float array would be refused only by its dtype, not by the id at fault.
    arr, one_d = model._check_ids(np.asarray(inputs, dtype=object))
    if not one_d:
        raise TokenIdError(f"inputs must be a 1-d list of token ids, got shape {np.shape(arr)}")
    return arr[0].tolist()


def gen_text(prompt: str, n_tokens_to_generate: int = 40, encoder=None, hparams=None, params=None,
             *, backend: str = "auto", num_threads: int | None = None) -> str:
    """Encode ``prompt``, generate greedily, return the decoded new tokens only.

    Missing ``encoder`` / ``hparams`` / ``params`` come from
    ``load_encoder_hparams_and_params()`` (its defaults: OpenAI's 124M in ./models/124M).
    """
    if encoder is None or hparams is None or params is None:
        loaded = load_encoder_hparams_and_params()
        encoder = loaded[0] if encoder is None else encoder
        hparams = loaded[1] if hparams is None else hparams
        params = loaded[2] if params is None else params
    input_ids = [int(i) for i in encoder.encode(prompt)]
    if len(input_ids) + n_tokens_to_generate >= hparams["n_ctx"]:
        raise ValueError(f"prompt of {len(input_ids)} tokens + n_tokens_to_generate={n_tokens_to_generate} "
                         f"does not fit n_ctx={hparams['n_ctx']}")
    output_ids = generate(input_ids, params, hparams["n_head"], n_tokens_to_generate, backend=backend,
                          num_threads=num_threads)
    return encoder.decode(output_ids)


def main(prompt: str, n_tokens_to_generate: int = 40, model_size: str = "124M", models_dir: str = "models") -> str:
    """picoGPT's ``main``: load, generate, return the completion text."""
    encoder, hparams, params = load_encoder_hparams_and_params(model_size, models_dir)
    return gen_text(prompt, n_tokens_to_generate, encoder, hparams, params)


# --------------------------------------------------------------------------------------
# picoGPT's utils.py
# --------------------------------------------------------------------------------------

def load_gpt2_params_from_tf_ckpt(tf_ckpt_path, hparams: dict, *, verify_checksums: bool = True) -> dict:
    """picoGPT's params from an OpenAI TensorFlow checkpoint (prefix, .index file or folder).

    As picoGPT: each variable ``model/<path>`` is squeezed (Conv1D ``[1, in, out]`` ->
    ``[in, out]``) and stored at ``<path>``, ``h<i>/...`` going to ``blocks[i]``. The arrays
    are read-only views of the memory-mapped data file.
    """
    from ..loaders.tf_checkpoint import TFCheckpointError, read_tf_checkpoint

    n_layer = check_hparams(hparams)["n_layer"]
    tensors = read_tf_checkpoint(tf_ckpt_path, verify_checksums=verify_checksums)
    # Before a list of n_layer blocks is made: n_layer is a number from hparams.json.
    if n_layer > len(tensors):
        raise TFCheckpointError(f"{tf_ckpt_path}: hparams n_layer={n_layer}, but the checkpoint holds only "
                                f"{len(tensors)} variables")
    params: dict = {"blocks": [{} for _ in range(n_layer)]}
    for name, array in tensors.items():
        if not name.startswith("model/"):
            continue                      # optimizer slots, global_step: not model weights
        parts = name[len("model/"):].split("/")
        node = params
        block = _BLOCK_SCOPE.fullmatch(parts[0])
        if block:
            i = int(block.group(1))
            if i >= n_layer:
                raise TFCheckpointError(f"{tf_ckpt_path}: variable {name!r} is beyond hparams n_layer={n_layer}")
            node, parts = params["blocks"][i], parts[1:]
        for key in parts[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise TFCheckpointError(f"{tf_ckpt_path}: variable {name!r} lies inside another variable")
        if not parts or parts[-1] in node:
            raise TFCheckpointError(f"{tf_ckpt_path}: variable {name!r} collides with another variable's scope")
        node[parts[-1]] = np.squeeze(array)
    missing = [k for k in ("wte", "wpe", "ln_f") if k not in params]
    if missing:
        raise TFCheckpointError(f"{tf_ckpt_path}: no variable(s) {', '.join('model/' + k for k in missing)}; "
                                "not an OpenAI GPT-2 checkpoint")
    # Check the result the way the model will read it; errors name picoGPT's paths.
    try:
        weights_from_params(params["wte"], params["wpe"], params["blocks"], params["ln_f"], int(hparams["n_head"]))
    except ValueError as exc:
        raise TFCheckpointError(f"{tf_ckpt_path}: {exc}") from None
    return params


def check_hparams(hparams, where: str = "hparams") -> dict:
    """``hparams`` (OpenAI's hparams.json) with every field an integer in range; ConfigError
    naming ``where`` and the field otherwise."""
    if not isinstance(hparams, dict):
        raise ConfigError(f"{where}: expected a JSON object with {', '.join(_HPARAMS)}, "
                          f"got {type(hparams).__name__}")
    for key in _HPARAMS:
        value = hparams.get(key)
        lowest = 0 if key == "n_layer" else 1
        if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) \
                or not lowest <= value <= MAX_INT:
            raise ConfigError(f"{where}: {key} must be an integer in [{lowest}, {MAX_INT}], got {short_repr(value)}")
    return hparams


def _model_dir(model_size: str, models_dir) -> Path:
    from ..registry import ModelNotFoundError, resolve_model_path

    tried = []
    if models_dir is not None:
        candidate = Path(models_dir) / str(model_size)
        if candidate.is_dir():
            return candidate
        tried.append(str(candidate))
    try:
        return resolve_model_path(model_size)          # a folder, or a bundled model's name
    except ModelNotFoundError as e:
        hint = ""
        if str(model_size) in _OPENAI_SIZES:
            hint = (f" OpenAI's {model_size} files (hparams.json, encoder.json, vocab.bpe, checkpoint, "
                    f"model.ckpt.*) must already be in {tried[0] if tried else 'the folder'}: fastgpt never "
                    "downloads (picoGPT's or the LLMs-from-scratch download script fetches them).")
        where = ", ".join(tried) or "no folder"
        raise FileNotFoundError(f"no model {model_size!r}: tried {where}; {e}.{hint}") from None


def _hparams_from_config(config: GPT2Config, folder) -> dict:
    if config.activation_function not in _PICO_ACTIVATIONS or config.layer_norm_epsilon != _PICO_EPS:
        raise ValueError(f"{folder}: activation {config.activation_function!r} / layer_norm_epsilon "
                         f"{config.layer_norm_epsilon} differ from picoGPT's tanh GELU and 1e-5; its "
                         "functions cannot run this model (use fastgpt.Model directly)")
    return {"n_vocab": config.vocab_size, "n_ctx": config.n_positions, "n_embd": config.n_embd,
            "n_head": config.n_head, "n_layer": config.n_layer}


def _encoder(folder: Path, n_vocab: int) -> Tokenizer:
    try:
        return Tokenizer.from_pretrained(folder)
    except TokenizerError as e:
        if n_vocab == 50257:           # GPT-2's own vocabulary: the bundled copy
            return Tokenizer.gpt2()
        raise TokenizerError(f"{folder}: no tokenizer for its {n_vocab}-token vocabulary ({e})") from None


def load_encoder_hparams_and_params(model_size: str = "124M", models_dir: str | os.PathLike | None = "models",
                                    *, verify_checksums: bool = True):
    """``(encoder, hparams, params)`` as picoGPT returns them, without TensorFlow or downloads.

    The model is ``models_dir/model_size`` if that folder exists, else ``model_size`` as a
    folder or a bundled model name. The folder is OpenAI's release (hparams.json + a
    TensorFlow checkpoint + encoder.json / vocab.bpe) or a Hugging Face GPT-2 folder
    (config.json + weights; Conv1D weights are returned as ``[in, out]`` views). ``encoder``
    is a fastgpt Tokenizer (``encode(text) -> ids``, ``decode(ids) -> text``); ``hparams``
    has n_vocab, n_ctx, n_embd, n_head, n_layer.
    """
    folder = _model_dir(model_size, models_dir)
    if (folder / "hparams.json").exists():
        path = folder / "hparams.json"
        hparams = check_hparams(jsonfile.read_json(path, ConfigError, MAX_CONFIG_BYTES), str(path))
        params = load_gpt2_params_from_tf_ckpt(folder, hparams, verify_checksums=verify_checksums)
        return _encoder(folder, int(hparams["n_vocab"])), hparams, params
    if (folder / "config.json").is_file():
        from ..loaders.gpt2 import load_pretrained

        config, weights = load_pretrained(folder)
        hparams = _hparams_from_config(config, folder)
        return _encoder(folder, config.vocab_size), hparams, params_from_weights(weights)
    raise FileNotFoundError(f"{folder}: neither OpenAI's hparams.json nor a Hugging Face config.json is here")
