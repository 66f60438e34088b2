"""Read a PyTorch ``pytorch_model.bin`` state dict into NumPy arrays.

The format is a pickle, so there is no NumPy-only reader: torch is imported lazily, only
when such a file is actually read, and fastgpt otherwise never needs it. ``weights_only``
loading is used because unpickling an arbitrary file can run arbitrary code.

Arrays come back with the same dtype rules as read_safetensors, so callers see one
contract whatever the format: float16 and bfloat16 are widened to float32, every other
dtype is kept, and every array is read-only. Unlike safetensors nothing is mapped: the
whole file is read into memory by torch.load.
"""

import os

from .errors import WeightsFormatError, raise_if_lfs_pointer

__all__ = ["read_torch_bin", "WeightsFormatError"]


def read_torch_bin(path):
    """Return ``{name: array}`` for the flat state dict saved with torch.save at ``path``.

    Raises WeightsFormatError if torch is not installed, if torch.load rejects the file,
    or if it does not hold a flat ``{str: Tensor}`` mapping; FileNotFoundError if the
    file does not exist.
    """
    path = os.fspath(path)
    raise_if_lfs_pointer(path, WeightsFormatError)
    try:
        import torch
    except ImportError as e:
        raise WeightsFormatError(
            f"{path}: reading a PyTorch .bin checkpoint needs torch, which is not "
            f"installed. Hint: `pip install torch`, or convert the checkpoint to "
            f"safetensors once (fastgpt reads those with NumPy alone)."
        ) from e

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # missing or unreadable file: the OS error already says so
    except Exception as e:  # corrupt zip, truncated pickle, non-weights objects, ...
        raise WeightsFormatError(
            f"{path}: torch.load(weights_only=True) failed: {type(e).__name__}: {e}"
        ) from e

    if not isinstance(state, dict):
        raise WeightsFormatError(
            f"{path}: expected a state dict (a dict of name -> tensor), "
            f"got {type(state).__name__}"
        )
    tensors = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise WeightsFormatError(
                f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; "
                f"expected a flat state dict (a training checkpoint nests it, e.g. "
                f"under 'model' or 'state_dict')"
            )
        tensors[name] = _to_numpy(path, name, value, torch)
    return tensors


def _to_numpy(path, name, tensor, torch):
    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.to(torch.float32)
    try:
        # .numpy() shares memory with the tensor and keeps it alive; contiguous() is a
        # no-op for the usual case and gives the same layout safetensors files have.
        arr = tensor.contiguous().numpy()
    except (TypeError, RuntimeError) as e:  # quantized, sparse, dtypes NumPy lacks
        raise WeightsFormatError(
            f"{path}: tensor {name!r} (dtype {tensor.dtype}, layout {tensor.layout}) "
            f"has no NumPy equivalent: {e}"
        ) from e
    arr.flags.writeable = False
    return arr
