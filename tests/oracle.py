"""The parity oracle shared by the tests: random Hugging Face GPT-2 models and their outputs.

transformers is the numerical reference: each checkpoint is a randomly initialised
GPT2LMHeadModel saved with save_pretrained, so the same weights go through both engines.
(A plain module, not conftest.py, so that test files can import it by a unique name.)
"""

from pathlib import Path

import numpy as np
import pytest

from fastgpt.backend import kernels_available

BACKENDS = ["numpy"] + (["cython"] if kernels_available() else [])

# fp32 logits of a few-layer model differ from PyTorch's only by summation order: ~1e-6 seen;
# the bound is 1e-4 absolute.
LOGITS_ATOL = 1e-4

CHECKPOINTS = {
    # name: GPT2Config kwargs
    "small": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=500, n_positions=128),
    # GPT-2 124M widths and vocabulary, fewer layers to stay fast
    "wide": dict(n_embd=768, n_layer=2, n_head=12, vocab_size=50257, n_positions=1024),
    # GPT-2's vocabulary at a small width: real text (the notebook, the API reference examples)
    "vocab": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=50257, n_positions=1024),
}

# A commit hash for test-built Hugging Face cache snapshots (any 40 hex digits do).
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def hf_cache_layout(checkpoint, cache_dir, repo_id):
    """Lay a checkpoint folder out as huggingface_hub's cache does after a download of
    ``repo_id``: ``models--org--name/snapshots/<commit>/`` (the checkpoint plus GPT-2's
    vocab.json and merges.txt, from the copy fastgpt bundles) and ``refs/main``."""
    import shutil
    from pathlib import Path

    import fastgpt

    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SNAPSHOT
    shutil.copytree(checkpoint, snapshot)
    data = Path(fastgpt.__file__).parent / "data" / "gpt2"
    shutil.copy(data / "encoder.json", snapshot / "vocab.json")
    shutil.copy(data / "vocab.bpe", snapshot / "merges.txt")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return snapshot


def hf_model(kwargs, seed, cls="GPT2LMHeadModel"):
    torch = pytest.importorskip("torch", reason="torch is the oracle's runtime")
    transformers = pytest.importorskip("transformers", reason="transformers is the parity oracle")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(**kwargs)
    model = getattr(transformers, cls)(config).eval()
    # GPT-2's init leaves biases and LN at 0/1; randomise them so that the loader's mapping
    # of every tensor is actually exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(ids))).logits.numpy()


def hf_greedy(model, prompt_ids, max_new_tokens):
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.as_tensor([list(prompt_ids)]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0,
        )
    return out[0, len(prompt_ids):].tolist()


def tiktoken_gpt2():
    """tiktoken's "gpt2" encoding built offline from the GPT-2 files fastgpt bundles (nothing is
    downloaded; see fastgpt/data/gpt2/README.md)."""
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is the reference encoder")
    import tiktoken.load
    from tiktoken_ext.openai_public import r50k_pat_str  # the pat_str tiktoken's gpt2() uses

    from fastgpt.tokenizer import EOS_TOKEN

    data = Path(__file__).resolve().parents[1] / "fastgpt" / "data" / "gpt2"
    # Local paths: tiktoken.load.read_file opens paths without "://" directly.
    # An empty TIKTOKEN_CACHE_DIR turns off its cache, which is keyed by path
    # alone and would otherwise serve a stale copy after the files change.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", "")
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(data / "vocab.bpe"), encoder_json_file=str(data / "encoder.json"))
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={EOS_TOKEN: 50256})


def write_random_hf_folder(folder, config, seed=0):
    """A Hugging Face GPT-2 folder (config.json + model.safetensors under HF's names) with
    normal(0, 1) weights, written by fastgpt's own writer (no torch needed)."""
    import json

    from fastgpt.loaders import write_safetensors
    from fastgpt.loaders.gpt2 import _hf_shapes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    rng = np.random.default_rng(seed)
    write_safetensors(folder / "model.safetensors",
                      {name: rng.standard_normal(shape).astype(np.float32) for name, shape in _hf_shapes(config).items()})
    return folder
