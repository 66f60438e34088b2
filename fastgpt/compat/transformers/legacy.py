"""pytorch-transformers' module-level GPT-2 names: the TensorFlow loader and the archive maps.

``load_tf_weights_in_gpt2`` reads OpenAI's TensorFlow release checkpoint with NumPy (the
reader picoGPT's compat uses; TensorFlow is not needed). The archive maps are the names'
download addresses, as the old API listed them: data only, since fastgpt never downloads.
"""

from __future__ import annotations

from ...model import Model
from ..picogpt import load_gpt2_params_from_tf_ckpt, weights_from_params

_HUB = "https://huggingface.co/openai-community/{}/resolve/main/{}"
_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
GPT2_PRETRAINED_CONFIG_ARCHIVE_MAP = {name: _HUB.format(name, "config.json") for name in _NAMES}
GPT2_PRETRAINED_MODEL_ARCHIVE_MAP = {name: _HUB.format(name, "pytorch_model.bin") for name in _NAMES}


def load_tf_weights_in_gpt2(model, config_or_path, gpt2_checkpoint_path=None):
    """Load OpenAI's TensorFlow checkpoint (a prefix, its .index file or its folder) into
    ``model`` and return it: ``load_tf_weights_in_gpt2(model, path)`` as the API reference
    documents it, or ``(model, config, path)`` as transformers 4 spelled it. The checkpoint's
    shapes must be the model config's (ValueError naming the tensor otherwise)."""
    path = config_or_path if gpt2_checkpoint_path is None else gpt2_checkpoint_path
    config = model.config
    hparams = {"n_vocab": config.vocab_size, "n_ctx": config.n_positions, "n_embd": config.n_embd,
               "n_head": config.n_head, "n_layer": config.n_layer}
    params = load_gpt2_params_from_tf_ckpt(path, hparams)
    _, weights = weights_from_params(params["wte"], params["wpe"], params["blocks"], params["ln_f"], config.n_head)
    engine = model.model
    model.model = Model(config.engine_config(), weights, backend=engine.backend.name, num_threads=engine.num_threads)
    return model
