"""Two (or more) installs of fastgpt side by side, interleaved: batched decode, time to first token
and prefill on a random GPT-2 124M-shaped model, per weight dtype.

For before/after figures of a change whose "before" lacks the newer bench flags: each round runs
one worker process per install (PYTHONPATH set to it, alternating which goes first), each doing
every case once, so that the machine's drifting bandwidth hits both alike. The workers use only
the API both sides have (Model, new_cache, forward); every install runs its own defaults (kernels,
KV cache dtype). Reported: medians over rounds, and the after / before speed as the median of the
per-round ratios.

- batch B: each row a random prompt of --prompt-tokens, prefilled all at once (untimed), then
  --new-tokens - 1 greedy steps of all B rows, timed: ms per step and aggregate tokens/s;
- first token P: a fresh cache, the prompt's forward (last position) and its argmax, timed
  (prefill tokens/s = P / that), then --ttft-steps decode steps, timed: ms per step.

    python bench/ab_installs.py --install before=/tmp/fastgpt-main --install after=. --threads 2 \\
        --dtype float32,bfloat16,int8 --batch 1,4,8,16,32 --first-token 16,64,128,512
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SEED = 0


def worker(args) -> None:
    """One round of every case in this process's install; prints one JSON object."""
    from fastgpt import Model
    from fastgpt.config import PRESETS
    from fastgpt.kernels import _system
    from fastgpt.quant import quantize_weights
    from fastgpt.weights import random_weights

    config = PRESETS["gpt2"]
    base = random_weights(config, SEED)
    buf = np.ones((1 << 30) // 4, np.float32)
    _system.read_sum(buf, args.threads)
    out = {"fastgpt": __import__("fastgpt").__file__, "cases": {}}
    for dtype in args.dtype.split(","):
        model = Model(config, quantize_weights(base, dtype), backend="cython", num_threads=args.threads)
        for B in map(int, args.batch.split(",")) if args.batch else []:
            prompts = np.random.default_rng(SEED).integers(0, config.vocab_size, (B, args.prompt_tokens))
            cache = model.new_cache(batch_size=B, max_len=args.prompt_tokens + args.new_tokens)
            token = np.argmax(model.forward(prompts, cache=cache, last_only=True), axis=-1)[:, None]
            time.sleep(0.3)
            t0 = time.perf_counter()
            for _ in range(args.new_tokens - 1):
                token = np.argmax(model.forward(token, cache=cache, last_only=True), axis=-1)[:, None]
            out["cases"][f"{dtype} batch {B}"] = (time.perf_counter() - t0) / (args.new_tokens - 1)
        for P in map(int, args.first_token.split(",")) if args.first_token else []:
            prompt = np.random.default_rng(SEED).integers(0, config.vocab_size, P)
            cache = model.new_cache(batch_size=1, max_len=P + args.ttft_steps + 1)
            time.sleep(0.3)
            t0 = time.perf_counter()
            token = np.array([int(np.argmax(model.forward(prompt, cache=cache, last_only=True)))])
            t1 = time.perf_counter()
            for _ in range(args.ttft_steps):
                token[0] = int(np.argmax(model.forward(token, cache=cache, last_only=True)))
            out["cases"][f"{dtype} first token {P}"] = t1 - t0
            out["cases"][f"{dtype} step after {P}"] = (time.perf_counter() - t1) / args.ttft_steps
    t0 = time.perf_counter()
    _system.read_sum(buf, args.threads)
    out["bandwidth_gb_per_s"] = buf.nbytes / (time.perf_counter() - t0) / 1e9
    print(json.dumps(out))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--install", action="append", default=[], metavar="NAME=PATH",
                   help="an install to measure (its folder holds the fastgpt package); the first is the baseline")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32,bfloat16,int8")
    p.add_argument("--batch", default="1,4,8,16,32", help="batch sizes (empty: none)")
    p.add_argument("--prompt-tokens", type=int, default=64, help="the batch rows' prompt length")
    p.add_argument("--new-tokens", type=int, default=33, help="tokens per batch row (new-tokens - 1 steps timed)")
    p.add_argument("--first-token", default="16,64,128,512", help="prompt lengths of the first-token cases")
    p.add_argument("--ttft-steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="also write every sample here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if len(args.install) < 2 or any("=" not in item for item in args.install):
        p.error("give two or more --install NAME=PATH")
    installs = dict(item.split("=", 1) for item in args.install)
    passed = ["--threads", str(args.threads), "--dtype", args.dtype, "--batch", args.batch, "--prompt-tokens",
              str(args.prompt_tokens), "--new-tokens", str(args.new_tokens), "--first-token", args.first_token,
              "--ttft-steps", str(args.ttft_steps)]
    samples = {name: [] for name in installs}
    for r in range(args.rounds):
        order = list(installs) if r % 2 == 0 else list(installs)[::-1]
        for name in order:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(installs[name]))
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *passed],
                                  env=env, capture_output=True, text=True, check=True, cwd="/")
            sample = json.loads(proc.stdout.strip().splitlines()[-1])
            if not sample["fastgpt"].startswith(os.path.join(os.path.abspath(installs[name]), "")):
                sys.exit(f"install {name}: the worker imported {sample['fastgpt']}, not the one in {installs[name]}")
            samples[name].append(sample)
            print(f"round {r + 1}/{args.rounds} {name}: {samples[name][-1]['bandwidth_gb_per_s']:.1f} GB/s",
                  file=sys.stderr)
    names = list(installs)
    first = names[0]
    cases = list(samples[first][0]["cases"])
    print(f"{args.threads} threads; medians over {args.rounds} interleaved rounds; speed ratio = median over rounds "
          f"of {first}'s time / the other's")
    bw = {n: statistics.median(s["bandwidth_gb_per_s"] for s in samples[n]) for n in names}
    print("bandwidth GB/s: " + ", ".join(f"{n} {bw[n]:.1f}" for n in names))
    header = f"{'case':<28}" + "".join(f"{n + ' ms':>14}" for n in names) + "".join(
        f"{n + ' speed':>16}" for n in names[1:])
    print(header)
    for case in cases:
        ms = {n: statistics.median(1e3 * s["cases"][case] for s in samples[n]) for n in names}
        ratios = [statistics.median(a["cases"][case] / b["cases"][case] for a, b in zip(samples[first], samples[n]))
                  for n in names[1:]]
        print(f"{case:<28}" + "".join(f"{ms[n]:14.2f}" for n in names) + "".join(f"{x:15.2f}x" for x in ratios))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(samples, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
