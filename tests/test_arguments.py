"""Every argument fails cleanly: integers too large for C, ids of non-integer kinds, a cache made
for another model, and requests too large for the memory available each raise a ValueError
naming the argument, before anything is allocated; the CLI turns each into one line on stderr
and exit status 2, for every subcommand.
"""

from __future__ import annotations

import dataclasses
import datetime
import tracemalloc

import numpy as np
import pytest

import oracle
from fastgpt import GPT2Config, Model
from fastgpt.cli import main
from fastgpt.generate import GenerationConfig, Generator
from fastgpt.kv_cache import CacheError
from fastgpt.loaders import NonFiniteWeightsError, read_safetensors, write_safetensors
from fastgpt.memory import MemoryLimitError, available_bytes
from fastgpt.model import TokenIdError
from fastgpt.registry import BUNDLED_DIR

TINY = GPT2Config(vocab_size=300, n_positions=32, n_embd=16, n_layer=2, n_head=2)
HUGE = 2**70
# What the memory checks are told is available, so that the outcome does not depend on the machine.
PRETEND_AVAILABLE = 2 * 1024**3
# Far below any of the refused allocations (terabytes); far above the checks' own needs.
PEAK_BYTES = 16 * 1024 * 1024


@pytest.fixture
def model(backend):
    return Model.random(TINY, seed=0, backend=backend)


@pytest.fixture
def little_memory(monkeypatch):
    monkeypatch.setattr("fastgpt.memory.available_bytes", lambda: PRETEND_AVAILABLE)


def refused(call, error, *fragments):
    """call() raises ``error`` (a ValueError) holding every fragment, allocating little on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(error) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"{type(info.value).__name__}: {info.value}")
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert str(fragment) in str(info.value)
    assert peak < PEAK_BYTES, f"{peak / 1e6:.1f} MB allocated before the error"


# -- integers too large for C ----------------------------------------------------------------

@pytest.mark.parametrize("eos", [2**63, HUGE, [5, 2**64], np.uint64(2**63 + 5), -1, 1.5, True, "1"])
def test_eos_token_id_out_of_range(model, eos):
    refused(lambda: GenerationConfig(eos_token_id=eos), ValueError, "eos_token_id")
    refused(lambda: Generator(model).generate_ids([1, 2], 2, eos_token_id=eos), ValueError, "eos_token_id")


@pytest.mark.parametrize("threads", [0, -1, 513, 2**31, HUGE, True, 1.5, "2"])
def test_num_threads_out_of_range(threads):
    refused(lambda: Model.random(TINY, backend="numpy", num_threads=threads), ValueError, "num_threads")
    refused(lambda: Model.from_pretrained("kjv-tiny", backend="numpy", num_threads=threads), ValueError, "num_threads")


def test_num_threads_accepts_numpy_integers():
    assert Model.random(TINY, backend="numpy", num_threads=np.int64(2)).num_threads == 2


def test_huge_seeds_work_and_repeat(model):
    # NumPy's SeedSequence takes integers of any size: nothing to refuse, and the same seed
    # must still give the same draws.
    gen = Generator(model)
    runs = [gen.generate_ids([1, 2], 6, do_sample=True, seed=seed) for seed in (HUGE, HUGE, HUGE + 1)]
    assert runs[0] == runs[1] != runs[2]
    for seed in (-1, 1.5, True, "7"):
        refused(lambda: gen.generate_ids([1, 2], 2, do_sample=True, seed=seed), ValueError, "seed")


# -- token ids of every kind ----------------------------------------------------------------

NOT_IDS = {
    "int beyond int64": [1, HUGE],
    "uint64 beyond the vocabulary": np.array([2**64 - 1], np.uint64),
    "timedelta64": np.array([1, 2], "m8[s]"),
    "timedelta objects": [datetime.timedelta(days=1)],
    "bool array": np.array([True, False]),
    "bool list": [True, False],
    "object array of str": np.array([1, "a"], dtype=object),
    "float array": np.array([1.0, 2.0]),
    "ragged": [[1, 2], [3]],
    "string": "abc",
}


@pytest.mark.parametrize("case", sorted(NOT_IDS))
def test_forward_refuses_ids_that_are_not_token_ids(model, case):
    refused(lambda: model.forward(NOT_IDS[case]), TokenIdError, "token id")


@pytest.mark.parametrize("case", sorted(set(NOT_IDS) - {"ragged"}))    # ragged prompts are a batch there
def test_generate_ids_refuses_ids_that_are_not_token_ids(model, case):
    refused(lambda: Generator(model).generate_ids(NOT_IDS[case], 2), ValueError, "prompt")


def test_prompt_ids_error_stays_a_type_error(model):
    # It was a TypeError before it became a ValueError too; callers catching either still do.
    with pytest.raises(TypeError):
        Generator(model).generate_ids(np.array([1.0]), 2)


def test_object_arrays_of_valid_ids_work(model):
    ids = [1, 2, 3]
    assert np.array_equal(model.forward(np.array(ids, dtype=object)), model.forward(ids))


# -- a cache made for another model -------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("n_layer", 3), ("n_head", 4), ("n_embd", 32), ("n_positions", 64)])
def test_cache_for_another_config_is_refused(model, field, value):
    cache = Model.random(dataclasses.replace(TINY, **{field: value}), backend="numpy").new_cache()
    refused(lambda: model.forward([1, 2], cache=cache), CacheError, "cache", f"{field}={value}")


def test_left_padding_beyond_int64_is_refused(model):
    refused(lambda: model.new_cache().set_left_padding([HUGE]), CacheError, "pad_counts")


# -- requests larger than the memory available ------------------------------------------------------

def test_available_memory_is_known_here():
    available = available_bytes()
    assert available is None or available > 0


@pytest.mark.parametrize("batch_size", [10**9, HUGE])
def test_cache_too_large_for_memory(model, little_memory, batch_size):
    refused(lambda: model.new_cache(batch_size=batch_size), MemoryLimitError, f"batch_size={batch_size}", "bytes")


def test_num_return_sequences_too_large_for_memory(model, little_memory):
    refused(lambda: Generator(model).generate_ids([[1, 2], [3]], 4, do_sample=True, num_return_sequences=10**9),
            MemoryLimitError, "num_return_sequences=1000000000", "2000000000 rows", "bytes")


def test_batch_too_large_for_memory(model, little_memory):
    ids = np.ones((2**19, 8), np.int64)                     # 32 MB of ids: 5 GB of logits, 2.7 GB of activations
    refused(lambda: model.forward(ids), MemoryLimitError, "logits of 524288 x 8 positions", "bytes")
    refused(lambda: model.forward(ids, last_only=True), MemoryLimitError, "batch of 524288 x 8 tokens", "bytes")


# -- the command line: one line on stderr, exit status 2, for every subcommand ----------------------

def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, argv, *fragments):
    try:
        code, out, err = run(capsys, *argv)
    except SystemExit as exc:                    # argparse's own errors exit from parse_args
        code, (out, err) = exc.code, capsys.readouterr()
    print(err)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"fastgpt {argv[0]}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert str(fragment) in err


KJV_TEXT = BUNDLED_DIR / "kjv-tiny" / "valid.txt"
CLI_CASES = {
    "generate --threads": (["generate", "--threads", HUGE, "Hi"], "--threads"),
    "generate --eos-token-id": (["generate", "--eos-token-id", HUGE, "Hi"], "eos_token_id"),
    "generate --num-return-sequences": (["generate", "--do-sample", "--num-return-sequences", 10**12, "Hi"],
                                        "num_return_sequences=1000000000000"),
    "generate --max-new-tokens": (["generate", "-n", HUGE, "Hi"], "max_new_tokens"),
    "generate --top-k not a number": (["generate", "--top-k", "x", "Hi"], "--top-k"),
    "info --threads": (["info", "--threads", 10**9], "--threads"),
    "perplexity --max-length": (["perplexity", "--max-length", HUGE, KJV_TEXT], "max_length"),
    "perplexity --stride": (["perplexity", "--stride", HUGE, KJV_TEXT], "stride"),
    "perplexity of a directory": (["perplexity", BUNDLED_DIR], "directory"),
    "bench --threads": (["bench", "--model", "kjv-tiny", "--threads", HUGE], "--threads"),
    "bench --prompt-tokens": (["bench", "--model", "kjv-tiny", "--prompt-tokens", HUGE], "--prompt-tokens"),
    "bench --dtype": (["bench", "--model", "kjv-tiny", "--dtype", "int4"], "--dtype"),
    "convert into a file": (["convert", "kjv-tiny", KJV_TEXT, "--dtype", "int8"], "not a folder"),
    "convert --dtype": (["convert", "kjv-tiny", "out", "--dtype", "int4"], "--dtype"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_argument_errors_are_one_line(capsys, little_memory, case):
    argv, fragment = CLI_CASES[case]
    one_line_error(capsys, argv, fragment)


@pytest.mark.parametrize("command", ["generate", "info", "perplexity", "bench", "convert"])
def test_cli_corrupt_model_is_one_line(capsys, tmp_path, command):
    folder = oracle.write_random_hf_folder(tmp_path / "model", TINY)
    (folder / "config.json").write_text("[" * 100_000)
    argv = {"generate": ["generate", "--model", folder, "Hi"], "info": ["info", "--model", folder],
            "perplexity": ["perplexity", "--model", folder, KJV_TEXT], "bench": ["bench", "--model", folder],
            "convert": ["convert", folder, tmp_path / "out", "--dtype", "int8"]}[command]
    one_line_error(capsys, argv, "config.json", "nested too deeply")


def test_info_needs_no_tokenizer_files(capsys, tmp_path):
    folder = oracle.write_random_hf_folder(tmp_path / "model", TINY)
    for name in ("vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "tokenizer.json"):
        (folder / name).unlink(missing_ok=True)
    code, out, err = run(capsys, "info", "--model", folder)
    rows = dict(line.split("  ", 1) for line in out.splitlines())
    assert code == 0 and err == "" and int(rows["vocabulary"]) == TINY.vocab_size, (out, err)
    one_line_error(capsys, ["generate", "--model", folder, "Hi"], "tokenizer files")


def test_info_names_nonfinite_weights_and_check_weights_refuses_them(capsys, tmp_path):
    # kjv-tiny's vocabulary, so that its tokenizer files fit the model
    folder = oracle.write_random_hf_folder(tmp_path / "model", dataclasses.replace(TINY, vocab_size=4096))

    tensors = {name: np.array(arr) for name, arr in read_safetensors(folder / "model.safetensors").items()}
    tensors["h.1.attn.c_proj.weight"][0, 0] = np.inf
    write_safetensors(folder / "model.safetensors", tensors)
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((BUNDLED_DIR / "kjv-tiny" / name).read_bytes())
    for argv, listed in ((["--model", folder], "blocks.1.attn_proj_w"), ([], "none")):
        code, out, _ = run(capsys, "info", *argv)
        rows = dict(line.split("  ", 1) for line in out.splitlines())
        assert code == 0 and rows["weights with NaN/Inf"].strip() == listed, out
    Model.from_pretrained(folder, backend="numpy")                 # loading does not scan by default
    refused(lambda: Model.from_pretrained(folder, backend="numpy", check_weights=True), NonFiniteWeightsError,
            str(folder), "blocks.1.attn_proj_w")
