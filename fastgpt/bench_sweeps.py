"""``fastgpt bench``'s sweeps: batched decode (``--batch 1,4,8,16,32``) and time to first token
over prompt lengths (``--prompt-tokens 16,64,128,512``), each figure against its bound.

The bound of a step that multiplies N rows of x by the model's matrices is
    max(weight bytes read / memory bandwidth, 2 x parameters x N / peak arithmetic)
with both rates measured in the same run: the bandwidth by bench's streaming probe, the peak by
running, in registers, the instructions that the dtype's kernel uses for N rows
(kernels._quant.arithmetic: float32 FMA, AVX512-VNNI or AMX int8, AMX bfloat16; kernels._system.
peak_ops). Attention, layer norms and the rest are left out (small at these lengths), as is the
KV cache read (bench's main table prints it). A step of decode reads every matrix once and
multiplies B rows through all of them, LM head included; a prompt of P tokens runs P rows through
the blocks and one through the LM head (only the last position's logits are computed).

Method (as bench's main table): each case is run once to warm up, then all cases run in rounds,
interleaved (dtype x batch size, or dtype x prompt length), with an untimed pause before each and
the bandwidth and peak probes at the end of every round; medians over the rounds.

- Batched decode: B rows, each with its own random prompt (row b's is the same whatever B), each
  prefilled alone (untimed), then ``new_tokens - 1`` greedy steps of all B rows in one forward
  each, timed with their argmax. Aggregate tokens/s = B x steps / time. Since a row's result does
  not depend on the rest of the batch, row 0 must make the same tokens for every B: checked.
- Time to first token: a fresh cache, the prompt's forward and the argmax (bench's definition),
  then a few decode steps of the same run, so that the first token is set against one step.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

from .kv_cache import KVCache

#: Seed of the rows' random prompts (row b uses PROMPT_SEED + b).
PROMPT_SEED = 0
#: Decode steps timed after each prompt of the time-to-first-token sweep (the step it is set against).
TTFT_DECODE_STEPS = 8


def summarize(values) -> dict:
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "samples": values}


def matrix_parameters(weights) -> tuple[int, int]:
    """(parameters of the blocks' matrices, of the LM head): what a row multiplies through."""
    blocks = sum(int(np.prod(getattr(blk, name).shape)) for blk in weights.blocks
                 for name in ("attn_qkv_w", "attn_proj_w", "mlp_fc_w", "mlp_proj_w"))
    return blocks, int(np.prod(weights.lm_head.shape))


def arithmetic(dtype: str, n_rows: int) -> str:
    """The peak_ops kind that the dtype's products use for n_rows rows."""
    from .kernels import HAVE_KERNELS

    if dtype == "float32" or not HAVE_KERNELS:
        return "f32_fma"
    from .kernels import _quant

    return _quant.arithmetic(dtype, n_rows)


class PeakProbe:
    """The peak rate of each kind of arithmetic the sweep needs, measured once per round."""

    def __init__(self, kinds, n_threads: int):
        from .kernels import HAVE_KERNELS

        self.kinds, self.n_threads, self.samples = sorted(set(kinds)), n_threads, {}
        self.available = HAVE_KERNELS
        self.measure()  # warm-up (thread pool, tile permission), not kept
        self.samples = {k: [] for k in self.kinds}

    def measure(self) -> None:
        if not self.available:
            return
        from .kernels import _system

        for kind in self.kinds:
            self.samples.setdefault(kind, []).append(_system.peak_ops(kind, self.n_threads))

    def result(self) -> dict:
        return {k: summarize(v) if v and v[0] > 0 else None for k, v in self.samples.items()}


def bound_seconds(nbytes: float, ops: list[tuple[float, str]], bandwidth: float, peaks: dict) -> dict:
    """max(bytes / bandwidth, sum of ops / peak of their arithmetic) and both terms (None: unknown)."""
    memory = nbytes / bandwidth
    compute = 0.0
    for n_ops, kind in ops:
        peak = peaks.get(kind)
        if not peak:
            compute = None
            break
        compute += n_ops / peak["median"]
    return {"memory_s": memory, "compute_s": compute,
            "seconds": memory if compute is None else max(memory, compute),
            "bound_by": "memory" if compute is None or memory >= compute else "arithmetic"}


def _prompts(config, n_rows: int, prompt_tokens: int) -> np.ndarray:
    return np.stack([np.random.default_rng(PROMPT_SEED + b).integers(0, config.vocab_size, prompt_tokens,
                                                                      dtype=np.int64) for b in range(n_rows)])


def batch_run(model, prompts: np.ndarray, new_tokens: int) -> tuple[float, np.ndarray]:
    """Prefill each row alone (untimed), then new_tokens - 1 greedy steps of every row at once.
    Returns the steps' seconds and the tokens (B, new_tokens)."""
    B, P = prompts.shape
    cache = model.new_cache(batch_size=B, max_len=P + new_tokens)
    tokens = np.empty((B, new_tokens), np.int64)
    for b in range(B):
        tokens[b, 0] = int(np.argmax(model.forward(prompts[b:b + 1], cache=cache, rows=[b], last_only=True)[0]))
    t0 = time.perf_counter()
    for i in range(1, new_tokens):
        logits = model.forward(tokens[:, i - 1:i], cache=cache, last_only=True)     # (B, V)
        tokens[:, i] = np.argmax(logits, axis=-1)
    return time.perf_counter() - t0, tokens


def run_batch_sweep(config, variants: dict, batches: list[int], *, prompt_tokens: int, new_tokens: int,
                    repeat: int, threads: int, backend: str, kv_dtype, bandwidth_probe, settle_seconds: float,
                    bytes_per_step: dict, status) -> dict:
    """Batched decode per dtype (variants: dtype -> weights) and batch size, interleaved."""
    from .model import Model

    models = {d: Model(config, w, backend=backend, num_threads=threads, kv_dtype=kv_dtype) for d, w in variants.items()}
    cases = [(d, B) for d in variants for B in batches]
    prompts = _prompts(config, max(batches), prompt_tokens)
    peaks = PeakProbe([arithmetic(d, B) for d, B in cases], threads)
    runs = {c: [] for c in cases}
    tokens = {}
    for d, B in cases:
        status.show(f"warming up {d}, batch {B}")
        _, tokens[d, B] = batch_run(models[d], prompts[:B], new_tokens)
    for r in range(repeat):
        for d, B in cases:
            status.show(f"round {r + 1}/{repeat}: {d}, batch {B}")
            time.sleep(settle_seconds)
            runs[d, B].append(batch_run(models[d], prompts[:B], new_tokens)[0])
        status.show(f"round {r + 1}/{repeat}: memory bandwidth and peak arithmetic")
        bandwidth_probe.measure(max(1, math.ceil(7 / repeat)))
        peaks.measure()
    bandwidth = statistics.median(bandwidth_probe.samples) * 1e9
    peak = peaks.result()
    steps = new_tokens - 1
    blocks, head = matrix_parameters(next(iter(variants.values())))
    # a step's attention reads every row's cached keys and values: P + new_tokens / 2 on average
    kv_bytes_per_row = {d: (prompt_tokens + new_tokens / 2) * KVCache.nbytes_for(config, 1, 1, m.kv_dtype)
                        for d, m in models.items()}
    rows = []
    for d, B in cases:
        seconds = [s / steps for s in runs[d, B]]
        kind = arithmetic(d, B)
        ops = [(2 * (blocks + head) * B, kind)]
        bound = bound_seconds(bytes_per_step[d], ops, bandwidth, peak)
        with_kv = bound_seconds(bytes_per_step[d] + B * kv_bytes_per_row[d], ops, bandwidth, peak)
        ms = statistics.median(seconds)
        one = statistics.median(runs[d, batches[0]]) / steps
        rows.append({"dtype": d, "batch": B, "ms_per_step": summarize(1e3 * s for s in seconds),
                     "tokens_per_s": summarize(B / s for s in seconds),
                     "speedup_vs_first_batch": B * one / ms / batches[0],
                     "arithmetic": kind, "bound_ms": 1e3 * bound["seconds"], "bound_by": bound["bound_by"],
                     "bound_with_kv_ms": 1e3 * with_kv["seconds"],
                     "of_bound": bound["seconds"] / ms,
                     "row0_tokens_as_first_batch": bool(np.array_equal(tokens[d, B][0], tokens[d, batches[0]][0]))})
    return {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "batches": batches,
            "peaks_ops_per_s": peak, "bandwidth_gb_per_s": bandwidth / 1e9, "rows": rows}


def first_token_run(model, prompt: np.ndarray, steps: int) -> tuple[float, float]:
    """(time to first token, time of the next `steps` greedy decode steps) of one generation on a
    fresh cache, as fastgpt bench's main table times them."""
    cache = model.new_cache(batch_size=1, max_len=prompt.size + steps + 1)
    t0 = time.perf_counter()
    token = np.array([int(np.argmax(model.forward(prompt, cache=cache, last_only=True)))])
    t1 = time.perf_counter()
    for _ in range(steps):
        token[0] = int(np.argmax(model.forward(token, cache=cache, last_only=True)))
    return t1 - t0, time.perf_counter() - t1


def run_ttft_sweep(config, variants: dict, prompt_lengths: list[int], *, repeat: int, threads: int, backend: str,
                   kv_dtype, bandwidth_probe, settle_seconds: float, bytes_per_step: dict, status) -> dict:
    """Time to first token per dtype and prompt length, and a decode step of the same runs."""
    from .model import Model

    models = {d: Model(config, w, backend=backend, num_threads=threads, kv_dtype=kv_dtype) for d, w in variants.items()}
    cases = [(d, P) for d in variants for P in prompt_lengths]
    prompts = {P: _prompts(config, 1, P)[0] for P in prompt_lengths}
    peaks = PeakProbe([arithmetic(d, n) for d, P in cases for n in (P, 1)], threads)
    runs = {c: [] for c in cases}
    for d, P in cases:
        status.show(f"warming up {d}, prompt {P}")
        first_token_run(models[d], prompts[P], TTFT_DECODE_STEPS)
    for r in range(repeat):
        for d, P in cases:
            status.show(f"round {r + 1}/{repeat}: {d}, prompt {P}")
            time.sleep(settle_seconds)
            runs[d, P].append(first_token_run(models[d], prompts[P], TTFT_DECODE_STEPS))
        status.show(f"round {r + 1}/{repeat}: memory bandwidth and peak arithmetic")
        bandwidth_probe.measure(max(1, math.ceil(7 / repeat)))
        peaks.measure()
    bandwidth = statistics.median(bandwidth_probe.samples) * 1e9
    peak = peaks.result()
    blocks, head = matrix_parameters(next(iter(variants.values())))
    rows = []
    for d, P in cases:
        ttft = [first for first, _ in runs[d, P]]
        step = [rest / TTFT_DECODE_STEPS for _, rest in runs[d, P]]
        bound = bound_seconds(bytes_per_step[d], [(2 * blocks * P, arithmetic(d, P)), (2 * head, arithmetic(d, 1))],
                              bandwidth, peak)
        rows.append({"dtype": d, "prompt_tokens": P, "ttft_ms": summarize(1e3 * t for t in ttft),
                     "decode_ms_per_step": summarize(1e3 * s for s in step),
                     "ttft_over_step": statistics.median(t / s for t, s in zip(ttft, step)),
                     "arithmetic": arithmetic(d, P), "bound_ms": 1e3 * bound["seconds"], "bound_by": bound["bound_by"],
                     "of_bound": bound["seconds"] / statistics.median(ttft)})
    return {"prompt_lengths": prompt_lengths, "decode_steps": TTFT_DECODE_STEPS,
            "peaks_ops_per_s": peak, "bandwidth_gb_per_s": bandwidth / 1e9, "rows": rows}


def _peaks_line(peaks: dict) -> str:
    return ", ".join(f"{k} {v['median'] / 1e9:.0f}" if v else f"{k} -" for k, v in peaks.items())


def _table(headers, rows) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(f"{h:>{w}}" for h, w in zip(headers, widths))]
    lines += ["  ".join(f"{c:>{w}}" for c, w in zip(r, widths)) for r in rows]
    return lines


def format_batch(report: dict, threads: int) -> str:
    lines = [f"batched decode: {report['prompt_tokens']}-token prompts, {report['new_tokens'] - 1} steps of B rows "
             f"(greedy, every row in one forward per step); {threads} threads; median over the rounds",
             f"bound = max(weight bytes / {report['bandwidth_gb_per_s']:.1f} GB/s, 2 x parameters x B / peak); "
             f"peak G op/s ({threads} threads): {_peaks_line(report['peaks_ops_per_s'])}", ""]
    first = report["batches"][0]
    rows = [[r["dtype"], str(r["batch"]), f"{r['ms_per_step']['median']:.2f}", f"{r['tokens_per_s']['median']:.0f}",
             f"{r['speedup_vs_first_batch']:.1f}x", f"{r['bound_ms']:.2f}", r["bound_by"], f"{r['of_bound']:.0%}",
             f"{r['bound_with_kv_ms']:.2f}", r["arithmetic"], "yes" if r["row0_tokens_as_first_batch"] else "NO"]
            for r in report["rows"]]
    lines += _table(["dtype", "B", "ms/step", "tok/s", f"vs B={first}", "bound ms", "bound by", "of bound",
                     "+KV reads ms", "arithmetic", f"row 0 = B={first}"], rows)
    lines += ["", "+KV reads: the bound with the step's reads of the KV cache added to the weights' bytes"]
    return "\n".join(lines)


def format_ttft(report: dict, threads: int) -> str:
    lines = [f"time to first token: prompt of P tokens (prefill + argmax), and a decode step of the same run; "
             f"{threads} threads; median over the rounds",
             f"bound = max(weight bytes / {report['bandwidth_gb_per_s']:.1f} GB/s, 2 x (block parameters x P + "
             f"head parameters) / peak); peak G op/s: {_peaks_line(report['peaks_ops_per_s'])}", ""]
    rows = [[r["dtype"], str(r["prompt_tokens"]), f"{r['ttft_ms']['median']:.2f}", f"{r['bound_ms']:.2f}",
             r["bound_by"], f"{r['of_bound']:.0%}", f"{r['decode_ms_per_step']['median']:.2f}",
             f"{r['ttft_over_step']:.2f}x", r["arithmetic"]] for r in report["rows"]]
    lines += _table(["dtype", "P", "TTFT ms", "bound ms", "bound by", "of bound", "step ms", "TTFT/step",
                     "arithmetic"], rows)
    return "\n".join(lines)
