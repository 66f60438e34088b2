"""fastgpt's compiled kernels, if this install built them (``pip install .`` with a C compiler).

Importing never fails: ``HAVE_KERNELS`` says whether the extensions loaded, and
``import_error()`` why not.
"""

_IMPORT_ERROR = None
try:
    from . import _attention, _decode, _elementwise, _linear, _quant, _system  # noqa: F401
    HAVE_KERNELS = True
except ImportError as exc:  # not built (e.g. a source checkout without `pip install .`)
    _IMPORT_ERROR = exc
    HAVE_KERNELS = False


def import_error() -> str:
    return "built and importable" if HAVE_KERNELS else f"import failed: {_IMPORT_ERROR}"


def openmp_enabled() -> bool:
    return HAVE_KERNELS and _system.openmp_enabled()


def simd_name() -> str:
    return _system.simd_name() if HAVE_KERNELS else "none"
