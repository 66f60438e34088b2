"""Seeds for sampling, the way transformers users expect to control them.

transformers samples from torch's global generator, so ``torch.manual_seed(s)`` (or
``transformers.set_seed(s)``) makes ``generate(do_sample=True)`` repeat. fastgpt samples from
NumPy generators seeded per call; here each call takes that seed from torch's global
generator when torch is in use, else from Python's ``random``, so the same habits work.
"""

from __future__ import annotations

import random

import numpy as np

from ._tensors import loaded_torch


def draw_seed() -> int:
    """One call's sampling seed, from the global generator the caller seeds."""
    torch = loaded_torch()
    if torch is not None:
        return int(torch.randint(0, 2**62, (1,), dtype=torch.int64).item())
    return random.getrandbits(62)


def set_seed(seed: int, deterministic: bool = False) -> None:
    """transformers' ``set_seed``: Python's ``random``, NumPy's global state and torch's (if loaded)."""
    random.seed(seed)
    np.random.seed(seed)
    torch = loaded_torch()
    if torch is not None:
        torch.manual_seed(seed)
