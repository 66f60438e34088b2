"""Find and read the weight file(s) of a Hugging Face-style checkpoint folder.

Looked for in this order (the first one present wins):

1. ``model.safetensors``             one file, memory-mapped, needs only NumPy
2. ``model.safetensors.index.json``  sharded safetensors
3. ``pytorch_model.bin``             one pickle, needs torch
4. ``pytorch_model.bin.index.json``  sharded pickles

safetensors comes first because it needs no torch, is mapped instead of copied, and
cannot run code when read. A sharded index is ``{"weight_map": {tensor: shard file}}``;
the index is the contract: every shard it names must exist and hold the tensors mapped
to it, and only the tensors it names are returned.

Non-goals: names and shapes of a particular model (the GPT-2 name table checks those),
TensorFlow/Flax checkpoints, downloading.
"""

import os

from .. import jsonfile
from ..jsonfile import short_repr
from .errors import CheckpointIndexError, CheckpointNotFoundError
from .safetensors import read_safetensors
from .torch_bin import read_torch_bin

__all__ = ["WEIGHT_FILE_NAMES", "find_weights_file", "load_checkpoint_tensors"]

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILE_NAMES = (SAFETENSORS_FILE, SAFETENSORS_INDEX, TORCH_FILE, TORCH_INDEX)

# file name -> (reader of one file, is it an index of shards)
_READERS = {
    SAFETENSORS_FILE: (read_safetensors, False),
    SAFETENSORS_INDEX: (read_safetensors, True),
    TORCH_FILE: (read_torch_bin, False),
    TORCH_INDEX: (read_torch_bin, True),
}


def find_weights_file(folder):
    """Return the path of the weight file (or shard index) load_checkpoint_tensors uses.

    Raises CheckpointNotFoundError naming the folder and the names looked for.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        what = "is a file" if os.path.exists(folder) else "does not exist"
        raise CheckpointNotFoundError(
            f"checkpoint folder {folder!r} {what}; pass the folder that holds one of "
            f"{list(WEIGHT_FILE_NAMES)} (a single .safetensors file can be read with "
            f"read_safetensors)"
        )
    for name in WEIGHT_FILE_NAMES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    present = sorted(os.listdir(folder))
    shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "")
    raise CheckpointNotFoundError(
        f"no weights in checkpoint folder {folder!r}: looked for "
        f"{', '.join(WEIGHT_FILE_NAMES)}; the folder holds: {shown or 'nothing'}"
    )


def load_checkpoint_tensors(folder):
    """Return ``{name: array}`` for the weights in a checkpoint folder.

    See the module docstring for the search order. Tensors keep the checkpoint's own
    names and layout; safetensors F32 tensors are read-only views of a memory map.
    Raises CheckpointNotFoundError, CheckpointIndexError, SafetensorsError or
    WeightsFormatError (all WeightsError, a ValueError).
    """
    path = find_weights_file(folder)
    read_one, is_index = _READERS[os.path.basename(path)]
    if not is_index:
        return read_one(path)
    return _load_sharded(path, read_one)


def _load_sharded(index_path, read_one):
    folder = os.path.dirname(index_path)
    weight_map = _read_weight_map(index_path)

    tensors_by_shard = {}  # shard file name -> tensor names the index puts there
    for tensor_name, shard in weight_map.items():
        tensors_by_shard.setdefault(shard, []).append(tensor_name)
    # Check every shard before reading any: an incomplete download should fail at once
    # and list everything that is missing, not after minutes of loading.
    missing = [s for s in sorted(tensors_by_shard) if not os.path.isfile(os.path.join(folder, s))]
    if missing:
        details = "; ".join(
            f"{s} (holds {len(tensors_by_shard[s])} tensors, e.g. {tensors_by_shard[s][0]!r})"
            for s in missing
        )
        raise CheckpointIndexError(
            f"{index_path}: {len(missing)} of {len(tensors_by_shard)} shard files listed "
            f"in weight_map are missing from {folder!r}: {details}. "
            f"Hint: download every shard named in the index."
        )

    tensors = {}
    for shard in sorted(tensors_by_shard):
        loaded = read_one(os.path.join(folder, shard))  # each shard read exactly once
        for tensor_name in tensors_by_shard[shard]:
            if tensor_name not in loaded:
                raise CheckpointIndexError(
                    f"{index_path}: weight_map puts tensor {tensor_name!r} in shard "
                    f"{shard!r}, but that shard has no such tensor "
                    f"(it holds {len(loaded)} tensors)"
                )
            tensors[tensor_name] = loaded[tensor_name]
    return tensors


def _read_weight_map(index_path):
    index = jsonfile.read_json(index_path, CheckpointIndexError)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointIndexError(
            f"{index_path}: expected a JSON object with a non-empty \"weight_map\" "
            f"(tensor name -> shard file name)"
        )
    for tensor_name, shard in weight_map.items():
        # Shards live beside the index; a path here would read outside the checkpoint.
        if (
            not isinstance(shard, str)
            or shard in ("", ".", "..")
            or os.path.basename(shard) != shard
            or "/" in shard
            or "\\" in shard
        ):
            raise CheckpointIndexError(
                f"{index_path}: weight_map[{short_repr(tensor_name)}] = {short_repr(shard)}; expected the "
                f"plain file name of a shard in the same folder"
            )
    return weight_map
