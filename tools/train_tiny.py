#!/usr/bin/env python3
"""Reproducibly train the tiny GPT-2 ("kjv-tiny") that fastgpt ships as package data.

Purpose
-------
fastgpt needs a real, standard GPT-2 checkpoint small enough to ship inside the
package (<= 8 MB), so tests and examples can load genuine Hugging Face files
without network access. This script builds one from scratch, from a fixed seed:

1. dumps the King James Bible with Debian's ``bible`` program (packages
   ``bible-kjv`` + ``bible-kjv-text``), strips the verse labels and groups the
   verses by book;
2. holds out the last 5% of the 66 books *by count* (ceil(0.05 * 66) = 4 books:
   2 John, 3 John, Jude, Revelation) as validation;
3. trains a byte-level BPE vocabulary in GPT-2's exact file format
   (``vocab.json`` + ``merges.txt``) with the ``tokenizers`` package;
4. trains a standard ``transformers.GPT2LMHeadModel`` on random windows of the
   training stream (books separated by ``<|endoftext|>``);
5. writes a Hugging Face folder (config.json, model.safetensors, vocab.json,
   merges.txt, valid.txt, README.md) and checks that it loads back.

Run (from the repo root; dev-only dependencies: torch, tokenizers, transformers)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python tools/train_tiny.py --out fastgpt/models/kjv-tiny

Non-goals: this is not a general training framework (no GPU, no mixed
precision, no checkpoint/resume, no distributed training), and the model is not
meant to be *good* -- only recognisably KJV-flavoured and fully standard, so
that fastgpt's loaders and numerics can be checked against transformers on it.
Bit-for-bit reproducibility is only expected on the same torch version and
thread count (float summation order depends on both).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

EOT = "<|endoftext|>"
# `bible -f` switches pretty-printing OFF, which gives one verse per line as
# "<Book><chapter>:<verse> <text>", e.g. "Ge1:1 In the beginning ...",
# "1Sm3:4 ...", "SSol2:1 ...". Any line not of that form (a prompt, a banner)
# is not verse text and is dropped.
VERSE_RE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")
N_BOOKS = 66
N_VERSES = 31102  # verses in the KJV (Protestant canon); a cheap integrity check


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("fastgpt/models/kjv-tiny"), help="output folder")
    p.add_argument("--log", type=Path, default=Path("tools/train_tiny.log"),
                   help="training log (kept out of the package folder)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (the training budget)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per step")
    p.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate")
    p.add_argument("--min-lr-frac", type=float, default=0.1, help="final LR as a fraction of the peak")
    p.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=250, help="steps between validation evaluations")
    p.add_argument("--vocab-size", type=int, default=4096, help="including <|endoftext|>")
    p.add_argument("--n-positions", type=int, default=256)
    p.add_argument("--n-embd", type=int, default=160)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--max-bytes", type=int, default=8_000_000,
                   help="refuse to write a folder larger than this (decimal MB, stricter than MiB)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="safety net: stop training early after this many minutes "
                        "(breaks reproducibility if it triggers; off by default)")
    return p.parse_args(argv)


class Log:
    """Print to stdout and append to the log file, flushed, so a background run can be polled."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w", encoding="utf-8")

    def __call__(self, *parts):
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()


# --------------------------------------------------------------------------- data


def dump_bible() -> list[tuple[str, str]]:
    """Return [(book_label, book_text)] for the 66 books in canon order.

    Book text is one verse per line (labels removed), chapters separated by a
    blank line so the model sees the chapter structure without the numbers.
    """
    if shutil.which("bible") is None:
        sys.exit("`bible` not found: apt-get install -y bible-kjv bible-kjv-text")
    # stdin=DEVNULL: the program is interactive when given no reference; with a
    # reference and no terminal it prints and exits, never prompting.
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, check=True).stdout
    books: list[tuple[str, list[str]]] = []
    last_chapter = None
    n_verses = 0
    for line in out.splitlines():
        m = VERSE_RE.match(line)
        if not m:
            continue
        book, chapter, _verse, text = m.groups()
        if not books or books[-1][0] != book:
            books.append((book, []))
            last_chapter = None
        lines = books[-1][1]
        if last_chapter is not None and chapter != last_chapter:
            lines.append("")  # blank line between chapters
        last_chapter = chapter
        lines.append(text.strip())
        n_verses += 1
    if len(books) != N_BOOKS or n_verses != N_VERSES:
        sys.exit(f"unexpected `bible` output: {len(books)} books, {n_verses} verses")
    return [(name, "\n".join(lines) + "\n") for name, lines in books]


def train_tokenizer(texts: list[str], vocab_size: int, out: Path):
    """Byte-level BPE in GPT-2's format; <|endoftext|> takes the LAST id, as in GPT-2.

    The BPE model is trained to vocab_size - 1 entries (256 byte symbols +
    merges) and the special token is appended afterwards, so vocab.json looks
    like GPT-2's (special token at the end) and merges.txt starts with
    "#version: 0.2".
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # add_prefix_space=False, use_regex=True: GPT-2's own pre-tokenisation.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        min_frequency=2,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, so any text encodes
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    files = tok.model.save(str(out))  # writes vocab.json + merges.txt
    vocab_path = out / "vocab.json"
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    if len(vocab) != vocab_size - 1:
        sys.exit(f"BPE produced {len(vocab)} tokens, wanted {vocab_size - 1}")
    vocab[EOT] = vocab_size - 1
    # json.dumps defaults ({"!": 0, ...} with \u0120-style escapes) reproduce the
    # byte format of OpenAI's GPT-2 encoder.json / HF's gpt2 vocab.json.
    vocab_path.write_text(json.dumps(vocab), encoding="utf-8")
    merges = (out / "merges.txt").read_text(encoding="utf-8")
    assert merges.startswith("#version: 0.2\n"), merges[:40]
    assert len(files) == 2
    return load_fast_tokenizer(out)


def load_fast_tokenizer(folder: Path):
    """Load the folder's vocab.json/merges.txt the way a user would."""
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(folder))


def encode_stream(tok, books: list[str], eot_id: int) -> list[int]:
    """Encode books one by one and join with <|endoftext|>.

    Identical to encoding the whole "<|endoftext|>"-joined string with the HF
    tokenizer (special tokens are split out before pre-tokenisation), but it
    doesn't depend on special-token handling of whoever re-encodes valid.txt.
    """
    ids: list[int] = []
    for i, text in enumerate(books):
        if i:
            ids.append(eot_id)
        ids.extend(tok(text, add_special_tokens=False)["input_ids"])
    return ids


# --------------------------------------------------------------------------- model


def lr_at(step: int, args) -> float:
    """Linear warmup, then cosine decay from lr to lr * min_lr_frac."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def eval_windows(model, ids, n_positions: int, stride: int | None = None):
    """Mean next-token loss over the whole token stream `ids`.

    stride=None: non-overlapping windows. Inputs ids[s:s+n], targets ids[s+1:s+n+1]
    for s = 0, n, 2n, ...; every token but the first is predicted exactly once,
    with 1..n tokens of context (restarting at each window).
    stride=k < n: sliding windows; each window of n tokens only scores its last k
    predictions (the first window scores all), so every prediction after the first
    window sees at least n - k tokens of context.
    Returns (mean loss in nats, number of predicted tokens).
    """
    import torch
    import torch.nn.functional as F

    n = n_positions
    data = torch.tensor(ids, dtype=torch.long)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        if stride is None:
            starts = range(0, len(ids) - 1, n)
        else:
            starts = [0] + list(range(stride, max(1, len(ids) - n), stride))
            # make sure the tail is covered
            if starts[-1] + n < len(ids) - 1:
                starts.append(len(ids) - 1 - n)
        scored_until = 0  # targets with index < scored_until already counted
        for s in starts:
            x = data[s:s + n]
            y = data[s + 1:s + n + 1]
            x = x[: len(y)]
            logits = model(x[None]).logits[0]
            losses = F.cross_entropy(logits, y, reduction="none")
            first_new = max(0, scored_until - (s + 1))  # skip targets scored by an earlier window
            total += losses[first_new:].sum().item()
            count += len(y) - first_new
            scored_until = s + 1 + len(y)
    model.train()
    assert count == len(ids) - 1, (count, len(ids))
    return total / count, count


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


# --------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    # Thread count must be fixed before torch spins up its pools; also part of
    # reproducibility (reduction order depends on it).
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    log = Log(args.log)
    command = " ".join(
        [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")]
        + ["python"] + [shlex.quote(a) for a in sys.argv]
    )
    log("command:", command)
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "generation_config.json", "vocab.json",
                 "merges.txt", "valid.txt", "README.md", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        (out / name).unlink(missing_ok=True)

    # ---- data and split
    books = dump_bible()
    n_valid_books = math.ceil(0.05 * len(books))  # last 5% of books by count -> 4
    train_books, valid_books = books[:-n_valid_books], books[-n_valid_books:]
    train_texts = [t for _, t in train_books]
    valid_texts = [t for _, t in valid_books]
    log(f"books: {len(train_books)} train ({sum(map(len, train_texts))} bytes), "
        f"{len(valid_books)} valid ({sum(map(len, valid_texts))} bytes): "
        + ", ".join(n for n, _ in valid_books))
    # valid.txt is the validation stream exactly as scored: books joined by the
    # literal "<|endoftext|>" (HF tokenizers turn it into the special id).
    (out / "valid.txt").write_text(EOT.join(valid_texts), encoding="utf-8")

    # ---- tokenizer (trained on the training books only)
    t0 = time.time()
    tok = train_tokenizer(train_texts, args.vocab_size, out)
    eot_id = tok.convert_tokens_to_ids(EOT)
    assert eot_id == args.vocab_size - 1 and len(tok) == args.vocab_size, (eot_id, len(tok))
    train_ids = encode_stream(tok, train_texts, eot_id)
    valid_ids = encode_stream(tok, valid_texts, eot_id)
    # the folder's tokenizer must read valid.txt back to the same ids
    assert tok((out / "valid.txt").read_text(encoding="utf-8"))["input_ids"] == valid_ids
    log(f"tokenizer: {len(tok)} tokens, <|endoftext|> = {eot_id}; train {len(train_ids)} tokens "
        f"({sum(map(len, train_texts)) / len(train_ids):.2f} bytes/token), valid {len(valid_ids)} tokens "
        f"[{time.time() - t0:.1f}s]")

    # ---- model: a completely standard GPT-2, only small
    config = GPT2Config(
        vocab_size=args.vocab_size,
        n_positions=args.n_positions,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        activation_function="gelu_new",
        # ~3.5 epochs over 1M tokens with 1.9M parameters barely overfits; no dropout
        # keeps training simple and the loss curve honest.
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())  # tied head counted once
    log(f"model: n_embd={args.n_embd} n_layer={args.n_layer} n_head={args.n_head} "
        f"n_positions={args.n_positions} vocab={args.vocab_size}: {n_params:,} parameters "
        f"= {4 * n_params:,} bytes float32")
    extra = sum((out / f).stat().st_size for f in ("vocab.json", "merges.txt", "valid.txt"))
    if 4 * n_params + extra + 20_000 > args.max_bytes:  # 20 KB: config, header, README
        sys.exit(f"model too big for the {args.max_bytes}-byte budget")

    # Weight decay on matrices only (embeddings included, as nanoGPT does), not on
    # biases or LayerNorm gains, which decay would only pull toward a bad prior.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )

    data = torch.tensor(train_ids, dtype=torch.long)
    T, B = args.n_positions, args.batch_size
    max_start = len(train_ids) - T - 1

    def batch():
        starts = rng.integers(0, max_start + 1, size=B)
        x = torch.stack([data[s:s + T] for s in starts])
        y = torch.stack([data[s + 1:s + T + 1] for s in starts])
        return x, y

    log(f"training: {args.steps} steps x {B} windows x {T} tokens = {args.steps * B * T:,} tokens "
        f"({args.steps * B * T / len(train_ids):.2f} epochs), AdamW lr {args.lr} warmup {args.warmup} "
        f"cosine -> {args.lr * args.min_lr_frac:g}, wd {args.weight_decay}, seed {args.seed}")
    log(f"{'step':>6} {'lr':>9} {'train(ema)':>10} {'valid':>7} {'elapsed':>8}")
    model.train()
    ema = None
    t_start = time.time()
    stopped_early = None
    step = 0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        x, y = batch()
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        done = step + 1
        elapsed = time.time() - t_start
        if done % args.eval_every == 0 or done == args.steps or done in (1, 10, 50):
            vl = ""
            if done % args.eval_every == 0 or done == args.steps:
                vl = f"{eval_windows(model, valid_ids, T)[0]:.4f}"
            log(f"{done:>6} {lr_at(step, args):>9.2e} {ema:>10.4f} {vl:>7} {elapsed:>7.0f}s")
        if args.max_minutes is not None and elapsed > 60 * args.max_minutes:
            stopped_early = done
            log(f"!! stopped early at step {done}: --max-minutes {args.max_minutes} exceeded")
            break
    train_seconds = time.time() - t_start
    steps_done = stopped_early or args.steps
    log(f"training took {train_seconds:.0f}s ({train_seconds / steps_done * 1000:.0f} ms/step)")

    # ---- final numbers
    valid_loss, valid_n = eval_windows(model, valid_ids, T)
    valid_loss_slide, _ = eval_windows(model, valid_ids, T, stride=T // 2)
    # Train loss measured the same way as validation, on a fixed, seeded slice of
    # the training stream as large as the validation text (the EMA above lags
    # and mixes weights from several steps).
    s0 = int(np.random.default_rng(args.seed + 1).integers(0, len(train_ids) - len(valid_ids)))
    train_loss, _ = eval_windows(model, train_ids[s0:s0 + len(valid_ids)], T)
    log(f"final: train loss {train_loss:.4f} (EMA {ema:.4f}), valid loss {valid_loss:.4f} "
        f"ppl {math.exp(valid_loss):.2f} (non-overlapping {T}-token windows, {valid_n} predictions); "
        f"sliding stride {T // 2}: loss {valid_loss_slide:.4f} ppl {math.exp(valid_loss_slide):.2f}")

    # ---- save: standard HF safetensors (the tied lm_head is not stored)
    save_kwargs = {}
    import inspect
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kwargs["safe_serialization"] = True  # transformers 4.x; 5.x always writes safetensors
    model.save_pretrained(str(out), **save_kwargs)
    # generation_config.json only repeats bos/eos; keep the folder to the files fastgpt ships.
    (out / "generation_config.json").unlink(missing_ok=True)
    # safetensors creates the file 0600; package data must be readable by every user.
    os.chmod(out / "model.safetensors", 0o644)

    # ---- sanity: load the folder back exactly like a user would
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert not any(k.startswith("lm_head") for k in keys), "tied lm_head should not be stored"
    log(f"model.safetensors: {len(keys)} tensors, dtypes {sorted(dtypes)}")
    model2 = GPT2LMHeadModel.from_pretrained(str(out))
    model2.eval()
    tok2 = GPT2TokenizerFast.from_pretrained(str(out))
    assert tok2(EOT)["input_ids"] == [eot_id]
    model.eval()
    with torch.no_grad():
        probe = torch.tensor([valid_ids[:T]])
        diff = (model(probe).logits - model2(probe).logits).abs().max().item()
    assert diff == 0.0, f"reloaded model differs: {diff}"
    reload_valid, _ = eval_windows(model2, tok2((out / "valid.txt").read_text(encoding="utf-8"))["input_ids"], T)
    assert abs(reload_valid - valid_loss) < 1e-5, (reload_valid, valid_loss)

    prompt = "And God said"
    enc = tok2(prompt, return_tensors="pt")
    greedy = model2.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=eot_id)
    samples = [("greedy", tok2.decode(greedy[0]))]
    for i in range(3):
        torch.manual_seed(args.seed + i)
        s = model2.generate(**enc, max_new_tokens=40, do_sample=True, temperature=0.8, top_k=40,
                            pad_token_id=eot_id)
        samples.append((f"sample seed={args.seed + i}", tok2.decode(s[0])))
    for name, text in samples:
        log(f"--- {name}:\n{text}")

    # ---- README with the actual numbers of this run
    write_readme(out, args, command, config, n_params, train_books, valid_books, train_ids, valid_ids,
                 len(tok), eot_id, train_loss, ema, valid_loss, valid_loss_slide, valid_n,
                 train_seconds, steps_done, stopped_early, samples, torch.__version__,
                 transformers.__version__)
    total = folder_bytes(out)
    log(f"folder {out}: {total:,} bytes: "
        + ", ".join(f"{p.name} {p.stat().st_size:,}" for p in sorted(out.iterdir())))
    if total > args.max_bytes:
        sys.exit(f"folder is {total} bytes, over the {args.max_bytes}-byte budget")


def write_readme(out, args, command, config, n_params, train_books, valid_books, train_ids, valid_ids,
                 vocab_len, eot_id, train_loss, train_ema, valid_loss, valid_loss_slide, valid_n,
                 train_seconds, steps_done, stopped_early, samples, torch_version, tf_version):
    T = args.n_positions
    weights_bytes = 4 * n_params
    n_train_bytes = sum(len(t) for _, t in train_books)
    n_valid_bytes = sum(len(t) for _, t in valid_books)
    sample_md = "\n\n".join(f"*{name}*:\n\n```text\n{text}\n```" for name, text in samples)
    early = (f"\n\n**Note:** training was stopped early at step {stopped_early} by `--max-minutes`; "
             "the learning-rate schedule did not complete." if stopped_early else "")
    text = f"""# kjv-tiny

A tiny, standard GPT-2 language model trained from scratch on the King James
Bible. It is shipped with fastgpt as test/demo data: real Hugging Face files
(`config.json`, `model.safetensors`, `vocab.json`, `merges.txt`) that load with
`transformers.GPT2LMHeadModel.from_pretrained` and `GPT2TokenizerFast` /
`GPT2Tokenizer`, small enough to ship inside the package. It is not a useful
language model beyond that.

Produced by `tools/train_tiny.py` (in the fastgpt repository); every number
below comes from the run that wrote this folder.

## Data

- Text: the Authorized (King James) Version, public domain, from Debian's
  `bible-kjv-text` package (read with the `bible` program from `bible-kjv`,
  version 4.38), dumped with `bible -f "Gen1:1-Rev22:21"`. `-f` turns the
  program's pretty-printing *off*, which yields one verse per line as
  `Ge1:1 In the beginning ...`; the `Book<chapter>:<verse>` label is dropped.
  66 books, 31,102 verses, pure ASCII.
- Each book is its verses one per line, with a blank line between chapters.
  Books are joined with `<|endoftext|>` to form the token stream.
- Split: the last 5% of the 66 books **by count** (ceil(3.3) = {len(valid_books)} books:
  {", ".join(n for n, _ in valid_books)}) are held out for validation; the other
  {len(train_books)} books train both the tokenizer and the model.
  Train: {n_train_bytes:,} bytes, {len(train_ids):,} tokens. Validation: {n_valid_bytes:,} bytes,
  {len(valid_ids):,} tokens.
- `valid.txt` is the validation text exactly as scored: the 4 books joined by the
  literal string `<|endoftext|>` (which the HF tokenizers map to id {eot_id}).

## Tokenizer

Byte-level BPE trained with the `tokenizers` package, GPT-2's byte-to-unicode
mapping and pre-tokenisation regex, `add_prefix_space=False`, min frequency 2.
{vocab_len} tokens: 256 byte symbols, {vocab_len - 257} merges, and `<|endoftext|>`
as the last id ({eot_id}), as in GPT-2. `vocab.json` and `merges.txt` have GPT-2's
format (`merges.txt` starts with `#version: 0.2`).

## Architecture

Standard `GPT2LMHeadModel` (learned positions, pre-LayerNorm, tied input/output
embedding, `gelu_new`, no dropout): n_embd={config.n_embd}, n_layer={config.n_layer},
n_head={config.n_head}, n_inner={4 * config.n_embd}, n_positions={config.n_positions},
vocab_size={config.vocab_size}, bos/eos = {eot_id}.
**{n_params:,} parameters** (tied head counted once), float32:
{weights_bytes:,} bytes of weights ({weights_bytes / 2**20:.2f} MiB). `model.safetensors`
is written by `save_pretrained` and does not store the tied `lm_head.weight`.

## Training

```sh
apt-get install -y bible-kjv bible-kjv-text
{command}
```

- Seed {args.seed} (`torch.manual_seed` for init, `numpy.random.default_rng` for batches);
  {args.threads} CPU thread; torch {torch_version}, transformers {tf_version}.
- {steps_done:,} AdamW steps (betas 0.9/0.95, weight decay {args.weight_decay} on matrices,
  grad-norm clip 1.0) of {args.batch_size} random {T}-token windows
  ({steps_done * args.batch_size * T:,} tokens, {steps_done * args.batch_size * T / len(train_ids):.1f} epochs);
  learning rate: {args.warmup} linear warmup steps to {args.lr}, cosine decay to
  {args.lr * args.min_lr_frac:g}.
- Training time: {train_seconds / 60:.1f} minutes ({train_seconds:.0f} s) on one thread.{early}

## Results

| | loss (nats/token) | perplexity |
| --- | --- | --- |
| train (EMA of batch losses, last steps) | {train_ema:.4f} | {math.exp(train_ema):.2f} |
| train (a {len(valid_ids):,}-token slice of the training stream, windows as below) | {train_loss:.4f} | {math.exp(train_loss):.2f} |
| **validation, non-overlapping {T}-token windows** | **{valid_loss:.4f}** | **{math.exp(valid_loss):.2f}** |
| validation, sliding {T}-token windows, stride {T // 2} | {valid_loss_slide:.4f} | {math.exp(valid_loss_slide):.2f} |

Validation perplexity is over the whole validation text ({valid_n:,} predicted
tokens: every token but the first). Non-overlapping windows: the stream is cut
into consecutive {T}-token windows and each token is predicted from the context
inside its own window only (1 to {T} tokens). The sliding-window figure gives every
prediction after the first window at least {T - T // 2} tokens of context.
Perplexities are per BPE token of this tokenizer, so they are not comparable
with other vocabularies.

## Samples

Prompt `And God said`, 40 new tokens, from the saved folder with
`GPT2LMHeadModel.generate` (sampling: temperature 0.8, top-k 40, `torch.manual_seed` as shown):

{sample_md}

## Provenance

The KJV text is in the public domain (see `/usr/share/doc/bible-kjv-text/copyright`
on Debian); the weights and tokenizer files here are derived only from it and
from the seed above.
"""
    (out / "README.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
