"""fastgpt: fast, exact GPT-2 inference on the CPU.

    from fastgpt import Model, Tokenizer, Generator
    model = Model.from_pretrained("path/to/hf-gpt2-folder")
    gen = Generator(model, Tokenizer.from_pretrained("path/to/hf-gpt2-folder"))
    print(gen.generate("The quick brown fox", max_new_tokens=40))
"""

import importlib

__version__ = "0.1.0"

# Where each public name lives. They load on first use (PEP 562), so that importing a submodule
# (the command's entry point, fastgpt.__main__) does not load numpy and the kernels first.
_LAZY = {"GPT2Config": ".config", "GenerationConfig": ".generate", "GenerationResult": ".generate",
         "Generator": ".generate", "CacheBusyError": ".kv_cache", "CacheError": ".kv_cache", "KVCache": ".kv_cache",
         "Model": ".model", "Tokenizer": ".tokenizer"}
__all__ = sorted(_LAZY) + ["show_config", "__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastgpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def show_config() -> dict:
    """What this install runs on: backend availability, SIMD level, OpenMP, threads."""
    from . import kernels
    from .threads import default_num_threads

    return {
        "version": __version__,
        "compiled_kernels": kernels.import_error(),
        "simd": kernels.simd_name(),
        "openmp": kernels.openmp_enabled(),
        "default_num_threads": default_num_threads(),
    }
