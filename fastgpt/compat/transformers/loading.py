"""The keyword arguments of transformers' ``from_pretrained`` and what each means here.

Download and placement options are accepted and do what they can offline (``cache_dir``
and ``revision`` choose the snapshot in the local cache); a dtype picks the precision
fastgpt holds the matrices in (it computes in float32); a GPU placement is refused. Any
other keyword that names a config field overrides it, as in transformers.
"""

from __future__ import annotations

from ._tensors import OutOfScopeError, check_device, loaded_torch
from .configuration import ATTRIBUTE_MAP, DEFAULTS

#: Accepted and ignored: they only concern downloading, loading speed or kernels.
IGNORED = frozenset({
    "local_files_only", "token", "use_auth_token", "force_download", "resume_download", "proxies",
    "trust_remote_code", "low_cpu_mem_usage", "use_safetensors", "attn_implementation", "use_fast",
    "offload_folder", "offload_state_dict", "_from_pipeline", "_from_auto", "mirror", "from_tf", "from_flax",
    "output_loading_info", "key_mapping", "tp_plan",
})
# torch / string dtypes -> the precision fastgpt keeps the weights in (None: as stored).
_DTYPES = {"float32": None, "auto": None, "float16": "float16", "half": "float16", "bfloat16": "bfloat16"}


def split_load_kwargs(where: str, kwargs: dict, config_keys: bool) -> dict:
    """Drop the ignored options and return the config overrides; anything else is a TypeError."""
    overrides, unknown = {}, []
    for key, value in kwargs.items():
        if key in IGNORED:
            continue
        if key == "device_map":
            if isinstance(value, dict):
                for device in value.values():
                    check_device(device, f"{where}(device_map=...)")
            elif value != "auto":
                check_device(value, f"{where}(device_map=...)")
        elif config_keys and (key in DEFAULTS or key in ATTRIBUTE_MAP or key == "num_labels"):
            overrides[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise TypeError(f"{where}: unsupported argument(s) {', '.join(sorted(unknown))}; accepted: config fields, "
                        f"cache_dir, revision, dtype/torch_dtype, device_map, and (ignored) {', '.join(sorted(IGNORED))}")
    return overrides


def weights_dtype(dtype) -> str | None:
    """``dtype=`` / ``torch_dtype=`` (torch.float16, "bfloat16", "auto", ...) as fastgpt's weight dtype."""
    if dtype is None:
        return None
    name = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: fastgpt holds weights in float32, float16 or bfloat16 "
                         "(int8 through fastgpt.Model's dtype='int8')")
    return _DTYPES[name]


def check_to_args(where: str, *args, **kwargs) -> None:
    """``.to(...)`` arguments: the CPU and float32 pass; a GPU or a dtype change is out of scope."""
    torch = loaded_torch()
    for value in (*args, *kwargs.values()):
        if value is None or isinstance(value, bool):
            continue
        if torch is not None and isinstance(value, torch.dtype):
            if weights_dtype(value) is not None:
                raise OutOfScopeError(f"{where}: converting a loaded model to {value} (load it with dtype= instead)")
        else:
            check_device(value, where)
