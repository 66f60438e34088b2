"""Weight-file readers: pure NumPy for safetensors, torch only for pytorch_model.bin.

These return checkpoint tensors as they are stored (names, layouts); mapping names to
fastgpt parameters, transposing and tying belong to the model-specific loader.
Importing this package never imports torch.
"""

from .errors import (
    CheckpointIndexError,
    CheckpointNotFoundError,
    NonFiniteWeightsError,
    SafetensorsError,
    WeightsError,
    WeightsFormatError,
)
from .files import WEIGHT_FILE_NAMES, find_weights_file, load_checkpoint_tensors
from .safetensors import read_metadata, read_safetensors, write_safetensors
from .torch_bin import read_torch_bin

__all__ = [
    "WeightsError",
    "SafetensorsError",
    "WeightsFormatError",
    "CheckpointNotFoundError",
    "CheckpointIndexError",
    "NonFiniteWeightsError",
    "WEIGHT_FILE_NAMES",
    "find_weights_file",
    "load_checkpoint_tensors",
    "read_metadata",
    "read_safetensors",
    "write_safetensors",
    "read_torch_bin",
]
