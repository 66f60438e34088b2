"""Errors raised by the weight-file readers, and the checks every format shares.

All of them derive from ``WeightsError(ValueError)``, so a caller can catch "this
checkpoint is unusable" in one place while ``except ValueError`` keeps working.
Missing files that were named explicitly stay ``FileNotFoundError``; these classes are
for files that exist but cannot be trusted, or folders without a known weight file.
"""

import math
import os

__all__ = [
    "WeightsError",
    "SafetensorsError",
    "WeightsFormatError",
    "CheckpointNotFoundError",
    "CheckpointIndexError",
    "NonFiniteWeightsError",
    "raise_if_lfs_pointer",
    "shape_problem",
]


class WeightsError(ValueError):
    """Base class: a weight file or checkpoint folder cannot be loaded."""


class SafetensorsError(WeightsError):
    """A .safetensors file is malformed (the message names the file and tensor)."""


class WeightsFormatError(WeightsError):
    """A non-safetensors weight file (pytorch_model.bin) cannot be read."""


class CheckpointNotFoundError(WeightsError):
    """A checkpoint folder holds none of the weight files we know how to read."""


class CheckpointIndexError(WeightsError):
    """A sharded checkpoint's *.index.json is malformed or disagrees with its shards."""


class NonFiniteWeightsError(WeightsError):
    """Weights that hold NaN or Inf (found when asked: Model.from_pretrained(check_weights=True))."""


# A clone without `git lfs` leaves ~130-byte text pointers where the weights should be.
# Read as safetensors, the first 8 bytes ("version ") decode to a header length of
# ~2**61 and the error would talk about header sizes; torch.load fails with an
# unpickling error. Both hide the real cause, so every reader checks this first.
_LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"


def raise_if_lfs_pointer(path, error_cls):
    """Raise ``error_cls`` if the file at ``path`` is a Git LFS pointer, not data."""
    with open(path, "rb") as f:
        head = f.read(len(_LFS_POINTER_PREFIX))
    if head == _LFS_POINTER_PREFIX:
        raise error_cls(
            f"{os.fspath(path)}: this is a Git LFS pointer file, not the weights "
            f"(the repository was cloned without fetching LFS objects). "
            f"Hint: run `git lfs install && git lfs pull` in the checkout, "
            f"or download the file directly."
        )


# NumPy 1.x arrays have at most 32 dimensions (no weight has more than a few), and NumPy
# refuses any shape whose non-zero dimensions multiply past its index type, even for an empty
# array: shape (0, 2**62, 4) holds no bytes, yet cannot be made.
_MAX_DIMS = 32
_MAX_INDEX = 2**63


def shape_problem(shape, itemsize: int) -> str | None:
    """Why NumPy cannot make an array of ``shape`` (non-negative ints) and ``itemsize``, or None."""
    if len(shape) > _MAX_DIMS:
        return f"shape has {len(shape)} dimensions; at most {_MAX_DIMS} are supported"
    if math.prod(d for d in shape if d) * itemsize >= _MAX_INDEX:
        return f"shape {list(shape)[:8]} is larger than any array can be"
    return None
