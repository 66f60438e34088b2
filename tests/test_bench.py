"""The benchmark's own logic on a tiny model: the command runs, its JSON holds every figure,
the roofline arithmetic is right, user errors are ValueErrors, and the status line stays off
stderr when it is not a terminal. Speed itself is never asserted."""

import argparse
import io
import json
import math

import numpy as np
import pytest

from fastgpt import GPT2Config, Generator, Model, bench
from fastgpt.weights import random_weights

TINY = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2)


@pytest.fixture(autouse=True)
def small_bandwidth_buffer(monkeypatch):
    # 4 MiB sits in cache, so the figure is meaningless, but the code path is the same and fast.
    monkeypatch.setattr(bench, "BANDWIDTH_BUFFER_BYTES", 4 << 20)


def run_cli(*argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    bench.add_bench_parser(sub)
    args = parser.parse_args(["bench", *argv])
    return args.func(args)


def test_decode_bytes_per_token_counts_one_row_of_each_table():
    w = random_weights(TINY, seed=0)
    C, row = TINY.n_embd, TINY.n_embd * 4
    matrices = sum(a.nbytes for blk in w.blocks for a in vars(blk).values() if a is not None)
    final_norm = 2 * C * 4
    # Tied: the head reads all of wte (counted once); the position table gives one row.
    assert bench.decode_bytes_per_token(w) == matrices + final_norm + w.wte.nbytes + row
    # Untied: the head reads all of lm_head; the token table gives one gathered row.
    w.lm_head = w.wte.copy()
    assert bench.decode_bytes_per_token(w) == matrices + final_norm + w.lm_head.nbytes + row + row


def test_engine_makes_the_generators_tokens(backend):
    model = Model.random(TINY, seed=0, backend=backend, num_threads=1)
    prompt = np.arange(5, dtype=np.int64)
    run = bench.FastgptEngine(model).run(prompt, 6)
    # eos_token_id=[]: no end-of-text stop, as in the benchmark
    assert run.tokens == Generator(model).generate_ids(prompt, max_new_tokens=6, eos_token_id=[])
    assert 0 < run.prefill_s <= run.ttft_s and run.decode_s > 0 and 0 <= run.argmax_s <= run.decode_s


def test_report_figures_and_roofline_arithmetic():
    w = random_weights(TINY, seed=0)
    report = bench.run_benchmark(TINY, w, backends=["numpy"], threads=1, prompt_tokens=4, new_tokens=5,
                                 repeat=3, source="tiny", status=bench.StatusLine(io.StringIO()))
    bw = report["bandwidth"]
    assert bw["passes"] >= bench.BANDWIDTH_PASSES and bw["buffer_bytes"] == 4 << 20
    roof = report["roofline"]
    assert roof["decode_bytes_per_token"] == bench.decode_bytes_per_token(w)
    assert math.isclose(roof["tokens_per_s"], bw["gb_per_s"]["median"] * 1e9 / roof["decode_bytes_per_token"])
    numpy_ = report["engines"]["numpy"]
    decode = numpy_["decode_tokens_per_s"]
    assert len(decode["samples"]) == 3 and decode["min"] <= decode["median"] <= decode["max"]
    assert math.isclose(numpy_["roofline_fraction"], decode["median"] / roof["tokens_per_s"])
    # ms/token is per run 1000 / tokens/s, so the medians of an odd count agree
    assert math.isclose(numpy_["decode_ms_per_token"]["median"] * decode["median"], 1e3)
    assert len(numpy_["tokens"]) == 5 and report["tokens_identical"] is True
    text = bench.format_report(report)
    print(text)
    assert "decode roofline" in text and "tokens identical: yes" in text


def test_cli_random_model_writes_json(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(bench.RANDOM_CONFIGS, "gpt2", TINY)   # the gpt2 name, tiny shapes
    out = tmp_path / "bench.json"
    assert run_cli("--random", "gpt2", "--prompt-tokens", "4", "--new-tokens", "4", "--repeat", "1",
                   "--threads", "1", "--json", str(out)) == 0
    printed = capsys.readouterr()
    assert "decode tokens/s" in printed.out and printed.err == ""   # no status line off a TTY
    data = json.loads(out.read_text())
    assert set(data) >= {"date", "machine", "model", "settings", "bandwidth", "roofline", "engines", "tokens_identical"}
    assert set(data["machine"]) >= {"cpu", "simd", "openmp", "OPENBLAS_CORETYPE", "load_average_start"}
    assert data["settings"]["threads"] == 1 and data["settings"]["backends"] == bench.available_backends()
    for engine in data["engines"].values():
        assert set(engine) >= {"prefill_tokens_per_s", "time_to_first_token_ms", "decode_tokens_per_s",
                               "decode_ms_per_token", "peak_rss_bytes", "roofline_fraction"}
        assert engine["peak_rss_bytes"] > 0


@pytest.mark.parametrize("argv,message", [
    (["--new-tokens", "1"], "at least 2"),
    (["--prompt-tokens", "30", "--new-tokens", "4"], "exceeds the model's context"),
])
def test_cli_user_errors(monkeypatch, argv, message):
    monkeypatch.setitem(bench.RANDOM_CONFIGS, "gpt2", TINY)
    with pytest.raises(ValueError, match=message):
        run_cli("--random", "gpt2", *argv)


def test_status_line_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    quiet, tty = io.StringIO(), Tty()
    for stream in (quiet, tty):
        status = bench.StatusLine(stream)
        status.show("round 1/3")
        status.clear()
    assert quiet.getvalue() == ""
    assert tty.getvalue().startswith("\r") and "round 1/3" in tty.getvalue()


def test_compare_transformers_same_tokens():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    w = random_weights(TINY, seed=0)
    report = bench.run_benchmark(TINY, w, backends=["numpy"], threads=1, prompt_tokens=4, new_tokens=6, repeat=1,
                                 compare="transformers", status=bench.StatusLine(io.StringIO()))
    hf = report["engines"]["transformers"]
    assert hf["kind"] == "transformers" and hf["argmax_ms_per_token"] is None
    assert report["tokens_identical"] is True, report["tokens_mismatch"]
    assert set(report["engines"]["numpy"]["vs_transformers"]) == {"prefill", "time_to_first_token", "decode"}
    assert "tokens identical: yes" in bench.format_report(report)


def test_first_mismatch_names_engine_run_and_position():
    def run(tokens):
        return bench.Run(prefill_s=1, ttft_s=1, decode_s=1, argmax_s=None, tokens=tokens)

    same = {"numpy": [run([1, 2, 3])], "transformers": [run([1, 2, 3]), run([1, 2, 3])]}
    assert bench._first_mismatch(same) is None
    differ = {"numpy": [run([1, 2, 3])], "transformers": [run([1, 2, 3]), run([1, 5, 3])]}
    assert bench._first_mismatch(differ) == "transformers run 2 differs from numpy at new token 1"


def test_cli_model_folder_against_transformers(hf_checkpoint, capsys):
    # A saved checkpoint with randomised biases and norms: every tensor of the in-memory
    # handover to GPT2LMHeadModel matters for the tokens to agree.
    folder, _ = hf_checkpoint("small")
    assert run_cli("--model", str(folder), "--backend", "numpy", "--prompt-tokens", "5", "--new-tokens", "6",
                   "--repeat", "1", "--threads", "1", "--compare", "transformers") == 0
    out = capsys.readouterr().out
    assert "tokens identical: yes" in out and "decode speed vs hf" in out
