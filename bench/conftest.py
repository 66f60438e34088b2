"""Fixtures for the pytest-benchmark suites: the backends, the thread count, GPT-2 124M shapes.

Every suite is parametrized by backend (numpy, and cython when built), so that one group
compares the backends on one measured thing. The 124M-shaped random weights are built once
per session and shared by the per-backend models: building them costs ~2 s and 0.5 GB.

Under ``--benchmark-disable`` (CI) each benchmark body runs once, which proves it still works.
There the model keeps every 124M width, head count and the vocabulary but has 2 layers instead
of 12: with 12, decoding 64 tokens alone took 10-20 s per backend on 2 loaded cores and the run
took close to a minute. Kernel shapes are unchanged. The cold-weight copies (see ``cold_copies``)
are skipped there too: they only matter for timing.
"""

import dataclasses
import itertools
import math
import os

import numpy as np
import pytest

from fastgpt import kernels
from fastgpt.backend import kernels_available, select_backend
from fastgpt.config import PRESETS
from fastgpt.model import Model
from fastgpt.weights import random_weights

BACKENDS = ["numpy"] + (["cython"] if kernels_available() else [])
GPT2 = PRESETS["gpt2"]  # 12 layers, 768 wide, 12 heads, vocabulary 50257


def pytest_addoption(parser):
    parser.addoption("--bench-threads", type=int, default=None,
                     help="threads for fastgpt's kernels and BLAS in bench/ (default: all cores)")


def bench_threads(config):
    from fastgpt.threads import default_num_threads

    return config.getoption("bench_threads") or default_num_threads()


def pytest_benchmark_update_machine_info(config, machine_info):
    # What the numbers depend on besides the CPU; pytest-benchmark warns when a comparison's
    # machine_info differs, which is what we want for these.
    machine_info["fastgpt"] = {
        "simd": kernels.simd_name(), "openmp": kernels.openmp_enabled(), "threads": bench_threads(config),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # Load is not machine_info (it would make every comparison warn) but belongs beside the numbers.
    if hasattr(os, "getloadavg"):
        output_json["load_average_at_end"] = list(os.getloadavg())


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    return request.param


@pytest.fixture
def threads(request):
    return bench_threads(request.config)


@pytest.fixture
def backend(backend_name, threads, benchmark):
    be = select_backend(backend_name, threads)
    be.threads.apply()  # BLAS threads, as Model.forward does before calling the ops
    benchmark.extra_info.update(backend=backend_name, threads=threads)
    return be


CI_LAYERS = 2


@pytest.fixture(scope="session")
def gpt2_config(request):
    if request.config.getoption("benchmark_disable"):
        return dataclasses.replace(GPT2, n_layer=CI_LAYERS)
    return GPT2


@pytest.fixture(scope="session")
def gpt2_weights(gpt2_config):
    return random_weights(gpt2_config, seed=0)


@pytest.fixture
def gpt2_model(gpt2_config, gpt2_weights, backend_name, threads, benchmark):
    benchmark.extra_info.update(backend=backend_name, threads=threads, n_layer=gpt2_config.n_layer)
    return Model(gpt2_config, gpt2_weights, backend=backend_name, num_threads=threads)


def last_level_cache_bytes() -> int:
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size", encoding="ascii") as f:
            text = f.read().strip()
        return int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20}[text[-1]]
    except (OSError, ValueError, KeyError):
        return 32 << 20  # a generous guess for a server part


@pytest.fixture
def cold_copies(request):
    """Factory: ``cold_copies(*arrays)`` -> an endless cycle over tuples of copies of ``arrays``;
    ``cold_copies(*arrays, build=f)`` cycles over ``f(*copy)`` instead, built once per copy.

    In decode every weight matrix and every layer's KV cache is read once per token, with the
    rest of the model (0.5 GB at 124M) read in between, so it always comes from DRAM. Calling
    a kernel again and again on one matrix would read it from cache instead, whenever it fits,
    and flatter the kernel. Cycling over enough copies to fill 4x the last-level cache keeps
    the reads as cold as in the model.
    """
    enabled = not request.config.getoption("benchmark_disable")

    def make(*arrays, build=None):
        each = sum(a.nbytes for a in arrays)
        count = math.ceil(4 * last_level_cache_bytes() / each) if enabled else 1
        ring = [tuple(arrays)] + [tuple(a.copy() for a in arrays) for _ in range(count - 1)]
        return itertools.cycle(ring if build is None else [build(*copy) for copy in ring])

    return make


@pytest.fixture
def rng():
    return np.random.default_rng(0)
