"""The install really built the compiled kernels with OpenMP (set FASTGPT_ALLOW_NO_KERNELS=1 to skip).

Without this, a build that silently fell back to NumPy, or a test run that imported the
source tree instead of the installed package, would pass every backend test on NumPy alone.
"""

import os

import pytest

import fastgpt
from fastgpt import kernels

allow_missing = os.environ.get("FASTGPT_ALLOW_NO_KERNELS", "") not in ("", "0")


@pytest.mark.skipif(allow_missing, reason="FASTGPT_ALLOW_NO_KERNELS is set")
def test_compiled_kernels_are_built():
    assert kernels.HAVE_KERNELS, kernels.import_error()


@pytest.mark.skipif(allow_missing or os.environ.get("FASTGPT_NO_OPENMP", "") not in ("", "0"),
                    reason="FASTGPT_ALLOW_NO_KERNELS or FASTGPT_NO_OPENMP is set")
def test_openmp_is_enabled():
    assert kernels.openmp_enabled()


def test_show_config_reports_the_build():
    info = fastgpt.show_config()
    assert info["simd"] in ("scalar", "avx2+fma", "avx512", "none")
    assert info["default_num_threads"] >= 1
