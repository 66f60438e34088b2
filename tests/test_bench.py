"""The benchmark's own logic on a tiny model: the command runs, its JSON holds every figure,
the roofline arithmetic is right, user errors are ValueErrors, and the status line stays off
stderr when it is not a terminal. Speed itself is never asserted."""

import argparse
import io
import json
import math
import statistics

import numpy as np
import pytest

from fastgpt import GPT2Config, Generator, Model, bench
from fastgpt.backend import kernels_available
from fastgpt.cli import main
from fastgpt.quant import quantize_weights
from fastgpt.weights import random_weights

TINY = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2)
# int8 needs widths that are multiples of its 32-weight blocks; wide enough that the matrices
# dominate the bytes per token, as in GPT-2 (norms, biases and a wpe row stay float32).
WIDE = GPT2Config(vocab_size=1024, n_positions=32, n_embd=128, n_layer=2, n_head=2)


@pytest.fixture(autouse=True)
def small_bandwidth_buffer(monkeypatch):
    # 4 MiB sits in cache, so the figure is meaningless, but the code path is the same and fast;
    # and no settling pauses between runs, which only matter for the figures.
    monkeypatch.setattr(bench, "BANDWIDTH_BUFFER_BYTES", 4 << 20)
    monkeypatch.setattr(bench, "SETTLE_SECONDS", 0.0)


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
    assert list(data["engines"]) == bench.available_backends() and data["settings"]["dtypes"] == ["float32"]
    assert "vs float32" not in printed.out and "tokens identical: yes" in printed.out
    for engine in data["engines"].values():
        assert set(engine) >= {"prefill_tokens_per_s", "time_to_first_token_ms", "decode_tokens_per_s",
                               "decode_ms_per_token", "peak_rss_bytes", "roofline_fraction"}
        assert engine["peak_rss_bytes"] > 0


@pytest.mark.parametrize("argv,message", [
    (["--new-tokens", "1"], "at least 2"),
    (["--prompt-tokens", "30", "--new-tokens", "4"], "exceeds the model's context"),
    (["--prompt-tokens", "4,30", "--new-tokens", "4"], "exceeds the model's context"),
    (["--batch", "1,2", "--prompt-tokens", "4,8"], "--batch takes one --prompt-tokens value"),
    (["--batch", "1,2", "--compare", "transformers"], "measures one prompt length at batch 1"),
])
def test_cli_user_errors(monkeypatch, argv, message):
    monkeypatch.setitem(bench.RANDOM_CONFIGS, "gpt2", TINY)
    with pytest.raises(ValueError, match=message):
        run_cli("--random", "gpt2", *argv)


def test_cli_single_dtype_keeps_backend_names(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(bench.RANDOM_CONFIGS, "gpt2", WIDE)
    out = tmp_path / "bench.json"
    assert run_cli("--random", "gpt2", "--backend", "numpy", "--dtype", "int8", "--prompt-tokens", "4",
                   "--new-tokens", "3", "--repeat", "1", "--threads", "1", "--json", str(out)) == 0
    text = capsys.readouterr().out
    assert "fastgpt numpy" in text and "decode roofline: " in text and "tokens identical: yes (numpy:" in text
    assert " MB int8, 2 layers" in text and "vs float32" not in text
    data = json.loads(out.read_text())
    assert list(data["engines"]) == ["numpy"] and data["settings"]["dtypes"] == ["int8"]
    assert data["model"]["dtype"] == "int8" and data["engines"]["numpy"]["dtype"] == "int8"
    int8 = bench.decode_bytes_per_token(quantize_weights(random_weights(WIDE, bench.SEED), "int8"))
    assert data["roofline"]["decode_bytes_per_token"] == int8 == data["engines"]["numpy"]["decode_bytes_per_token"]
    assert "vs_first_dtype" not in data["engines"]["numpy"]


@pytest.mark.parametrize("text,dtypes", [
    ("int8", ["int8"]),
    ("float32,int8,bfloat16", ["float32", "int8", "bfloat16"]),
    (" int8 , float16", ["int8", "float16"]),
])
def test_parse_dtypes(text, dtypes):
    assert bench.parse_dtypes(text) == dtypes


@pytest.mark.parametrize("text,message", [
    ("int4", "unknown dtype 'int4'; choose from float32, bfloat16, float16, int8"),
    ("float32,fp16", "unknown dtype 'fp16'"),
    ("int8,float32,int8", "dtype 'int8' is listed twice"),
    ("float32,,int8", "empty dtype name"),
    ("", "empty dtype name"),
])
def test_parse_dtypes_errors(text, message):
    with pytest.raises(ValueError, match=message):
        bench.parse_dtypes(text)


def test_cli_bad_dtype_exits_2_naming_value_and_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--random", "gpt2", "--dtype", "float32,int4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert ("argument --dtype: in 'float32,int4': unknown dtype 'int4'; "
            "choose from float32, bfloat16, float16, int8") in err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--random", "gpt2", "--dtype", "int8,int8"])
    assert exc.value.code == 2 and "listed twice" in capsys.readouterr().err


def test_quantized_weights_cannot_be_requantized():
    w8 = quantize_weights(random_weights(WIDE, seed=0), "int8")
    with pytest.raises(ValueError, match="already int8.*bfloat16 would round twice.*float32 checkpoint"):
        bench.run_benchmark(WIDE, w8, backends=["numpy"], threads=1, prompt_tokens=4, new_tokens=3, repeat=1,
                            dtypes=["int8", "bfloat16"], status=bench.StatusLine(io.StringIO()))
    with pytest.raises(ValueError, match="listed twice"):
        bench.run_benchmark(WIDE, w8, backends=["numpy"], prompt_tokens=4, new_tokens=3, dtypes=["int8", "int8"])


def test_two_dtypes_interleaved_with_own_rooflines_and_ratios():
    w = random_weights(WIDE, seed=0)
    backends = bench.available_backends()
    report = bench.run_benchmark(WIDE, w, backends=backends, threads=1, prompt_tokens=4, new_tokens=5, repeat=3,
                                 dtypes=["float32", "int8"], status=bench.StatusLine(io.StringIO()))
    # one engine per (backend, dtype), each backend's dtypes side by side
    assert list(report["engines"]) == [f"{b} {d}" for b in backends for d in ("float32", "int8")]
    C, V, L = WIDE.n_embd, WIDE.vocab_size, WIDE.n_layer
    matrix_weights = V * C + L * 12 * C * C              # wte (tied head) + qkv, proj, fc, proj
    float32_rest = 4 * (L * 13 * C + 2 * C + C)           # norms, biases, ln_f, one wpe row
    f32, i8 = report["rooflines"]["float32"], report["rooflines"]["int8"]
    assert f32["decode_bytes_per_token"] == 4 * matrix_weights + float32_rest == bench.decode_bytes_per_token(w)
    # int8: one byte per weight plus a 2-byte scale per 32 weights
    assert i8["decode_bytes_per_token"] == matrix_weights + matrix_weights // 32 * 2 + float32_rest
    ratio = f32["decode_bytes_per_token"] / i8["decode_bytes_per_token"]
    print(f"float32 / int8 bytes per token: {ratio:.3f}")
    assert 3.6 < ratio < 4 / 1.0625                      # ~1/3.8 of float32's at GPT-2 sizes
    bandwidth = report["bandwidth"]["gb_per_s"]["median"] * 1e9
    assert math.isclose(i8["tokens_per_s"], bandwidth / i8["decode_bytes_per_token"])
    assert report["roofline"]["dtype"] == "float32" and report["roofline"]["tokens_per_s"] == f32["tokens_per_s"]
    for b in backends:
        ref, q = report["engines"][f"{b} float32"], report["engines"][f"{b} int8"]
        assert (ref["backend"], ref["dtype"], q["backend"], q["dtype"]) == (b, "float32", b, "int8")
        assert q["decode_bytes_per_token"] == i8["decode_bytes_per_token"]
        assert math.isclose(q["roofline_fraction"], q["decode_tokens_per_s"]["median"] / i8["tokens_per_s"])
        assert math.isclose(ref["roofline_fraction"], ref["decode_tokens_per_s"]["median"] / f32["tokens_per_s"])
        assert "vs_first_dtype" not in ref
        vs = q["vs_first_dtype"]
        assert vs["dtype"] == "float32" and vs["engine"] == f"{b} float32"
        # per round int8 speed / float32 speed (the samples are in round order), then the median
        for key, figure in (("decode", "decode_tokens_per_s"), ("prefill", "prefill_tokens_per_s")):
            per_round = [a / r for a, r in zip(q[figure]["samples"], ref[figure]["samples"])]
            assert math.isclose(vs[key], statistics.median(per_round)), key
    by_dtype = report["tokens_by_dtype"]
    assert list(by_dtype) == ["float32", "int8"]
    assert by_dtype["int8"]["engines"] == [f"{b} int8" for b in backends]
    assert by_dtype["float32"]["identical"], by_dtype["float32"]["mismatch"]
    assert "first_difference_vs_first_dtype" in by_dtype["int8"]
    text = bench.format_report(report)
    print(text)
    assert "decode roofline float32: " in text and "decode roofline int8:    " in text
    assert f"{backends[-1]} int8" in text and f"fastgpt {backends[-1]}" not in text
    assert "decode speed vs float32" in text and "prefill speed vs float32" in text
    assert "tokens identical within each dtype" in text and "  int8: " in text


def test_cli_several_dtypes_json(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(bench.RANDOM_CONFIGS, "gpt2", WIDE)
    out = tmp_path / "bench.json"
    assert run_cli("--random", "gpt2", "--backend", "numpy", "--dtype", "float32,int8,bfloat16",
                   "--prompt-tokens", "4", "--new-tokens", "3", "--repeat", "2", "--threads", "1",
                   "--json", str(out)) == 0
    assert "numpy bfloat16" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["settings"]["dtypes"] == ["float32", "int8", "bfloat16"] and data["model"]["dtype"] == "float32"
    assert list(data["rooflines"]) == ["float32", "int8", "bfloat16"]
    assert list(data["engines"]) == ["numpy float32", "numpy int8", "numpy bfloat16"]
    bytes_ = [data["engines"][n]["decode_bytes_per_token"] for n in data["engines"]]
    assert bytes_[0] > bytes_[2] > bytes_[1]
    for name, engine in data["engines"].items():
        assert set(engine) >= {"dtype", "backend", "roofline_tokens_per_s", "roofline_fraction", "decode_tokens_per_s"}
        assert engine["decode_bytes_per_token"] == data["rooflines"][engine["dtype"]]["decode_bytes_per_token"]
        assert ("vs_first_dtype" in engine) == (engine["dtype"] != "float32")
    assert set(data["engines"]["numpy bfloat16"]["vs_first_dtype"]) == {
        "dtype", "engine", "prefill", "time_to_first_token", "decode"}


def test_tokens_compared_within_a_dtype_only():
    def run(tokens):
        return bench.Run(prefill_s=1, ttft_s=1, decode_s=1, argmax_s=None, tokens=tokens)

    groups = {"float32": {"numpy float32": [run([1, 2, 3])], "transformers": [run([1, 2, 3])]},
              "int8": {"numpy int8": [run([1, 2, 4])], "cython int8": [run([1, 2, 4])]},
              "bfloat16": {"numpy bfloat16": [run([1, 2, 3])], "cython bfloat16": [run([9, 2, 3])]}}
    out = bench._tokens_by_dtype(groups)
    assert out["float32"] == {"engines": ["numpy float32", "transformers"], "identical": True, "mismatch": None}
    assert out["int8"]["identical"] and out["int8"]["first_difference_vs_first_dtype"] == 2
    assert not out["bfloat16"]["identical"] and out["bfloat16"]["first_difference_vs_first_dtype"] is None
    assert out["bfloat16"]["mismatch"] == "cython bfloat16 run 1 differs from numpy bfloat16 at new token 0"


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


@pytest.mark.parametrize("dtypes,weights_from", [(["int8", "float32"], "float32"), (["int8", "bfloat16"], "int8")])
def test_compare_transformers_with_several_dtypes(dtypes, weights_from):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)  # int8-able widths
    w = random_weights(config, seed=0)
    report = bench.run_benchmark(config, w, backends=["numpy"], threads=1, prompt_tokens=4, new_tokens=6, repeat=2,
                                 compare="transformers", dtypes=dtypes, status=bench.StatusLine(io.StringIO()))
    assert list(report["engines"]) == [f"numpy {d}" for d in dtypes] + ["transformers"]
    hf = report["engines"]["transformers"]
    # transformers runs float32 only: the float32 engine's weights, else the first dtype's widened
    assert hf["dtype"] == "float32" and hf["weights_from"] == weights_from
    assert hf["decode_bytes_per_token"] == bench.decode_bytes_per_token(w) == (
        report["rooflines"]["float32"]["decode_bytes_per_token"])
    assert "transformers" in report["tokens_by_dtype"][weights_from]["engines"]
    assert report["tokens_by_dtype"][weights_from]["identical"], report["tokens_by_dtype"][weights_from]["mismatch"]
    for d in dtypes:
        assert set(report["engines"][f"numpy {d}"]["vs_transformers"]) == {"prefill", "time_to_first_token", "decode"}
    assert "vs_first_dtype" in report["engines"][f"numpy {dtypes[1]}"]
    text = bench.format_report(report)
    print(text)
    assert "decode speed vs hf" in text and f"decode speed vs {dtypes[0]}" in text
    assert f"transformers computes in float32 on the {weights_from} engines' weights" in text
    if weights_from != "float32":
        assert "decode roofline float32 (transformers):" in text


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


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--batch", "2,x"], ["--prompt-tokens", "4,4"],
                                  ["--kv-dtype", "int8"]])
def test_cli_rejects_bad_sweep_values(argv, capsys):
    with pytest.raises(SystemExit):
        run_cli("--random", "gpt2", *argv)
    assert "argument" in capsys.readouterr().err


def test_batch_and_first_token_sweeps(monkeypatch, tmp_path, capsys):
    """--batch and a --prompt-tokens list: every case measured, each against a positive bound; a
    row's tokens do not depend on the batch it decodes in (compiled backend)."""
    monkeypatch.setitem(bench.RANDOM_CONFIGS, "gpt2", WIDE)
    out = tmp_path / "bench.json"
    assert run_cli("--random", "gpt2", "--dtype", "float32,int8", "--batch", "1,2,5", "--prompt-tokens", "4",
                   "--new-tokens", "4", "--repeat", "1", "--threads", "1", "--json", str(out)) == 0
    text = capsys.readouterr().out
    assert "batched decode: 4-token prompts, 3 steps of B rows" in text and "bound = max(weight bytes /" in text
    sweep = json.loads(out.read_text())["batch_sweep"]
    assert [(r["dtype"], r["batch"]) for r in sweep["rows"]] == [(d, b) for d in ("float32", "int8") for b in (1, 2, 5)]
    for row in sweep["rows"]:
        assert row["bound_ms"] > 0 and row["of_bound"] > 0 and row["tokens_per_s"]["median"] > 0
        assert row["bound_by"] in ("memory", "arithmetic")
        assert row["bound_with_kv_ms"] >= row["bound_ms"]
        if kernels_available():
            assert row["row0_tokens_as_first_batch"], row
    assert run_cli("--random", "gpt2", "--dtype", "int8", "--prompt-tokens", "4,9", "--new-tokens", "9",
                   "--repeat", "1", "--threads", "1", "--kv-dtype", "bfloat16", "--json", str(out)) == 0
    assert "time to first token: prompt of P tokens" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["kv_dtype"] == "bfloat16" and "batch_sweep" not in report
    rows = report["ttft_sweep"]["rows"]
    assert [r["prompt_tokens"] for r in rows] == [4, 9]
    assert all(r["ttft_ms"]["median"] > 0 and r["bound_ms"] > 0 and r["ttft_over_step"] > 0 for r in rows)
