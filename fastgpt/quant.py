"""16-bit and 8-bit weight formats: the NumPy reference quantize / dequantize (the spec).

Decoding reads every weight once per token, so it is bound by memory bandwidth: weights
held in 2 bytes (bfloat16, float16) or ~1 byte (int8 blocks) decode 2x / 3.8x faster than
float32. Only the linear weights, the token embedding ``wte`` and the (tied) LM head are
stored this way; layer norms, biases, the position table, activations and the KV cache stay
float32. The compiled kernels (csrc/quant.c, fastgpt/kernels/_quant.pyx) dequantize inside
the matrix-vector product and are tested against ``linear_ref`` below.

Formats (a ``QuantizedWeight`` of shape (out, in), row-major like every linear weight):

- ``bfloat16``: ``data`` uint16 (out, in), the top half of each float32, rounded to nearest
  even (bit for bit what ``torch.Tensor.to(torch.bfloat16)`` does). Widening back is exact.
- ``float16``: ``data`` uint16 (out, in), IEEE half bits from ``astype(np.float16)`` (round to
  nearest even). Values beyond float16's range (65504) are an error, not inf.
- ``int8``: ``data`` int8 (out, in) and ``scales`` uint16 (out, in / 32) holding float16 bits:
  one scale per block of 32 consecutive input weights of a row (llama.cpp's q8_0 layout, with
  the scales in their own array). Symmetric absmax: scale = absmax / 127 rounded *up* to a
  float16, q = rint(w / scale) in [-127, 127], so |w - q * scale| <= scale / 2 always (rounding
  the scale up means no value is ever clipped). The value is float32(q) * float32(scale), one
  float32 multiply: the kernels compute exactly the same products. float16 scales cost 2
  bytes per 32 weights (1.0625 bytes per weight, 6% less traffic than float32 scales); blocks
  whose absmax is below ~1e-2 get subnormal scales, whose coarser steps are still far below
  the int8 step of ordinary blocks. ``in`` must be a multiple of 32 (GPT-2's 768, 1024, 1280,
  1600 and 4x those all are); other widths raise QuantizationError (use a 16-bit format).

Activations stay float32, except inside int8 products on CPUs with AVX512-VNNI (decode and
prefill alike), which round x to int8 blocks of 32 too, as llama.cpp's q8_0 does
(``linear_ref_int8_activations`` is their spec).

Non-goals: asymmetric or 4-bit formats, per-tensor scales.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

#: Every dtype a model can hold its weights in; "float32" means unquantized.
DTYPES = ("float32", "bfloat16", "float16", "int8")
#: The quantized ones (QuantizedWeight.format).
FORMATS = ("bfloat16", "float16", "int8")
#: Input weights per int8 scale.
INT8_BLOCK = 32
#: Serialises QuantizedWeight.scales_by_group's one-time layout (models are shared by threads).
_GROUPING = threading.Lock()
_INT8_MAX = 127
_F16_MAX = 65504.0

#: Format name -> the code the C kernels use (csrc/fastgpt_kernels.h, FG_Q_*).
FORMAT_CODES = {"bfloat16": 0, "float16": 1, "int8": 2}


class QuantizationError(ValueError):
    """An unknown dtype, or weights that cannot be stored in the requested format."""


def check_dtype(dtype) -> str:
    """Return ``dtype`` if it is a supported weight dtype name, else raise QuantizationError."""
    if dtype not in DTYPES:
        raise QuantizationError(
            f"unknown weight dtype {dtype!r}; supported: {', '.join(repr(d) for d in DTYPES)}"
        )
    return dtype


# -- element formats -------------------------------------------------------------------------------
def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 ``x``, rounded to nearest, ties to even.

    Adding 0x7FFF plus the lowest kept bit to the float32 bits and dropping the low half rounds
    the mantissa to nearest even; a carry into the exponent is the correct rounding up to the
    next binade (and to inf past bfloat16's maximum). NaN becomes the canonical quiet 0x7FC0,
    as in torch (adding to a NaN's bits could otherwise turn it into inf).
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    lsb = (bits >> 16) & 1
    out = ((bits + (np.uint32(0x7FFF) + lsb)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns: the bits become the top half. Exact."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(np.float32)


#: Alignment of quantized arrays: a 64-byte weight row that straddles two cache lines costs
#: the 16-bit decode loops ~20% (measured in cache); NumPy's large arrays are only 16-aligned.
ALIGN = 64


def aligned(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself if its data is ALIGN-byte aligned and C-contiguous, else an aligned copy."""
    if arr.flags.c_contiguous and arr.ctypes.data % ALIGN == 0:
        return arr
    buf = np.empty(arr.nbytes + ALIGN, np.uint8)
    start = -buf.ctypes.data % ALIGN
    out = buf[start:start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


def _int8_scales(absmax: np.ndarray) -> np.ndarray:
    """float16 scales (as float16) >= absmax / 127 and as close to it as float16 allows."""
    s32 = absmax / np.float32(_INT8_MAX)                         # (O, B) float32
    s16 = s32.astype(np.float16)
    low = s16.astype(np.float32) < s32                           # rounded down: bump one ulp up
    if low.any():
        s16[low] = np.nextafter(s16[low], np.float16(np.inf))
    return s16


# -- the weight type ---------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class QuantizedWeight:
    """A linear weight (or embedding table) of shape (out, in) in a 16- or 8-bit format.

    ``data``: uint16 (16-bit formats) or int8 (int8) of shape (out, in); ``scales``: uint16
    float16 bits of shape (out, in / 32) for int8, else None. Arrays may be read-only
    memory-mapped views (a converted file). See the module docstring for the formats.
    """

    format: str
    data: np.ndarray
    scales: np.ndarray | None = None
    _grouped: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise QuantizationError("invalid QuantizedWeight: " + "; ".join(problems))

    def problems(self, shape: tuple | None = None) -> list[str]:
        """What is wrong with this weight (or with it standing for an array of ``shape``)."""
        if self.format not in FORMATS:
            return [f"format {self.format!r} is not one of {', '.join(FORMATS)}"]
        want = np.int8 if self.format == "int8" else np.uint16
        d, s = self.data, self.scales
        if not isinstance(d, np.ndarray) or d.dtype != want or d.ndim != 2:
            return [f"{self.format} data must be a 2-d {np.dtype(want)} array, got "
                    f"{getattr(d, 'dtype', type(d))} {getattr(d, 'shape', '')}"]
        problems = []
        if not d.flags.c_contiguous:
            problems.append("data is not C-contiguous")
        if shape is not None and d.shape != tuple(shape):
            problems.append(f"shape {d.shape}, expected {tuple(shape)}")
        if self.format == "int8":
            n_blocks = d.shape[1] // INT8_BLOCK
            if d.shape[1] % INT8_BLOCK:
                problems.append(f"int8 needs the input width to be a multiple of {INT8_BLOCK}, got {d.shape[1]}")
            elif not isinstance(s, np.ndarray) or s.dtype != np.uint16 or s.shape != (d.shape[0], n_blocks):
                problems.append(f"int8 scales must be a uint16 (float16 bits) array of shape "
                                f"{(d.shape[0], n_blocks)}, got {getattr(s, 'dtype', type(s))} {getattr(s, 'shape', '')}")
            elif not s.flags.c_contiguous:
                problems.append("scales are not C-contiguous")
        elif s is not None:
            problems.append(f"{self.format} weights have no scales")
        return problems

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + (0 if self.scales is None else self.scales.nbytes)

    def __repr__(self):
        return f"QuantizedWeight({self.format}, shape={self.shape}, {self.nbytes / 1e6:.2f} MB)"

    def scales_by_group(self) -> np.ndarray:
        """int8's scales laid out for the AMX kernel: uint16 (out / 16 rounded up, in / 32, 16),
        ``[g, b, r] = scales[16 g + r, b]``, rows past ``out`` repeating the last. Made on first use
        and kept (1/32 of the int8 data's bytes): the kernel would otherwise transpose the scales of
        every group of 16 rows on every call, ~10% of a one-row int8 decode step."""
        if self._grouped is None:
            with _GROUPING:
                if self._grouped is None:
                    o, nb = self.scales.shape
                    rows = np.minimum(np.arange(-(-o // 16) * 16), o - 1)          # (16 G,)
                    grouped = self.scales[rows].reshape(-1, 16, nb).transpose(0, 2, 1)
                    self._grouped = np.ascontiguousarray(grouped)                # (G, nb, 16)
        return self._grouped

    def dequantize(self) -> np.ndarray:
        """The float32 (out, in) array these weights stand for."""
        return self.dequantize_rows(slice(None))

    def dequantize_rows(self, idx, out: np.ndarray | None = None) -> np.ndarray:
        """float32 rows ``idx`` (an index array, or a slice): the embedding lookup."""
        d = self.data[idx]                                       # (N, I)
        if self.format == "bfloat16":
            rows = bf16_bits_to_float32(d)
        elif self.format == "float16":
            rows = f16_bits_to_float32(d)
        else:
            n, i = d.shape
            s = f16_bits_to_float32(self.scales[idx])            # (N, I / 32)
            rows = (d.reshape(n, i // INT8_BLOCK, INT8_BLOCK).astype(np.float32) * s[:, :, None]).reshape(n, i)
        if out is None:
            return rows
        out[...] = rows
        return out


def quantize(w: np.ndarray, fmt: str, name: str = "weight") -> QuantizedWeight:
    """Quantize a float32 (out, in) array to ``fmt``; ``name`` goes into error messages."""
    if fmt not in FORMATS:
        check_dtype(fmt)
        raise QuantizationError(f"{name}: {fmt!r} is not a quantized format; expected one of {', '.join(FORMATS)}")
    w = np.asarray(w)
    if w.dtype != np.float32 or w.ndim != 2:
        raise QuantizationError(f"{name}: expected a 2-d float32 array, got {w.dtype} of shape {w.shape}")
    finite = np.isfinite(w)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise QuantizationError(f"{name}: value {w[r, c]} at [{r}, {c}] is not finite; cannot quantize")
    if fmt == "bfloat16":
        return QuantizedWeight(fmt, aligned(float32_to_bf16_bits(w)))
    if fmt == "float16":
        big = np.abs(w) > _F16_MAX
        if big.any():
            r, c = np.argwhere(big)[0]
            raise QuantizationError(f"{name}: value {w[r, c]} at [{r}, {c}] is beyond float16's range "
                                    f"(+-{_F16_MAX:g}); use dtype 'bfloat16'")
        return QuantizedWeight(fmt, aligned(w.astype(np.float16).view(np.uint16)))
    O, I = w.shape
    if I % INT8_BLOCK:
        raise QuantizationError(f"{name}: int8 needs the input width to be a multiple of {INT8_BLOCK}, "
                                f"got shape {w.shape}; use a 16-bit dtype")
    blocks = w.reshape(O, I // INT8_BLOCK, INT8_BLOCK)             # (O, B, 32)
    absmax = np.abs(blocks).max(axis=-1)                           # (O, B)
    if (absmax / np.float32(_INT8_MAX) > _F16_MAX).any():
        raise QuantizationError(f"{name}: |w| up to {absmax.max():g} needs int8 scales beyond float16's "
                                f"range; use dtype 'bfloat16'")
    s16 = _int8_scales(absmax)                                     # (O, B)
    s = s16.astype(np.float32)[:, :, None]                         # (O, B, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.rint(blocks / s), np.float32(0))    # all-zero blocks: scale 0, q 0
    q = np.clip(q, -_INT8_MAX, _INT8_MAX).astype(np.int8).reshape(O, I)
    return QuantizedWeight(fmt, aligned(q), aligned(s16.view(np.uint16)))


# Elements checked per slice by is_finite: its temporaries stay ~1 MB whatever the weight's size.
_FINITE_SLICE = 1 << 18
# Exponent bits that are all ones in NaN and Inf, per 16-bit format.
_EXPONENT_MASK = {"bfloat16": 0x7F80, "float16": 0x7C00}


def is_finite(w) -> bool:
    """Whether a weight (a float array or a QuantizedWeight) holds no NaN or Inf. Reads every
    element, in slices, so that no temporary the size of the weight is made."""
    if isinstance(w, QuantizedWeight):
        if w.format == "int8":                     # the int8 values are finite; the scales may not be
            bits, mask = w.scales, _EXPONENT_MASK["float16"]
        else:
            bits, mask = w.data, _EXPONENT_MASK[w.format]
        flat = bits.reshape(-1)
        return not any(((flat[i:i + _FINITE_SLICE] & mask) == mask).any()
                       for i in range(0, flat.size, _FINITE_SLICE))
    flat = np.asarray(w).reshape(-1)
    return all(np.isfinite(flat[i:i + _FINITE_SLICE]).all() for i in range(0, flat.size, _FINITE_SLICE))


def as_float32(w) -> np.ndarray:
    """The float32 array a weight stands for (a QuantizedWeight is dequantized)."""
    return w.dequantize() if isinstance(w, QuantizedWeight) else w


# -- the reference op -------------------------------------------------------------------------------
# Rows of w dequantized per step of linear_ref: bounds its scratch to ~12 MB at width 3072.
_REF_ROW_CHUNK = 1024


def linear_ref(x: np.ndarray, w: QuantizedWeight, b: np.ndarray | None, out: np.ndarray) -> np.ndarray:
    """out (N, O) = x (N, I) @ dequantize(w).T + b: dequantize a chunk of rows, then matmul."""
    O = w.shape[0]
    for o0 in range(0, O, _REF_ROW_CHUNK):
        o1 = min(o0 + _REF_ROW_CHUNK, O)
        w_chunk = w.dequantize_rows(slice(o0, o1))                 # (o1 - o0, I)
        np.matmul(x, w_chunk.T, out=out[:, o0:o1])                 # (N, o1 - o0)
    if b is not None:
        out += b
    return out


def linear_ref_bf16_activations(x: np.ndarray, w: QuantizedWeight, b: np.ndarray | None,
                                out: np.ndarray) -> np.ndarray:
    """out (N, O) = bfloat16(x) @ w.T + b for bfloat16 w: the spec of the bfloat16 prefill GEMM on
    CPUs with AVX512_BF16 (csrc/hgemm.c, products of more than 8 rows), which rounds x to bfloat16
    (nearest even, float32_to_bf16_bits) so that vdpbf16ps multiplies two bfloat16 at a time.

    The products of two bfloat16 are exact in float32, so this is ``linear_ref`` on the rounded x
    up to summation order. The rounding adds an NMSE of ~2e-6 to the product against float32 x on
    Gaussian data (bfloat16 weights alone give ~5e-6 against float32 weights).
    """
    if w.format != "bfloat16":
        raise QuantizationError(f"linear_ref_bf16_activations needs bfloat16 weights, got {w.format!r}")
    return linear_ref(bf16_bits_to_float32(float32_to_bf16_bits(x)), w, b, out)


#: Blocks of x with a smaller absmax count as zero in the int8-activation product (127 / absmax
#: must stay finite; no GPT-2 activation is anywhere near this small).
INT8_X_TINY = np.float32(2.0 ** -100)


def quantize_activations_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (N, I) float32 rounded to int8 per row and block of 32: (q int8 (N, I/32, 32), sx (N, I/32)).

    Symmetric absmax in float32: sx = absmax / 127, q = clip(rint(x * (127 / absmax)), -127, 127),
    ties to even. A block with absmax < INT8_X_TINY is zero (q 0, sx 0); a block holding NaN or
    inf gets q 0 and sx NaN, so that it turns every output of its row into NaN.
    """
    N, I = x.shape
    blocks = np.asarray(x, np.float32).reshape(N, I // INT8_BLOCK, INT8_BLOCK)   # (N, B, 32)
    finite = np.isfinite(blocks).all(axis=-1)                                    # (N, B)
    absmax = np.where(finite, np.abs(blocks).max(axis=-1), np.float32(0))        # (N, B)
    ok = absmax >= INT8_X_TINY
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(ok, np.float32(_INT8_MAX) / absmax, np.float32(0))        # (N, B)
        q = np.rint(np.where(finite[..., None], blocks, np.float32(0)) * inv[..., None])
    q = np.clip(q, -_INT8_MAX, _INT8_MAX).astype(np.int8)                        # (N, B, 32)
    sx = np.where(ok, absmax / np.float32(_INT8_MAX), np.float32(0)).astype(np.float32)
    sx[~finite] = np.nan
    return q, sx


def linear_ref_int8_activations(x: np.ndarray, w: QuantizedWeight, b: np.ndarray | None,
                                out: np.ndarray) -> np.ndarray:
    """out (N, O) = x @ w.T + b with x rounded to int8 blocks: the spec of the int8 kernels on CPUs
    with AVX512-VNNI (csrc/qgemm.c's prefill GEMM for N > 8 rows, csrc/quant.c's decode matvec).

    With q, sx = quantize_activations_int8(x) and w's int8 values wq and float16 scales sw:
        out[n, o] = b[o] + sum over blocks j of float32(float32(dot[n, o, j]) * sw[o, j]) * sx[n, j]
    where dot[n, o, j] = sum over the block of q * wq is an exact integer. The kernel sums the
    blocks in float32 with one FMA each; this sums them in float64, so the two differ only by
    float32 summation rounding. Rounding x to int8 adds an NMSE of ~3e-5 to the product against
    ``linear_ref`` on Gaussian x, 4e-6 .. 3e-5 on the bundled model's activations (int8 weights
    alone give ~2e-5 against float32 weights).
    """
    if w.format != "int8":
        raise QuantizationError(f"linear_ref_int8_activations needs int8 weights, got {w.format!r}")
    q, sx = quantize_activations_int8(x)                           # (N, B, 32), (N, B)
    O, I = w.shape
    wq = w.data.reshape(O, I // INT8_BLOCK, INT8_BLOCK)            # (O, B, 32)
    sw = f16_bits_to_float32(w.scales)                             # (O, B)
    acc = np.zeros((x.shape[0], O), np.float64)                    # (N, O)
    for j in range(I // INT8_BLOCK):
        dot = q[:, j].astype(np.float64) @ wq[:, j].T.astype(np.float64)   # (N, O), exact integers
        t = dot.astype(np.float32) * sw[:, j]                      # (N, O) float32, rounded once
        acc += t.astype(np.float64) * sx[:, j, None]
    out[...] = acc
    if b is not None:
        out += b
    return out


# -- whole models ------------------------------------------------------------------------------------
LINEAR_FIELDS = ("attn_qkv_w", "attn_proj_w", "mlp_fc_w", "mlp_proj_w")


def weights_dtype(weights) -> str:
    """The dtype the model's matrices are held in: "float32" or the QuantizedWeight format."""
    w = weights.wte
    return w.format if isinstance(w, QuantizedWeight) else "float32"


def quantize_weights(weights, dtype: str):
    """A GPT2Weights with every linear weight, wte and lm_head in ``dtype`` (tie preserved).

    Norms, biases and wpe are shared with ``weights`` (not copied). ``dtype="float32"`` on
    quantized weights dequantizes them; quantizing already-quantized weights to another format
    is refused (it would compound two roundings: convert from the float32 checkpoint instead).
    """
    from .weights import GPT2Weights

    check_dtype(dtype)
    current = weights_dtype(weights)
    if dtype == current:
        return weights
    if current != "float32" and dtype != "float32":
        raise QuantizationError(f"these weights are already {current}; re-quantizing them to {dtype} would "
                                f"round twice: load the float32 checkpoint with dtype={dtype!r} instead")
    if dtype == "float32":
        convert = lambda w, name: as_float32(w)  # noqa: E731
    else:
        convert = lambda w, name: quantize(w, dtype, name)  # noqa: E731
    wte = convert(weights.wte, "wte")
    head = wte if weights.tied_head else convert(weights.lm_head, "lm_head")
    blocks = [
        dataclasses.replace(blk, **{f: convert(getattr(blk, f), f"blocks.{i}.{f}") for f in LINEAR_FIELDS})
        for i, blk in enumerate(weights.blocks)
    ]
    return GPT2Weights(wte=wte, wpe=weights.wpe, blocks=blocks, ln_f_g=weights.ln_f_g, ln_f_b=weights.ln_f_b,
                       lm_head=head)


def dequantize_weights(weights):
    """float32 GPT2Weights standing for the same values (the spec a quantized model is tested against)."""
    return quantize_weights(weights, "float32")
