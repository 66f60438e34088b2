"""The model's parameters as named arrays, in fastgpt's layout (see config.py).

Linear weights are ``[out, in]``. Attention's query/key/value projections are one fused
``[3C, C]`` matrix (one pass over x per token); checkpoints with separate Q/K/V matrices are
concatenated once at load. Biases are optional (``None`` means no bias). ``lm_head`` is the
same array as ``wte`` when the head is tied. The matrices (linear weights, ``wte``, ``lm_head``)
may be ``QuantizedWeight`` (fastgpt/quant.py: bfloat16, float16, int8 blocks).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import GPT2Config
from .quant import QuantizedWeight, is_finite

#: Fields that may hold a QuantizedWeight (16/8-bit); norms, biases and wpe stay float32.
QUANTIZABLE = ("wte", "lm_head", "attn_qkv_w", "attn_proj_w", "mlp_fc_w", "mlp_proj_w")


@dataclasses.dataclass
class BlockWeights:
    ln_1_g: np.ndarray        # (C,)
    ln_1_b: np.ndarray        # (C,)
    attn_qkv_w: np.ndarray    # (3C, C)
    attn_qkv_b: np.ndarray | None   # (3C,)
    attn_proj_w: np.ndarray   # (C, C)
    attn_proj_b: np.ndarray | None  # (C,)
    ln_2_g: np.ndarray        # (C,)
    ln_2_b: np.ndarray        # (C,)
    mlp_fc_w: np.ndarray      # (F, C)
    mlp_fc_b: np.ndarray | None     # (F,)
    mlp_proj_w: np.ndarray    # (C, F)
    mlp_proj_b: np.ndarray | None   # (C,)


@dataclasses.dataclass
class GPT2Weights:
    wte: np.ndarray           # (V, C)
    wpe: np.ndarray           # (P, C)
    blocks: list[BlockWeights]
    ln_f_g: np.ndarray        # (C,)
    ln_f_b: np.ndarray        # (C,)
    lm_head: np.ndarray       # (V, C); `is wte` when tied

    @property
    def tied_head(self) -> bool:
        return self.lm_head is self.wte

    def expected_shapes(self, config: GPT2Config) -> dict:
        C, F, V, P = config.n_embd, config.d_ff, config.vocab_size, config.n_positions
        block = {
            "ln_1_g": (C,), "ln_1_b": (C,), "attn_qkv_w": (3 * C, C), "attn_qkv_b": (3 * C,),
            "attn_proj_w": (C, C), "attn_proj_b": (C,), "ln_2_g": (C,), "ln_2_b": (C,),
            "mlp_fc_w": (F, C), "mlp_fc_b": (F,), "mlp_proj_w": (C, F), "mlp_proj_b": (C,),
        }
        return {"wte": (V, C), "wpe": (P, C), "ln_f_g": (C,), "ln_f_b": (C,), "lm_head": (V, C), "block": block}

    def validate(self, config: GPT2Config) -> None:
        """Check every array's shape and dtype against the config; one error lists all problems."""
        shapes = self.expected_shapes(config)
        problems = []

        def check(name, arr, shape, optional=False):
            if arr is None:
                if not optional:
                    problems.append(f"{name}: missing")
                return
            if isinstance(arr, QuantizedWeight):  # allowed for the matrices: see fastgpt/quant.py
                if name.split(".")[-1] not in QUANTIZABLE:
                    problems.append(f"{name}: must stay float32, got {arr.format} weights")
                problems.extend(f"{name}: {p}" for p in arr.problems(shape))
                return
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
                problems.append(f"{name}: expected a float32 array, got {getattr(arr, 'dtype', type(arr))}")
            elif arr.shape != shape:
                problems.append(f"{name}: shape {arr.shape}, expected {shape}")
            elif not arr.flags.c_contiguous:
                problems.append(f"{name}: not C-contiguous")

        for name in ("wte", "wpe", "ln_f_g", "ln_f_b", "lm_head"):
            check(name, getattr(self, name), shapes[name])
        if len(self.blocks) != config.n_layer:
            problems.append(f"blocks: {len(self.blocks)} blocks, config says n_layer={config.n_layer}")
        for i, blk in enumerate(self.blocks):
            for field, shape in shapes["block"].items():
                check(f"blocks.{i}.{field}", getattr(blk, field), shape, optional=field.endswith("_b") and "ln" not in field)
        if problems:
            raise ValueError("weights do not match the config:\n  " + "\n  ".join(problems))

    def named_tensors(self):
        """(name, array) for every weight present, the tied head once (as "wte")."""
        yield from (("wte", self.wte), ("wpe", self.wpe), ("ln_f_g", self.ln_f_g), ("ln_f_b", self.ln_f_b))
        if not self.tied_head:
            yield "lm_head", self.lm_head
        for i, blk in enumerate(self.blocks):
            for f in dataclasses.fields(blk):  # not dataclasses.astuple: it deep-copies every array
                arr = getattr(blk, f.name)
                if arr is not None:
                    yield f"blocks.{i}.{f.name}", arr

    def nonfinite_tensors(self) -> list[str]:
        """Names of the weights that hold NaN or Inf. Reads every weight once: for memory-mapped
        files that is a pass over the whole file, which loading itself never makes."""
        return [name for name, arr in self.named_tensors() if not is_finite(arr)]

    def nbytes(self) -> int:
        """Bytes of parameters; the tied head is counted once."""
        return sum(arr.nbytes for _, arr in self.named_tensors())


def random_weights(config: GPT2Config, seed: int = 0, std: float = 0.02) -> GPT2Weights:
    """GPT-2's initialisation (normal(0, 0.02) weights, zero biases, unit norms), seeded."""
    rng = np.random.default_rng(seed)
    C, F, V, P = config.n_embd, config.d_ff, config.vocab_size, config.n_positions

    def normal(*shape):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def ones(n):
        return np.ones(n, np.float32)

    def zeros(n):
        return np.zeros(n, np.float32)

    blocks = [
        BlockWeights(
            ln_1_g=ones(C), ln_1_b=zeros(C),
            attn_qkv_w=normal(3 * C, C), attn_qkv_b=zeros(3 * C),
            attn_proj_w=normal(C, C), attn_proj_b=zeros(C),
            ln_2_g=ones(C), ln_2_b=zeros(C),
            mlp_fc_w=normal(F, C), mlp_fc_b=zeros(F),
            mlp_proj_w=normal(C, F), mlp_proj_b=zeros(C),
        )
        for _ in range(config.n_layer)
    ]
    wte = normal(V, C)
    return GPT2Weights(wte=wte, wpe=normal(P, C) * np.float32(0.5), blocks=blocks,
                       ln_f_g=ones(C), ln_f_b=zeros(C), lm_head=wte)
