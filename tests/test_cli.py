"""Tests for the ``fastgpt`` command, run in-process through ``main([...])``.

The checkpoint is a tiny random GPT-2 with the real 50257-token vocabulary, written with
fastgpt's own safetensors writer under Hugging Face names, next to the bundled GPT-2
tokenizer files, so that any English prompt encodes to ids the model accepts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import fastgpt
from oracle import BACKENDS
from fastgpt import GPT2Config
from fastgpt.cli import main

TINY = GPT2Config(vocab_size=50257, n_positions=64, n_embd=16, n_layer=1, n_head=2)
SAMPLING = ["--do-sample", "--temperature", "0.9", "--top-k", "50", "--top-p", "0.95",
            "--repetition-penalty", "1.1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from fastgpt.loaders import write_safetensors
    from fastgpt.loaders.gpt2 import _hf_shapes

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    (folder / "config.json").write_text(json.dumps(TINY.to_dict()))
    rng = np.random.default_rng(0)
    # Weights large enough that the next-token distribution is far from uniform.
    tensors = {name: (0.3 * rng.standard_normal(shape)).astype(np.float32)
               for name, shape in _hf_shapes(TINY).items()}
    write_safetensors(folder / "model.safetensors", tensors)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(Path(fastgpt.__file__).parent / "data" / "gpt2" / name, folder / name)
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_streams_greedy_text(checkpoint, capsys, backend):
    from fastgpt import Model, Tokenizer
    from fastgpt.generate import Generator

    code, out, err = run(capsys, "generate", "--model", checkpoint, "--backend", backend, "-n", 8, "Hello world")
    assert code == 0 and err == ""
    gen = Generator(Model.from_pretrained(checkpoint, backend=backend), Tokenizer.from_pretrained(checkpoint))
    assert out == gen.generate("Hello world", max_new_tokens=8) + "\n"
    code, echoed, _ = run(capsys, "generate", "--model", checkpoint, "--backend", backend, "-n", 8,
                          "--echo", "Hello world")
    assert echoed == "Hello world" + out


def test_sampling_with_a_seed_is_reproducible(checkpoint, capsys):
    args = ["generate", "--model", checkpoint, "-n", 12, *SAMPLING]
    first = run(capsys, *args, "--seed", 1, "Once upon a time")
    second = run(capsys, *args, "--seed", 1, "Once upon a time")
    other = run(capsys, *args, "--seed", 2, "Once upon a time")
    print(first[1], other[1], sep="")
    assert first[0] == 0 and first == second
    assert other[1] != first[1]


def test_batch_of_three_prompts_prints_one_block_each(checkpoint, capsys):
    prompts = ["Hi", "The quick brown fox jumps over", "Once upon a time"]
    code, out, err = run(capsys, "generate", "--model", checkpoint, "-n", 6, *prompts)
    assert code == 0 and err == ""
    blocks = out.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["--- [1] ---", "--- [2] ---", "--- [3] ---"]
    for prompt, block in zip(prompts, blocks):
        _, alone, _ = run(capsys, "generate", "--model", checkpoint, "-n", 6, prompt)
        assert block.split("\n", 1)[1].rstrip("\n") == alone.rstrip("\n")


def test_num_return_sequences_labels(checkpoint, capsys):
    code, out, _ = run(capsys, "generate", "--model", checkpoint, "-n", 4, *SAMPLING, "--seed", 0,
                       "--num-return-sequences", 2, "Hi", "Yes")
    assert code == 0
    headers = [line for line in out.splitlines() if line.startswith("--- [")]
    assert headers == ["--- [1.1] ---", "--- [1.2] ---", "--- [2.1] ---", "--- [2.2] ---"]


def test_stop_logit_bias_and_eos_flags(checkpoint, capsys):
    from fastgpt import Tokenizer

    tok = Tokenizer.from_pretrained(checkpoint)
    comma = tok.encode(",")[0]
    # Forcing "," every step: 6 commas; stopping at ",,": the text ends before the first one.
    code, out, _ = run(capsys, "generate", "--model", checkpoint, "-n", 6, "--logit-bias", f"{comma}=100", "Hi")
    assert (code, out) == (0, ",,,,,,\n")
    code, out, _ = run(capsys, "generate", "--model", checkpoint, "-n", 6, "--logit-bias", f"{comma}=100",
                       "--stop", ",,", "--echo", "Hi")
    assert (code, out) == (0, "Hi\n")
    code, out, _ = run(capsys, "generate", "--model", checkpoint, "-n", 6, "--logit-bias", f"{comma}=100",
                       "--eos-token-id", comma, "Hi")
    assert (code, out) == (0, "\n")
    newline = tok.encode("\n")[0]
    code, out, _ = run(capsys, "generate", "--model", checkpoint, "-n", 3, "--logit-bias", f"{newline}=100",
                       "--stop", "x\\n", "Hi")                  # typed as x\n in a shell
    assert (code, out) == (0, "\n\n\n\n")                       # never matched: 3 newlines
    code, out, _ = run(capsys, "generate", "--model", checkpoint, "-n", 3, "--logit-bias", f"{newline}=100",
                       "--stop", "\\n", "Hi")
    assert (code, out) == (0, "\n")                              # "\\n" means a newline


def test_truncate_left_notes_the_drop(checkpoint, capsys):
    long_prompt = " ".join(["word"] * 70)                        # > n_positions = 64 tokens
    code, out, err = run(capsys, "generate", "--model", checkpoint, "-n", 4, long_prompt)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "n_positions=64" in err and "truncate" in err
    code, out, err = run(capsys, "generate", "--model", checkpoint, "-n", 4, "--truncate", "left", long_prompt)
    assert code == 0 and out.endswith("\n")
    assert err.count("\n") == 1 and "dropped its first 10 tokens" in err


@pytest.mark.parametrize("argv,message", [
    (["--model", "/nonexistent/model/dir", "Hi"], "no such folder"),
    (["--top-p", "2", "Hi"], "`top_p` must be in (0.0, 1.0]"),
    (["--do-sample", "--temperature", "0", "Hi"], "`temperature`"),
    (["--temperature", "nan", "Hi"], "`temperature`"),
    (["--stop", "", "Hi"], "`stop`"),
    (["--num-return-sequences", "2", "Hi"], "needs do_sample=True"),
    (["--ignore-eos", "--eos-token-id", "3", "Hi"], "contradict"),
    (["--eos-token-id", "60000", "Hi"], "`eos_token_id`"),
    (["--model", "", "Hi"], "--model is empty"),                    # an unset "$MODEL"
])
def test_user_errors_are_one_line_exit_2(checkpoint, capsys, argv, message):
    if "--model" not in argv:
        argv = ["--model", str(checkpoint), *argv]
    code, out, err = run(capsys, "generate", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fastgpt generate: error: ")
    assert message in err and "Traceback" not in err


def test_malformed_flag_values_are_argparse_errors(checkpoint, capsys):
    for argv in (["--logit-bias", "50256"], ["--top-k", "-3"], ["--truncate", "right"]):
        with pytest.raises(SystemExit) as info:
            main(["generate", "--model", str(checkpoint), *argv, "Hi"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "error: argument" in err and "Traceback" not in err


def test_flags_checked_before_any_work(checkpoint, capsys, tmp_path):
    for argv in (["serve", "--port", "70000"], ["generate", "--threads", "1000"], ["bench-serve", "--url", "notaurl"],
                 ["bench-serve", "--url", "ftp://127.0.0.1:1"], ["bench-serve", "--timeout", "0"],
                 ["bench-serve", "--temperature", "-1"], ["bench-serve", "--temperature", "nan"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
        err = capsys.readouterr().err
        assert f"argument {argv[1]}" in err and "Traceback" not in err, err
    # an unwritable --json fails at once, not after the run
    code, out, err = run(capsys, "bench", "--model", checkpoint, "--json", tmp_path / "missing" / "x.json")
    assert code == 2 and "cannot write" in err and "x.json" in err and out == ""
    # nothing listens on a port just freed: one line naming the URL
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = run(capsys, "bench-serve", "--url", f"http://127.0.0.1:{port}")
    assert code == 2 and f"cannot reach http://127.0.0.1:{port}" in err and err.count("\n") == 1


def test_sampling_flags_without_do_sample_warn_in_one_line(checkpoint, capsys):
    code, out, err = run(capsys, "generate", "--model", checkpoint, "-n", 3, "--temperature", "0.5", "Hi")
    _, greedy, _ = run(capsys, "generate", "--model", checkpoint, "-n", 3, "Hi")
    assert code == 0 and out == greedy
    assert err.count("\n") == 1 and err.startswith("fastgpt generate: warning: ")
    assert "temperature=0.5 is ignored" in err


@pytest.mark.parametrize("flags,warning", [
    (["--min-new-tokens", 5, "-n", 3], "--min-new-tokens 5 is more than --max-new-tokens 3"),
    (["--seed", 7, "-n", 3], "--seed is ignored without --do-sample"),
])
def test_contradictory_length_or_seed_flags_warn_in_one_line(checkpoint, capsys, flags, warning):
    code, out, err = run(capsys, "generate", "--model", checkpoint, *flags, "Hi")
    _, greedy, quiet = run(capsys, "generate", "--model", checkpoint, "-n", 3, "Hi")
    assert code == 0 and quiet == "" and (out == greedy or "--seed" not in flags)   # min_new_tokens may ban EOS
    assert err.count("\n") == 1 and err.startswith("fastgpt generate: warning: ") and warning in err
    _, _, sampled = run(capsys, "generate", "--model", checkpoint, "-n", 3, "--do-sample", "--seed", 7, "Hi")
    assert sampled == ""


def test_a_reader_that_goes_away_ends_generate_quietly_with_141(tmp_path):
    """`fastgpt generate ... | head -c 1`: the next write after the reader closes raises
    BrokenPipeError; the CLI stops with 141 (128 + SIGPIPE, as cat) and no traceback."""
    import subprocess
    import sys

    # cwd: `python -m` puts it first on sys.path, and the source tree has no built kernels
    proc = subprocess.Popen([sys.executable, "-m", "fastgpt", "generate", "-n", "200", "--ignore-eos", "And God said"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        assert proc.stdout.read(1)
        proc.stdout.close()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 141, err.decode(errors="replace")
    assert b"Traceback" not in err and err == b"", err.decode(errors="replace")
