"""fastgpt: fast, exact GPT-2 inference on the CPU.

    from fastgpt import Model, Tokenizer, Generator
    model = Model.from_pretrained("path/to/hf-gpt2-folder")
    gen = Generator(model, Tokenizer.from_pretrained("path/to/hf-gpt2-folder"))
    print(gen.generate("The quick brown fox", max_new_tokens=40))
"""

from .config import GPT2Config
from .generate import GenerationConfig, GenerationResult, Generator
from .kv_cache import CacheBusyError, CacheError, KVCache
from .model import Model
from .tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = ["CacheBusyError", "CacheError", "GPT2Config", "GenerationConfig", "GenerationResult", "Generator", "KVCache",
           "Model", "Tokenizer", "show_config", "__version__"]


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
