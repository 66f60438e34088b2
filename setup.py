"""Builds fastgpt's Cython kernels, with OpenMP where the compiler has it.

Switches (build time only):
  FASTGPT_NO_OPENMP=1       build without OpenMP (kernels run single-threaded)
  FASTGPT_FAIL_NO_OPENMP=1  fail instead of falling back when OpenMP does not work
  FASTGPT_MARCH_NATIVE=1    add -march=native (local builds only: the result may not run on other CPUs)
  FASTGPT_CYTHON_DEBUG=1    bounds checks on, for debugging kernels
Without them the build is portable: SIMD paths are chosen at run time (csrc/simd_dot.c).
"""

import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
CSRC = "csrc"

# extension name -> the C files it links (each extension compiles only what it uses)
MODULES = {
    "_elementwise": ["elementwise.c", "simd_dot.c"],
    "_linear": ["simd_dot.c", "gemm.c", "skinny.c", "quant.c", "amx.c", "hgemm.c"],
    "_attention": ["attention.c", "simd_dot.c"],
    "_system": ["simd_dot.c", "peak.c", "quant.c", "amx.c", "hgemm.c", "skinny.c", "gemm.c"],
    "_quant": ["quant.c", "qgemm.c", "hgemm.c", "skinny.c", "amx.c", "gemm.c", "simd_dot.c"],
    "_decode": ["decode.c", "quant.c", "skinny.c", "amx.c", "hgemm.c", "gemm.c", "attention.c", "elementwise.c",
                "simd_dot.c"],
}


def _env_flag(name):
    return os.environ.get(name, "") not in ("", "0")


def openmp_flags():
    """Compile and run a tiny OpenMP program; return the flags if it works, else []."""
    if _env_flag("FASTGPT_NO_OPENMP"):
        return []
    cc = sysconfig.get_config_var("CC") or "cc"
    flags = ["-fopenmp"]
    src = textwrap.dedent(
        """
        #include <omp.h>
        #include <stdio.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            printf("%d", n > 0);
            return 0;
        }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        c_file, exe = Path(tmp, "probe.c"), Path(tmp, "probe")
        c_file.write_text(src)
        try:
            subprocess.run(cc.split() + [str(c_file), "-o", str(exe)] + flags, check=True, capture_output=True)
            ok = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.strip() == "1"
        except (OSError, subprocess.CalledProcessError):
            ok = False
    if ok:
        return flags
    message = "fastgpt: OpenMP is not available; building single-threaded kernels"
    if _env_flag("FASTGPT_FAIL_NO_OPENMP"):
        sys.exit(message.replace("building", "refusing to build") + " (FASTGPT_FAIL_NO_OPENMP is set)")
    print("WARNING: " + message, file=sys.stderr)
    return []


def extensions():
    from Cython.Build import cythonize

    omp = openmp_flags()
    compile_args = ["-O3", "-std=c11"] + omp
    if _env_flag("FASTGPT_MARCH_NATIVE"):
        compile_args.append("-march=native")
    exts = [
        Extension(
            f"fastgpt.kernels.{name}",
            sources=[f"fastgpt/kernels/{name}.pyx"] + [f"{CSRC}/{c}" for c in c_files],
            include_dirs=[CSRC, numpy.get_include()],
            extra_compile_args=compile_args,
            extra_link_args=omp + ["-lm"],
        )
        for name, c_files in MODULES.items()
    ]
    debug = _env_flag("FASTGPT_CYTHON_DEBUG")
    return cythonize(
        exts,
        compiler_directives={"language_level": 3, "boundscheck": debug, "wraparound": debug},
        include_path=["fastgpt/kernels"],
    )


class SerialBuildExt(build_ext):
    """The extensions share C files (csrc/), whose objects land in one temp folder: built in
    parallel (-j), two extensions write the same .o at once and one links a half-written file
    ("undefined symbol" on import). So they are built one after the other; -j is accepted."""

    def finalize_options(self):
        super().finalize_options()
        self.parallel = None


setup(ext_modules=extensions(), cmdclass={"build_ext": SerialBuildExt})
