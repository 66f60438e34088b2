#!/usr/bin/env python3
"""One-off: write the tiny TensorFlow GPT-2 checkpoint that tests/test_tf_checkpoint.py reads.

Purpose
-------
fastgpt reads OpenAI's original GPT-2 release (``model.ckpt.index`` +
``model.ckpt.data-00000-of-00001``) without TensorFlow (fastgpt/loaders/tf_checkpoint.py).
To test that reader against TensorFlow itself, this script uses TensorFlow once to write a
small random GPT-2 in exactly OpenAI's layout, and records TensorFlow's own view of it:

    <out>/hparams.json, encoder.json, vocab.bpe   OpenAI's file names; a 256-byte + merges BPE
    <out>/checkpoint, model.ckpt.index, model.ckpt.data-00000-of-00001
                                                  tf.compat.v1.train.Saver, the saver OpenAI
                                                  used: names "model/h0/attn/c_attn/w", ...
    <out>/dtypes/misc.ckpt.*                      a few variables of other dtypes and shapes
                                                  (scalar, empty, int, half, bool, double)
    <out>/expected.npz                            what TensorFlow reads back and computes: the
                                                  variable list (names, shapes, dtypes), every
                                                  variable's value via tf.train.load_variable,
                                                  and logits of OpenAI's model.py forward pass
                                                  (written here in TF ops) for a fixed input,
                                                  plus the greedy continuation of that input

Run (from the repo root; TensorFlow is only needed here, never by fastgpt or its tests)::

    pip install tensorflow-cpu      # any 2.x
    python tools/make_tf_checkpoint.py --out tests/data/tf-gpt2-tiny

Non-goals: the model is random (seeded), not trained; no .meta graph is written (OpenAI's
release has one, but nothing reads it).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

HPARAMS = {"n_vocab": 0, "n_ctx": 32, "n_embd": 16, "n_head": 2, "n_layer": 2}  # n_vocab set below

# A few merges over byte symbols ("Ġ" is the space byte), each making a new token.
MERGES = [
    ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"),
    ("Ġ", "s"), ("r", "e"), ("a", "t"), ("l", "l"), ("Ġ", "w"), ("o", "r"), ("e", "n"),
    ("Ġ", "o"), ("Ġ", "b"), ("e", "s"), ("i", "s"), ("Ġw", "or"), ("Ġwor", "l"),
]

PROMPT_IDS = [3, 15, 270, 1, 256, 40, 99, 7]   # fixed input for the expected logits
N_GREEDY = 6


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's byte -> printable character map (as in their encoder.py)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(shifted)) for b in range(256)}


def write_tokenizer(out: Path) -> int:
    # Byte symbols first, in code point order (which is GPT-2's own order), then the merges,
    # then <|endoftext|> last, as in OpenAI's encoder.json.
    symbols = sorted(bytes_to_unicode().values())
    encoder = {s: i for i, s in enumerate(symbols)}
    for a, b in MERGES:
        assert a in encoder and b in encoder and a + b not in encoder, (a, b)
        encoder[a + b] = len(encoder)
    encoder["<|endoftext|>"] = len(encoder)
    (out / "encoder.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    bpe = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES)
    (out / "vocab.bpe").write_text(bpe, encoding="utf-8")
    return len(encoder)


def random_params(hp: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """OpenAI's variable names and shapes (conv1d weights are [1, in, out])."""
    V, P, C, L = hp["n_vocab"], hp["n_ctx"], hp["n_embd"], hp["n_layer"]

    def normal(*shape, std=0.3):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    params = {"model/wte": normal(V, C), "model/wpe": normal(P, C, std=0.1)}
    for i in range(L):
        h = f"model/h{i}"
        params.update({
            f"{h}/ln_1/g": 1 + normal(C, std=0.1), f"{h}/ln_1/b": normal(C, std=0.1),
            f"{h}/attn/c_attn/w": normal(1, C, 3 * C), f"{h}/attn/c_attn/b": normal(3 * C, std=0.1),
            f"{h}/attn/c_proj/w": normal(1, C, C), f"{h}/attn/c_proj/b": normal(C, std=0.1),
            f"{h}/ln_2/g": 1 + normal(C, std=0.1), f"{h}/ln_2/b": normal(C, std=0.1),
            f"{h}/mlp/c_fc/w": normal(1, C, 4 * C), f"{h}/mlp/c_fc/b": normal(4 * C, std=0.1),
            f"{h}/mlp/c_proj/w": normal(1, 4 * C, C), f"{h}/mlp/c_proj/b": normal(C, std=0.1),
        })
    params["model/ln_f/g"] = 1 + normal(C, std=0.1)
    params["model/ln_f/b"] = normal(C, std=0.1)
    return params


def tf_forward(tf, v: dict, hp: dict, ids):
    """Logits [T, V] with OpenAI's model.py arithmetic (norm eps 1e-5, tanh GELU, -1e10 mask)."""
    C, H = hp["n_embd"], hp["n_head"]
    T = len(ids)

    def norm(x, g, b):
        u = tf.reduce_mean(x, axis=-1, keepdims=True)
        s = tf.reduce_mean(tf.square(x - u), axis=-1, keepdims=True)
        return (x - u) * tf.math.rsqrt(s + 1e-5) * g + b

    def conv1d(x, w, b):
        return tf.matmul(x, tf.squeeze(w, 0)) + b

    def gelu(x):
        return 0.5 * x * (1 + tf.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * tf.pow(x, 3))))

    def heads(x):                                               # [T, C] -> [H, T, D]
        return tf.transpose(tf.reshape(x, [T, H, C // H]), [1, 0, 2])

    x = tf.gather(v["model/wte"], ids) + v["model/wpe"][:T]
    mask = tf.constant(np.tril(np.ones((T, T), np.float32)))
    for i in range(hp["n_layer"]):
        h = f"model/h{i}"
        a = conv1d(norm(x, v[f"{h}/ln_1/g"], v[f"{h}/ln_1/b"]), v[f"{h}/attn/c_attn/w"], v[f"{h}/attn/c_attn/b"])
        q, k, val = (heads(t) for t in tf.split(a, 3, axis=-1))
        w = tf.matmul(q, k, transpose_b=True) * tf.math.rsqrt(float(C // H))
        w = tf.nn.softmax(w * mask - 1e10 * (1 - mask), axis=-1)
        o = tf.reshape(tf.transpose(tf.matmul(w, val), [1, 0, 2]), [T, C])
        x = x + conv1d(o, v[f"{h}/attn/c_proj/w"], v[f"{h}/attn/c_proj/b"])
        m = gelu(conv1d(norm(x, v[f"{h}/ln_2/g"], v[f"{h}/ln_2/b"]), v[f"{h}/mlp/c_fc/w"], v[f"{h}/mlp/c_fc/b"]))
        x = x + conv1d(m, v[f"{h}/mlp/c_proj/w"], v[f"{h}/mlp/c_proj/b"])
    x = norm(x, v["model/ln_f/g"], v["model/ln_f/b"])
    return tf.matmul(x, v["model/wte"], transpose_b=True)


def save_v1(tf, folder: Path, prefix: str, values: dict[str, np.ndarray]) -> None:
    """Save with tf.compat.v1.train.Saver: variable "a/b/c" is stored under key "a/b/c"."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in values.items()]
        saver = tf.compat.v1.train.Saver(variables, save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(folder / prefix), write_meta_graph=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/data/tf-gpt2-tiny")
    ap.add_argument("--seed", type=int, default=1237)  # a seed whose greedy run varies
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    hp = dict(HPARAMS, n_vocab=write_tokenizer(out))
    (out / "hparams.json").write_text(json.dumps(hp, indent=2) + "\n", encoding="utf-8")

    params = random_params(hp, rng)
    save_v1(tf, out, "model.ckpt", params)

    misc = {
        "scalar_f32": np.float32(2.5),
        "empty_f32": np.zeros((0, 3), np.float32),
        "global_step": np.int64(123456789012),
        "counts_i32": np.arange(-3, 4, dtype=np.int32).reshape(7, 1),
        "half": (rng.standard_normal((2, 3))).astype(np.float16),
        "double": rng.standard_normal(5),
        "flags": np.array([True, False, True]),
        "bytes_u8": np.arange(250, 256, dtype=np.uint8),
    }
    (out / "dtypes").mkdir(exist_ok=True)
    save_v1(tf, out / "dtypes", "misc.ckpt", misc)

    # TensorFlow's own view of what it wrote: the variable list and every value.
    expected = {}
    for folder, prefix in ((out, "model.ckpt"), (out / "dtypes", "misc.ckpt")):
        ckpt = str(folder / prefix)
        tag = "model" if prefix == "model.ckpt" else "misc"
        listed = tf.train.list_variables(ckpt)
        expected[f"{tag}_names"] = np.array([n for n, _ in listed])
        expected[f"{tag}_shapes"] = np.array([json.dumps(list(s)) for _, s in listed])
        reader = tf.train.load_checkpoint(ckpt)
        dtypes = reader.get_variable_to_dtype_map()
        expected[f"{tag}_dtypes"] = np.array([dtypes[n].name for n, _ in listed])
        for name, _ in listed:
            expected[f"value:{name}"] = tf.train.load_variable(ckpt, name)

    tf_vars = {n: tf.constant(expected[f"value:{n}"]) for n in params}
    expected["prompt_ids"] = np.array(PROMPT_IDS, np.int64)
    expected["logits"] = tf_forward(tf, tf_vars, hp, PROMPT_IDS).numpy()
    ids = list(PROMPT_IDS)
    for _ in range(N_GREEDY):                       # recompute-everything greedy, as picoGPT does
        ids.append(int(np.argmax(tf_forward(tf, tf_vars, hp, ids).numpy()[-1])))
    expected["greedy_ids"] = np.array(ids[len(PROMPT_IDS):], np.int64)
    expected["tf_version"] = np.array(tf.__version__)
    np.savez_compressed(out / "expected.npz", **expected)

    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1024:.0f} KB), TensorFlow {tf.__version__}")
    print("greedy continuation:", expected["greedy_ids"].tolist())


if __name__ == "__main__":
    main()
