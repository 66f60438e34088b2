"""``fastgpt bench``: how fast this model runs on this machine, and how far from the limit.

One command prints, per backend and weight dtype: prefill tokens/s, time to first token, decode
tokens/s and ms/token (median and min-max over repeats), peak resident memory, and the decode
roofline.
With ``--compare transformers`` the same weights also run through Hugging Face's
``GPT2LMHeadModel.generate`` and the table adds its figures, the ratios, and whether both
produced the same tokens.

Method, so that the numbers can be trusted (STYLE habit 14):

- Greedy decoding of a fixed random prompt (seed 0), batch 1, with end-of-text ignored so
  every run makes exactly ``--new-tokens`` tokens. Each run builds a fresh KV cache, as a new
  generation does.
- Time to first token = prefill of the prompt + the first argmax. Decode = the remaining
  ``new_tokens - 1`` steps, each one forward of one token + argmax; prefill is excluded.
- Every engine is warmed up with one full run, then the engines run interleaved
  (A B C A B C ...), so that drift in the machine's load hits all of them alike.
- Several weight dtypes (``--dtype float32,int8``) make one engine per backend and dtype, all
  in the same rounds: each is converted once from the weights as loaded, has its own roofline
  (its own bytes per token), and its speed is also given relative to the first dtype listed on
  the same backend, as the median of per-round ratios. Only figures from one run compare
  fairly: the bandwidth of a shared machine drifts between runs.
- Decode of a model this size reads every weight once per token, so it is bound by memory
  bandwidth. Roofline tokens/s = measured read bandwidth / weight bytes read per token. The
  KV cache read is left out of the bound and printed beside it: for GPT-2 124M it is 3% of
  the weight bytes at 192 positions, 15% at 1024.
- The bandwidth is measured here, not quoted from a datasheet: several multi-threaded
  streaming reads of a 1 GiB buffer (far larger than any last-level cache) by the compiled
  extension, with the benchmark's thread count, interleaved with the model runs so that it
  sees the same machine load.
- No I/O happens inside a timed region: the status line is redrawn between runs only.
- Each run starts after a pause of ``SETTLE_SECONDS``, untimed: OpenBLAS's worker threads keep
  spinning for a while after the numpy engine's (or transformers') last product and take a
  core from the next engine. Measured on int8 decode (2 threads, right after 0.5 s of BLAS
  work): ~370 tokens/s with no pause, 522 after 50 ms, 573 after 0.2 s, 562 after 1 s.

Non-goals: sampling options, batches, and statistics beyond median and range. For before/after
comparisons of a code change use the pytest-benchmark suites in ``bench/``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from . import bench_sweeps
from .bench_sweeps import summarize
from .cli_args import check_writable, positive_int, positive_int_list, thread_count
from .config import PRESETS, GPT2Config
from .kv_cache import KV_DTYPES, default_kv_dtype
from .quant import DTYPES, dequantize_weights, quantize_weights, weights_dtype
from .weights import GPT2Weights

#: The bandwidth probe's buffer: 1 GiB, far larger than any last-level cache. Tests shrink it.
BANDWIDTH_BUFFER_BYTES = 1 << 30
#: At least this many timed bandwidth passes in total (spread over the repeat rounds).
BANDWIDTH_PASSES = 7
#: Untimed pause before each run (see the method above): BLAS threads of the previous engine go idle.
SETTLE_SECONDS = 0.3
#: Seed of the random weights (--random) and of the random prompt ids.
SEED = 0

RANDOM_CONFIGS = PRESETS
ENGINE_BACKENDS = ("numpy", "cython")


# -- measurements --------------------------------------------------------------------------
@dataclass
class Run:
    """One timed generation: prompt -> new_tokens greedy tokens."""
    prefill_s: float          # forward over the prompt
    ttft_s: float             # prefill + first argmax (+ generate's setup, for transformers)
    decode_s: float           # the remaining new_tokens - 1 steps
    argmax_s: float | None    # part of decode_s spent in argmax (fastgpt only)
    tokens: list[int]


def peak_rss_bytes() -> int | None:
    """The process's resident-memory high-water mark (ru_maxrss), or None where unsupported."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def decode_bytes_per_token(weights: GPT2Weights) -> int:
    """Weight bytes one decode step reads: every matrix and vector once, one row of each table.

    The position table contributes one row (the new position). A tied head reads all of wte as
    the LM head, counted once (``nbytes()`` already counts it once); an untied head reads all
    of lm_head plus one gathered wte row.
    """
    row = weights.wpe.shape[1] * weights.wpe.itemsize
    total = weights.nbytes() - weights.wpe.nbytes + row
    if not weights.tied_head:
        total -= weights.wte.nbytes - row
    return total


def kv_cache_bytes_read(config: GPT2Config, length: int, itemsize: int = 4) -> int:
    """Keys and values one decode step reads when attending over ``length`` positions (itemsize:
    bytes per cached value, 4 for a float32 cache, 2 for a 16-bit one)."""
    return 2 * config.n_layer * length * config.n_embd * itemsize


class BandwidthProbe:
    """Memory read bandwidth, measured by streaming a buffer far larger than the caches."""

    def __init__(self, n_threads: int, nbytes: int | None = None):
        from . import kernels

        nbytes = BANDWIDTH_BUFFER_BYTES if nbytes is None else nbytes
        # np.ones, not np.empty: every page is faulted in here, not during a timed pass.
        self.buf = np.ones(nbytes // 4, np.float32)
        self.n_threads = n_threads
        if kernels.HAVE_KERNELS:
            self._read = lambda: kernels._system.read_sum(self.buf, n_threads)
            self.method = f"fastgpt read_sum, {n_threads} thread{'s' if n_threads > 1 else ''}"
        else:
            self._read = lambda: float(self.buf.sum())
            self.method = "numpy sum, 1 thread (compiled kernels not built)"
        self.samples: list[float] = []
        self._read()  # warm-up: thread pool start, TLB

    def measure(self, passes: int = 1) -> None:
        for _ in range(passes):
            t0 = time.perf_counter()
            self._read()
            self.samples.append(self.buf.nbytes / (time.perf_counter() - t0) / 1e9)

    def result(self) -> dict:
        return {"gb_per_s": summarize(self.samples), "method": self.method, "threads": self.n_threads,
                "buffer_bytes": self.buf.nbytes, "passes": len(self.samples)}

    def release(self) -> None:
        self.buf = np.empty(0, np.float32)


# -- engines ---------------------------------------------------------------------------------
class FastgptEngine:
    kind = "fastgpt"

    def __init__(self, model, name: str | None = None):
        """``name``: the key in the report (default: the backend's name, as with one dtype)."""
        self.model = model
        self.backend = model.backend.name
        self.dtype = model.dtype
        self.name = self.backend if name is None else name
        self.label = f"fastgpt {self.name}"

    def run(self, prompt: np.ndarray, new_tokens: int) -> Run:
        # Generator's plain-greedy loop (forward, argmax, feed back) without its per-row
        # bookkeeping or eos stop, with clocks between the steps; tests check it makes the
        # Generator's tokens.
        model = self.model
        cache = model.new_cache(batch_size=1, max_len=len(prompt) + new_tokens)
        tokens = np.empty(new_tokens, np.int64)
        argmax_s = 0.0
        t0 = time.perf_counter()
        logits = model.forward(prompt, cache=cache, last_only=True)
        t1 = time.perf_counter()
        tokens[0] = np.argmax(logits)
        t2 = time.perf_counter()
        for i in range(1, new_tokens):
            logits = model.forward(tokens[i - 1:i], cache=cache, last_only=True)
            ta = time.perf_counter()
            tokens[i] = np.argmax(logits)
            argmax_s += time.perf_counter() - ta
        t3 = time.perf_counter()
        return Run(prefill_s=t1 - t0, ttft_s=t2 - t0, decode_s=t3 - t2, argmax_s=argmax_s, tokens=tokens.tolist())


def transformers_available() -> bool:
    # find_spec, not import: importing torch would add ~200 MB to fastgpt's peak-RSS figure.
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def hf_model_from_weights(config: GPT2Config, weights: GPT2Weights):
    """A ``GPT2LMHeadModel`` holding copies of ``weights`` (its own memory, as if it had loaded them).

    Uses the loader's name table in reverse, so the mapping cannot drift from the one fastgpt
    loads with; Conv1D matrices go back to ``[in, out]``.
    """
    import torch
    import transformers

    from .loaders.gpt2 import _BLOCK_TABLE, _TOP_TABLE

    try:  # skip the random init that would be overwritten at once (minutes for gpt2-xl)
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            no_init_weights = contextlib.nullcontext
    hf_config = transformers.GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=config.n_inner,
        activation_function=config.activation_function, layer_norm_epsilon=config.layer_norm_epsilon,
        # No bos/eos: the benchmark never stops at end-of-text, and small test vocabularies do
        # not contain GPT-2's 50256 (transformers warns about that).
        bos_token_id=None, eos_token_id=None, tie_word_embeddings=weights.tied_head,
    )
    with no_init_weights():
        model = transformers.GPT2LMHeadModel(hf_config)
    model.tie_weights()

    # (HF name, our array or None, transpose); copied one at a time, straight from a strided
    # view, so building the model never holds a second transposed copy of the weights.
    sources = [(f"transformer.{hf}", getattr(weights, ours), False) for hf, ours in _TOP_TABLE.items()]
    for i, blk in enumerate(weights.blocks):
        sources += [(f"transformer.h.{i}.{hf}", getattr(blk, ours), t) for hf, (ours, t) in _BLOCK_TABLE.items()]
    if not weights.tied_head:
        sources.append(("lm_head.weight", weights.lm_head, False))
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for key, arr, transpose in sources:
            if arr is None:  # fastgpt allows bias-free linears; GPT2LMHeadModel always has biases
                params[key].zero_()
            else:
                with warnings.catch_warnings():  # memory-mapped weights are read-only; we only read them
                    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                    src = torch.from_numpy(arr)
                params[key].copy_(src.T if transpose else src)
    missing = set(params) - {key for key, _, _ in sources} - ({"lm_head.weight"} if weights.tied_head else set())
    if missing:
        raise RuntimeError(f"GPT2LMHeadModel parameters not filled from fastgpt's weights: {sorted(missing)}")
    if weights.tied_head and model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        raise RuntimeError("GPT2LMHeadModel's LM head is not tied to wte although fastgpt's is")
    # Run to max_new_tokens like fastgpt, whatever the tokens (a random model may emit eos).
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


class TransformersEngine:
    """``GPT2LMHeadModel.generate`` (greedy, KV cache) on the same weights and thread count.

    Prefill is timed as a separate forward over the prompt with ``logits_to_keep=1`` (what
    generate's own prefill computes). Time to first token and decode are read off a streamer
    that only records the clock: generate hands it the prompt before prefill and then each new
    token as soon as it is chosen, so decode = last token's stamp - first token's stamp over
    new_tokens - 1 steps, generate's per-step overhead included (as fastgpt's argmax is).
    """

    kind = name = label = "transformers"
    dtype = "float32"  # whatever fastgpt holds, GPT2LMHeadModel computes in float32

    def __init__(self, config: GPT2Config, weights: GPT2Weights, n_threads: int):
        import torch
        from transformers.generation.streamers import BaseStreamer

        torch.set_num_threads(n_threads)
        self.torch = torch
        self.model = hf_model_from_weights(config, dequantize_weights(weights))

        class ClockStreamer(BaseStreamer):
            def __init__(self):
                self.stamps = []

            def put(self, value):
                self.stamps.append(time.perf_counter())

            def end(self):
                pass

        self._streamer = ClockStreamer

    def run(self, prompt: np.ndarray, new_tokens: int) -> Run:
        torch = self.torch
        ids = torch.as_tensor(prompt[None, :])
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            t0 = time.perf_counter()
            self.model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
            prefill_s = time.perf_counter() - t0
            streamer = self._streamer()
            t0 = time.perf_counter()
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                      do_sample=False, use_cache=True, streamer=streamer)
        stamps = streamer.stamps
        if len(stamps) != new_tokens + 1:
            raise RuntimeError(f"transformers streamed {len(stamps) - 1} tokens, expected {new_tokens}")
        return Run(prefill_s=prefill_s, ttft_s=stamps[1] - t0, decode_s=stamps[-1] - stamps[1], argmax_s=None,
                   tokens=out[0, len(prompt):].tolist())


# -- the benchmark ---------------------------------------------------------------------------
class StatusLine:
    """One line on stderr, rewritten in place; silent when stderr is not a terminal."""

    def __init__(self, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()

    def show(self, text: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.t0
            self.stream.write(f"\r\x1b[Kbench [{elapsed:5.0f} s] {text}")
            self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def available_backends() -> list[str]:
    from .backend import kernels_available

    return ["numpy"] + (["cython"] if kernels_available() else [])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict:
    from . import __version__, kernels

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(), "simd": kernels.simd_name(), "openmp": kernels.openmp_enabled(),
        "logical_cpus": os.cpu_count(), "load_average_start": list(load) if load else None,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "fastgpt": __version__,
    }


def check_lengths(config: GPT2Config, prompt_tokens: int, new_tokens: int, repeat: int) -> None:
    for name, value in (("--prompt-tokens", prompt_tokens), ("--repeat", repeat)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if new_tokens < 2:
        raise ValueError(f"--new-tokens must be at least 2 (the first token comes from prefill, the rest "
                         f"are decode), got {new_tokens}")
    if prompt_tokens + new_tokens > config.n_positions:
        raise ValueError(
            f"--prompt-tokens {prompt_tokens} + --new-tokens {new_tokens} exceeds the model's context of "
            f"n_positions={config.n_positions}; lower one of them"
        )


def parse_dtypes(text: str) -> list[str]:
    """``--dtype``'s value: one weight dtype, or several separated by commas, each listed once."""
    dtypes = [part.strip() for part in text.split(",")]
    problem = _dtypes_problem(dtypes)
    if problem:
        raise ValueError(f"in {text!r}: {problem}" if len(dtypes) > 1 else problem)
    return dtypes


def _dtypes_problem(dtypes: list[str]) -> str | None:
    choices = f"choose from {', '.join(DTYPES)}, or several separated by commas (e.g. float32,int8)"
    for i, dtype in enumerate(dtypes):
        if not dtype:
            return f"empty dtype name; {choices}"
        if dtype not in DTYPES:
            return f"unknown dtype {dtype!r}; {choices}"
        if dtype in dtypes[:i]:
            return f"dtype {dtype!r} is listed twice (each dtype is measured once)"
    return None if dtypes else f"no dtype given; {choices}"


def _check_convertible(loaded: str, dtypes: list[str]) -> None:
    # quantize_weights refuses to requantize (two roundings); say what can be measured instead.
    bad = [d for d in dtypes if d not in (loaded, "float32")]
    if bad:
        raise ValueError(
            f"--dtype {','.join(dtypes)}: the weights are already {loaded}, so they can be measured as {loaded} "
            f"or widened to float32 only; {bad[0]} would round twice: benchmark the float32 checkpoint "
            "(or --random) instead"
        )


def _transformers_dtype(dtypes: list[str]) -> str:
    """Whose weights transformers runs: the float32 engine's if there is one, else the first
    dtype's widened to float32 (with one --dtype, as always: the same values as fastgpt)."""
    return "float32" if "float32" in dtypes else dtypes[0]


def run_benchmark(config: GPT2Config, weights: GPT2Weights, *, backends, threads: int | None = None,
                  prompt_tokens: int = 128, new_tokens: int = 64, repeat: int = 5, compare: str | None = None,
                  dtypes=None, source: str = "in memory", load_seconds: float | None = None,
                  status: StatusLine | None = None, kv_dtype: str | None = None) -> dict:
    """Run the benchmark; returns every figure as a JSON-ready dict (``format_report`` prints it).

    ``dtypes``: weight dtypes to measure, one engine per backend and dtype, each converted once
    from ``weights`` (None: only ``weights``' own dtype, unconverted). ``kv_dtype``: the engines'
    KV cache dtype (None: each model's default, kv_cache.default_kv_dtype).
    """
    from .model import Model
    from .threads import default_num_threads

    check_lengths(config, prompt_tokens, new_tokens, repeat)
    if compare not in (None, "transformers"):
        raise ValueError(f"--compare must be 'transformers', got {compare!r}")
    if compare and not transformers_available():
        raise ValueError("--compare transformers needs torch and transformers installed (pip install 'fastgpt[hf]')")
    loaded = weights_dtype(weights)
    dtypes = [loaded] if dtypes is None else list(dtypes)
    problem = _dtypes_problem(dtypes)
    if problem:
        raise ValueError(f"dtypes {dtypes!r}: {problem}")
    if loaded != "float32":
        _check_convertible(loaded, dtypes)
    several = len(dtypes) > 1
    threads = default_num_threads() if threads is None else threads
    status = status or StatusLine()
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": None,  # filled in below, with the roofline
        "settings": {"backends": list(backends), "dtypes": dtypes, "threads": threads,
                     "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "repeat": repeat, "warmup_runs": 1,
                     "compare": compare, "prompt_seed": SEED, "interleaved": True, "kv_dtype": kv_dtype},
    }
    prompt = np.random.default_rng(SEED).integers(0, config.vocab_size, prompt_tokens, dtype=np.int64)

    try:
        # One set of weights per dtype, converted up front (not inside a timed region), shared
        # by the backends.
        variants, convert_seconds = {}, {}
        for dtype in dtypes:
            status.show(f"converting the weights to {dtype}")
            t0 = time.perf_counter()
            variants[dtype] = quantize_weights(weights, dtype)
            convert_seconds[dtype] = time.perf_counter() - t0
        # Each engine's peak RSS is read right after its warm-up, before anything bigger
        # (transformers' copy, the bandwidth buffer) exists. Engines of one backend sit side by
        # side, so that each dtype runs right after the first one it is compared with.
        engines, peaks = [], {}
        for name in backends:
            for dtype in dtypes:
                label = f"{name} {dtype}" if several else name
                status.show(f"warming up fastgpt {label}")
                engine = FastgptEngine(Model(config, variants[dtype], backend=name, num_threads=threads,
                                             kv_dtype=kv_dtype), label)
                engine.run(prompt, new_tokens)
                engines.append(engine)
                peaks[engine.name] = peak_rss_bytes()
        hf_source = _transformers_dtype(dtypes)
        if compare:
            status.show("building the transformers model")
            before = peak_rss_bytes()
            engine = TransformersEngine(config, variants[hf_source], threads)
            status.show("warming up transformers")
            engine.run(prompt, new_tokens)
            engines.append(engine)
            # How much it raised the high-water mark: the process also holds fastgpt's weights.
            peaks[engine.name] = None if before is None else peak_rss_bytes() - before

        status.show("allocating the bandwidth buffer")
        probe = BandwidthProbe(threads)
        per_round = max(1, math.ceil(BANDWIDTH_PASSES / repeat))
        runs = {e.name: [] for e in engines}
        for r in range(repeat):
            for engine in engines:
                status.show(f"round {r + 1}/{repeat}: {engine.label}")
                time.sleep(SETTLE_SECONDS)
                runs[engine.name].append(engine.run(prompt, new_tokens))
            status.show(f"round {r + 1}/{repeat}: memory bandwidth")
            probe.measure(per_round)
        report["bandwidth"] = probe.result()
        probe.release()
    finally:
        status.clear()
    report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    first = variants[dtypes[0]]
    report["model"] = {"source": source, "config": config.to_dict(),
                       "parameters": config.num_parameters(weights.tied_head), "weight_bytes": first.nbytes(),
                       "dtype": dtypes[0], "dtypes": dtypes,
                       "tied_head": weights.tied_head, "load_seconds": load_seconds,
                       "convert_seconds": convert_seconds}
    bandwidth = report["bandwidth"]["gb_per_s"]["median"] * 1e9

    def roofline(w):
        kv = kv_dtype or default_kv_dtype(weights_dtype(w))
        kv_bytes = kv_cache_bytes_read(config, prompt_tokens + new_tokens - 1, 4 if kv == "float32" else 2)
        return {"decode_bytes_per_token": decode_bytes_per_token(w), "kv_cache_bytes_last_step": kv_bytes,
                "kv_dtype": kv, "tokens_per_s": bandwidth / decode_bytes_per_token(w), "weight_bytes": w.nbytes()}

    # One roofline per dtype; transformers reads float32 whatever values it was given.
    rooflines = {dtype: roofline(variants[dtype]) for dtype in dtypes}
    if compare and "float32" not in rooflines:  # bytes depend on the shapes only
        rooflines["float32"] = roofline(weights if loaded == "float32" else dequantize_weights(weights))
    report["roofline"] = {"dtype": dtypes[0], **rooflines[dtypes[0]]}  # the first dtype's, as with one
    report["rooflines"] = rooflines

    report["engines"] = {}
    for e in engines:
        roof = rooflines[e.dtype]
        fig = _figures(e, runs[e.name], prompt_tokens, peaks[e.name], roof["tokens_per_s"])
        fig["backend"] = e.backend if e.kind == "fastgpt" else None
        fig["dtype"] = e.dtype
        fig["decode_bytes_per_token"] = roof["decode_bytes_per_token"]
        fig["roofline_tokens_per_s"] = roof["tokens_per_s"]
        if e.kind == "transformers":
            fig["weights_from"] = hf_source  # the values it runs: that dtype's, widened to float32
        elif several:
            fig["peak_rss_note"] += f"; the weights of all {len(dtypes)} dtypes were held at once"
        report["engines"][e.name] = fig
    for e in engines:
        if e.kind != "fastgpt":
            continue
        if several and e.dtype != dtypes[0]:
            reference = f"{e.backend} {dtypes[0]}"
            report["engines"][e.name]["vs_first_dtype"] = {
                "dtype": dtypes[0], "engine": reference, **_paired_ratios(runs[e.name], runs[reference])}
        if compare:
            report["engines"][e.name]["vs_transformers"] = _paired_ratios(runs[e.name], runs["transformers"])

    # Tokens: identical within a dtype (backends agree; transformers with the dtype whose values
    # it runs); different dtypes round differently and may legitimately diverge.
    groups = {dtype: {} for dtype in dtypes}
    for e in engines:
        groups[hf_source if e.kind == "transformers" else e.dtype][e.name] = runs[e.name]
    report["tokens_by_dtype"] = _tokens_by_dtype(groups)
    mismatches = [g["mismatch"] for g in report["tokens_by_dtype"].values() if g["mismatch"]]
    report["tokens_mismatch"] = mismatches[0] if mismatches else None
    report["tokens_identical"] = not mismatches
    return report


def _tokens_by_dtype(groups: dict[str, dict[str, list[Run]]]) -> dict:
    """Per dtype: do all its engines' runs agree, and (after the first dtype) where its tokens
    first leave the first dtype's (None: they never do; that is information, not an error)."""
    out, first = {}, None
    for dtype, group in groups.items():
        mismatch = _first_mismatch(group)
        tokens = next(iter(group.values()))[0].tokens
        out[dtype] = {"engines": list(group), "identical": mismatch is None, "mismatch": mismatch}
        if first is None:
            first = tokens
        else:
            out[dtype]["first_difference_vs_first_dtype"] = next(
                (k for k, (a, b) in enumerate(zip(tokens, first)) if a != b), None)
    return out


def _figures(engine, runs: list[Run], prompt_tokens: int, peak_rss: int | None, roofline: float) -> dict:
    n_decode = len(runs[0].tokens) - 1
    decode_tps = [n_decode / r.decode_s for r in runs]
    return {
        "kind": engine.kind,
        "prefill_tokens_per_s": summarize(prompt_tokens / r.prefill_s for r in runs),
        "time_to_first_token_ms": summarize(1e3 * r.ttft_s for r in runs),
        "decode_tokens_per_s": summarize(decode_tps),
        "decode_ms_per_token": summarize(1e3 * r.decode_s / n_decode for r in runs),
        "argmax_ms_per_token": (summarize(1e3 * r.argmax_s / n_decode for r in runs)
                                if runs[0].argmax_s is not None else None),
        "peak_rss_bytes": peak_rss,
        "peak_rss_note": ("how much building and warming up transformers' model raised the process's peak"
                          if engine.kind == "transformers" else
                          "process peak after fastgpt's warm-ups (weights shared by the backends), before "
                          "transformers and the bandwidth buffer"),
        "roofline_fraction": statistics.median(decode_tps) / roofline,
        "tokens": runs[0].tokens,
    }


def _paired_ratios(mine: list[Run], theirs: list[Run]) -> dict:
    # Speed of fastgpt / speed of transformers, per round (the two ran back to back), then the
    # median over rounds: a load change between rounds cancels out of each pair.
    def ratio(attr):
        return statistics.median(getattr(b, attr) / getattr(a, attr) for a, b in zip(mine, theirs))

    return {"prefill": ratio("prefill_s"), "time_to_first_token": ratio("ttft_s"), "decode": ratio("decode_s")}


def _first_mismatch(runs: dict[str, list[Run]]) -> str | None:
    """None when every run of every engine made the same tokens, else where the first one differs."""
    reference_name = next(iter(runs))
    reference = runs[reference_name][0].tokens
    for name, engine_runs in runs.items():
        for i, r in enumerate(engine_runs):
            if r.tokens != reference:
                at = next(k for k, (a, b) in enumerate(zip(r.tokens, reference)) if a != b)
                return f"{name} run {i + 1} differs from {reference_name} at new token {at}"
    return None


# -- output ------------------------------------------------------------------------------------
def _spread(stats: dict | None, fmt: str) -> str:
    if stats is None:
        return "-"
    if stats["min"] == stats["max"]:
        return format(stats["median"], fmt)
    return f"{stats['median']:{fmt}} ({stats['min']:{fmt}}-{stats['max']:{fmt}})"


def _fmt_rate(stats):
    # About 3 significant figures: run-to-run noise is a few %, more digits would be noise.
    med = stats["median"] if stats else 0
    return _spread(stats, ".0f" if med >= 100 else ".1f" if med >= 10 else ".2f")


def _fmt_rss(engine: dict) -> str:
    if engine["peak_rss_bytes"] is None:
        return "-"
    sign = "+" if engine["kind"] == "transformers" else ""  # its growth of the shared process's peak
    return f"{sign}{engine['peak_rss_bytes'] / 1e6:.0f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _roofline_line(title: str, roof: dict, kv_note: bool) -> str:
    line = (f"{title} {roof['decode_bytes_per_token'] / 1e6:.1f} MB of weights per token -> "
            f"{roof['tokens_per_s']:.1f} tokens/s")
    if kv_note:
        line += f" (KV cache read at the last step, not counted: {roof['kv_cache_bytes_last_step'] / 1e6:.1f} MB)"
    return line


def format_report(report: dict) -> str:
    m, s, model = report["machine"], report["settings"], report["model"]
    bw, roof, cfg = report["bandwidth"], report["roofline"], report["model"]["config"]
    dtypes = s.get("dtypes") or [model.get("dtype", "float32")]
    several = len(dtypes) > 1
    rooflines = report.get("rooflines", {dtypes[0]: roof})
    load = ""
    if m.get("load_average_start") and m.get("load_average_end"):
        load = f"; load average {m['load_average_start'][0]:.2f} at start, {m['load_average_end'][0]:.2f} at end"
    loaded = f", loaded in {model['load_seconds']:.1f} s" if model.get("load_seconds") is not None else ""
    converted = sum(model.get("convert_seconds", {}).values())
    if converted >= 0.05:  # converting to the same dtype is free
        loaded += f", converted in {converted:.1f} s"
    sizes = " / ".join(f"{rooflines[d].get('weight_bytes', model['weight_bytes']) / 1e6:.1f} MB {d}" for d in dtypes)
    lines = [
        f"fastgpt bench: {model['source']} ({model['parameters'] / 1e6:.1f}M parameters, "
        f"{sizes}, {cfg['n_layer']} layers x {cfg['n_embd']} wide){loaded}",
        f"prompt {s['prompt_tokens']} tokens -> {s['new_tokens']} new tokens (greedy, batch 1); "
        f"{_plural(s['threads'], 'thread')}; {_plural(s['repeat'], 'repeat')} after 1 warm-up, engines interleaved; "
        "median (min-max)",
        f"cpu {m['cpu']}, simd {m['simd']}, OpenMP {'on' if m['openmp'] else 'off'}{load}",
        f"memory read bandwidth {_spread(bw['gb_per_s'], '.1f')} GB/s ({bw['passes']} passes over "
        f"{bw['buffer_bytes'] / 2**30:.3g} GiB, {bw['method']})",
    ]
    if several:  # one line per dtype, names aligned
        titles = {d: f"decode roofline {d}:" for d in dtypes}
        titles.update({d: f"decode roofline {d} (transformers):" for d in rooflines if d not in dtypes})
        width = max(len(t) for t in titles.values())
        lines += [_roofline_line(f"{titles[d]:<{width}}", rooflines[d], i == 0) for i, d in enumerate(titles)]
    else:
        lines.append(_roofline_line("decode roofline:", roof, True))
        lines += [_roofline_line(f"decode roofline of transformers ({d}):", r, False)
                  for d, r in rooflines.items() if d != dtypes[0]]
    lines.append("")
    engines = list(report["engines"].values())
    rows = [
        ("prefill tokens/s", [_fmt_rate(e["prefill_tokens_per_s"]) for e in engines]),
        ("time to first token ms", [_fmt_rate(e["time_to_first_token_ms"]) for e in engines]),
        ("decode tokens/s", [_fmt_rate(e["decode_tokens_per_s"]) for e in engines]),
        ("decode ms/token", [_fmt_rate(e["decode_ms_per_token"]) for e in engines]),
        ("  of which argmax ms", [_spread(e["argmax_ms_per_token"], ".3f") for e in engines]),
        ("decode / roofline", [f"{e['roofline_fraction']:.0%}" for e in engines]),
        ("peak RSS MB", [_fmt_rss(e) for e in engines]),
    ]
    if several:
        for key, label in (("decode", f"decode speed vs {dtypes[0]}"), ("prefill", f"prefill speed vs {dtypes[0]}")):
            rows.append((label, [f"{e['vs_first_dtype'][key]:.2f}x" if "vs_first_dtype" in e else "-"
                                 for e in engines]))
    if any("vs_transformers" in e for e in engines):
        for key, label in (("prefill", "prefill speed vs hf"), ("time_to_first_token", "first token speed vs hf"),
                           ("decode", "decode speed vs hf")):
            rows.append((label, [f"{e['vs_transformers'][key]:.2f}x" if "vs_transformers" in e else "-"
                                 for e in engines]))
    names = list(report["engines"])
    # With several dtypes the names are "cython int8" and so on; fastgpt is implied.
    headers = [n if e["kind"] == "transformers" or several else f"fastgpt {n}" for n, e in zip(names, engines)]
    label_w = max(len(label) for label, _ in rows)
    col_w = [max(len(h), *(len(cells[i]) for _, cells in rows)) for i, h in enumerate(headers)]
    lines.append(" " * label_w + "".join(f"  {h:>{w}}" for h, w in zip(headers, col_w)))
    for label, cells in rows:
        lines.append(f"{label:<{label_w}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, col_w)))
    lines.append("")
    if several:
        # Expected identical within a dtype only: each dtype rounds the weights its own way.
        lines.append(f"tokens identical within each dtype: {'yes' if report['tokens_identical'] else 'no'}")
        for dtype, group in report["tokens_by_dtype"].items():
            if group["identical"]:
                text = f"yes ({', '.join(group['engines'])}: the same {s['new_tokens']} tokens in every run)"
            else:
                text = f"no ({group['mismatch']})"
            if "first_difference_vs_first_dtype" in group:
                at = group["first_difference_vs_first_dtype"]
                text += (f"; same tokens as {dtypes[0]}" if at is None else
                         f"; first differs from {dtypes[0]} at new token {at}")
            lines.append(f"  {dtype}: {text}")
    elif report["tokens_identical"]:
        lines.append(f"tokens identical: yes ({', '.join(names)}: the same {s['new_tokens']} tokens in every run)")
    else:
        lines.append(f"tokens identical: no ({report['tokens_mismatch']})")
    if any(e["kind"] == "transformers" for e in engines):
        lines.append("peak RSS: fastgpt's is the process peak after its warm-ups; transformers' is how much "
                     "its model and warm-up raised that peak. Speed ratios: median over paired runs.")
        if several:
            hf = report["engines"]["transformers"]
            src = hf["weights_from"]
            lines.append(f"transformers computes in float32 on the {src} engines' weights"
                         f"{'' if src == 'float32' else ' widened to float32'}; its tokens are compared with theirs.")
    elif several:
        lines.append(f"Speed ratios vs {dtypes[0]}: median over rounds of the per-round ratio, same backend.")
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------
def resolve_backends(name: str) -> list[str]:
    available = available_backends()
    if name in ("all", "auto"):
        return available
    if name not in ENGINE_BACKENDS:
        raise ValueError(f"--backend must be one of all, auto, {', '.join(ENGINE_BACKENDS)}, got {name!r}")
    if name not in available:
        from .kernels import import_error

        raise ValueError(f"--backend {name}: fastgpt's compiled kernels are not built ({import_error()}); "
                         "reinstall with a C compiler (`pip install .`) or use --backend numpy")
    return [name]


def cmd_bench(args) -> int:
    check_writable(args.json)
    backends = resolve_backends(args.backend)
    if args.compare and not transformers_available():
        raise ValueError("--compare transformers needs torch and transformers installed (pip install 'fastgpt[hf]')")
    prompt_lengths = args.prompt_tokens
    sweeps = bool(args.batch) or len(prompt_lengths) > 1
    if sweeps and args.compare:
        raise ValueError("--compare transformers measures one prompt length at batch 1: leave out --batch and give "
                         "one --prompt-tokens")
    if args.batch and len(prompt_lengths) > 1:
        raise ValueError("--batch takes one --prompt-tokens value (the rows' prompt length); sweep prompt lengths "
                         "in a separate run")
    status = StatusLine()
    t0 = time.perf_counter()
    if args.random:
        from .weights import random_weights

        config = RANDOM_CONFIGS[args.random]
        for length in prompt_lengths:  # fail before a long build
            check_lengths(config, length, args.new_tokens, args.repeat)
        status.show(f"building random {args.random} weights (seed {SEED})")
        weights = random_weights(config, SEED)
        source = f"random {args.random}, seed {SEED}"
    else:
        from .loaders.gpt2 import load_pretrained

        status.show(f"loading {args.model}")
        config, weights = load_pretrained(args.model)
        source = str(args.model)
    dtypes = args.dtype
    if dtypes is not None and len(dtypes) == 1:
        # One dtype: converted here, as part of loading, so that the loaded weights are freed.
        status.show(f"quantizing to {dtypes[0]}")
        weights, dtypes = quantize_weights(weights, dtypes[0]), None
    load_seconds = time.perf_counter() - t0
    if sweeps:
        report = run_sweeps(config, weights, backends=backends, threads=args.threads, prompt_lengths=prompt_lengths,
                            batches=args.batch, new_tokens=args.new_tokens, repeat=args.repeat, dtypes=dtypes,
                            kv_dtype=args.kv_dtype, source=source, status=status)
        print(format_sweeps(report))
    else:
        # Several dtypes: run_benchmark converts the loaded weights once per dtype (it refuses to requantize).
        report = run_benchmark(config, weights, backends=backends, threads=args.threads,
                               prompt_tokens=prompt_lengths[0], new_tokens=args.new_tokens, repeat=args.repeat,
                               compare=args.compare, dtypes=dtypes, source=source, load_seconds=load_seconds,
                               status=status, kv_dtype=args.kv_dtype)
        print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


def run_sweeps(config: GPT2Config, weights: GPT2Weights, *, backends, threads: int | None, prompt_lengths: list[int],
               batches: list[int] | None, new_tokens: int, repeat: int, dtypes=None, kv_dtype: str | None = None,
               source: str = "in memory", status: StatusLine | None = None) -> dict:
    """The batched-decode and time-to-first-token sweeps (fastgpt/bench_sweeps.py), on one backend:
    the compiled one if it is among ``backends``."""
    from .threads import default_num_threads

    for length in prompt_lengths:
        check_lengths(config, length, new_tokens, repeat)
    if batches:
        check_lengths(config, prompt_lengths[0], new_tokens, repeat)
    loaded = weights_dtype(weights)
    dtypes = [loaded] if dtypes is None else list(dtypes)
    if loaded != "float32":
        _check_convertible(loaded, dtypes)
    threads = default_num_threads() if threads is None else threads
    backend = "cython" if "cython" in backends else backends[0]
    status = status or StatusLine()
    variants = {d: quantize_weights(weights, d) for d in dtypes}
    bytes_per_step = {d: decode_bytes_per_token(w) for d, w in variants.items()}
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "source": source, "backend": backend, "threads": threads,
              "dtypes": dtypes, "kv_dtype": kv_dtype, "repeat": repeat, "bytes_per_step": bytes_per_step}
    common = dict(repeat=repeat, threads=threads, backend=backend, kv_dtype=kv_dtype, settle_seconds=SETTLE_SECONDS,
                  bytes_per_step=bytes_per_step, status=status)
    try:
        probe = BandwidthProbe(threads)
        if batches:
            report["batch_sweep"] = bench_sweeps.run_batch_sweep(
                config, variants, batches, prompt_tokens=prompt_lengths[0], new_tokens=new_tokens,
                bandwidth_probe=probe, **common)
        if len(prompt_lengths) > 1:
            report["ttft_sweep"] = bench_sweeps.run_ttft_sweep(config, variants, prompt_lengths,
                                                               bandwidth_probe=probe, **common)
        report["bandwidth"] = probe.result()
        probe.release()
    finally:
        status.clear()
    return report


def format_sweeps(report: dict) -> str:
    m = report["machine"]
    kv = report["kv_dtype"] or "the model's default"
    lines = [f"fastgpt bench: {report['source']}, backend {report['backend']}, dtypes {', '.join(report['dtypes'])}, "
             f"KV cache {kv}",
             f"cpu {m['cpu']}, simd {m['simd']}, OpenMP {'on' if m['openmp'] else 'off'}; {report['repeat']} rounds "
             f"after 1 warm-up, cases interleaved",
             f"memory read bandwidth {_spread(report['bandwidth']['gb_per_s'], '.1f')} GB/s "
             f"({report['bandwidth']['method']})", ""]
    if "batch_sweep" in report:
        lines += [bench_sweeps.format_batch(report["batch_sweep"], report["threads"]), ""]
    if "ttft_sweep" in report:
        lines += [bench_sweeps.format_ttft(report["ttft_sweep"], report["threads"]), ""]
    return "\n".join(lines).rstrip()


def _dtype_list(text: str) -> list[str]:
    try:
        return parse_dtypes(text)
    except ValueError as exc:  # argparse prints it after "argument --dtype:" and exits with 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_bench_parser(subparsers):
    """Register ``bench`` on the CLI's subparsers; returns the subparser."""
    p = subparsers.add_parser(
        "bench", help="measure prefill and decode speed against the machine's memory-bandwidth limit",
        description="Measure prefill and decode speed per backend, the machine's memory read bandwidth, and how "
                    "close decode gets to the bandwidth bound; optionally against transformers on the same weights.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", "-m", metavar="DIR", help="a Hugging Face GPT-2 folder or a bundled model name")
    src.add_argument("--random", choices=list(RANDOM_CONFIGS),
                     help=f"a model with these shapes and random weights (seed {SEED}), built in memory")
    p.add_argument("--backend", choices=("all", "auto") + ENGINE_BACKENDS, default="all",
                   help="backends to measure; all/auto = every available one (default: all)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="threads for kernels, BLAS, torch and the bandwidth probe (default: all cores)")
    p.add_argument("--prompt-tokens", type=positive_int_list, default=[128], metavar="P[,P...]",
                   help="prompt length (default: 128); several (e.g. 16,64,128,512) sweep the time to first token "
                        "against its bound")
    p.add_argument("--new-tokens", type=positive_int, default=64, help="tokens to generate, >= 2 (default: 64)")
    p.add_argument("--batch", type=positive_int_list, default=None, metavar="B[,B...]",
                   help="batched decode: aggregate tokens/s and ms per step of B rows decoding together, for each "
                        "B (e.g. 1,4,8,16,32), against its bound")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, default=None,
                   help="hold the KV cache in this dtype (default: float32 with float32 weights, float16 with "
                        "16/8-bit ones)")
    p.add_argument("--repeat", type=positive_int, default=5,
                   help="timed runs per engine after one warm-up (default: 5)")
    p.add_argument("--compare", choices=("transformers",), default=None,
                   help="also run GPT2LMHeadModel.generate on the same weights, interleaved")
    p.add_argument("--dtype", type=_dtype_list, default=None, metavar="D[,D...]",
                   help=f"hold the weight matrices in this dtype ({', '.join(DTYPES)}); several, separated by "
                        "commas, are measured side by side in the same rounds, with ratios to the first "
                        "(default: as loaded)")
    p.add_argument("--json", metavar="FILE", help="also write every figure and the machine's details to FILE")
    p.set_defaults(func=cmd_bench)
    return p
