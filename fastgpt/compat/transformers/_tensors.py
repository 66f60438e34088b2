"""Arrays in, arrays out: which kind a call answers with, and the conversions.

transformers users pass torch tensors and expect torch tensors back; fastgpt computes on
NumPy arrays. The rule: a call whose array inputs include a torch tensor, or that asks
``return_tensors="pt"``, answers with torch tensors (sharing the NumPy result's memory
when it is writable); NumPy or list inputs get NumPy arrays. torch is never imported
here: a tensor can only exist if the caller has imported torch already, so
``sys.modules`` tells whether one could have been passed.

Non-goals: devices other than the CPU, autograd (see ``OutOfScopeError``).
"""

from __future__ import annotations

import functools
import sys

import numpy as np

OUT_OF_SCOPE = "fastgpt runs GPT-2 inference on the CPU; training, gradients and GPUs are out of scope"


class OutOfScopeError(NotImplementedError):
    """Something transformers does that fastgpt deliberately does not: training, autograd, GPUs."""

    def __init__(self, what: str):
        super().__init__(f"{what}: {OUT_OF_SCOPE}")


def loaded_torch():
    """The torch module if the caller has imported it, else None (never imports it)."""
    return sys.modules.get("torch")


def is_tensor(value) -> bool:
    torch = loaded_torch()
    return torch is not None and isinstance(value, torch.Tensor)


def check_device(device, where: str) -> None:
    """Accept the CPU in any spelling ("cpu", torch.device("cpu"), -1); refuse the rest."""
    name = device if isinstance(device, str) else getattr(device, "type", device)
    if name in (None, "cpu", -1) or (isinstance(name, str) and name.startswith("cpu")):
        return
    raise OutOfScopeError(f"{where}: device {device!r}")


def to_numpy(value, name: str) -> np.ndarray:
    """A NumPy view of a tensor (no copy on the CPU), or ``np.asarray`` of anything else."""
    if is_tensor(value):
        check_device(value.device, name)
        return value.detach().numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except ValueError as e:        # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of numbers: {e}") from None


def wants_torch(*values, return_tensors: str | None = None) -> bool:
    """Whether a call with these inputs answers with torch tensors."""
    if return_tensors is not None:
        return check_return_tensors(return_tensors) == "pt"
    return any(is_tensor(v) for v in values)


def check_return_tensors(return_tensors):
    if return_tensors not in (None, "np", "pt"):
        raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r} "
                         "(TensorFlow and JAX tensors are not supported)")
    if return_tensors == "pt" and loaded_torch() is None:
        import torch  # noqa: F401  (the caller asked for torch tensors, so torch must be installed)
    return return_tensors


def as_output(value, torch_out: bool):
    """``value`` (an array, a scalar array, or a tuple/list of them) in the call's kind."""
    if not torch_out or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(as_output(v, True) for v in value)
    if not isinstance(value, np.ndarray):
        return value
    torch = loaded_torch()
    if value.flags.writeable and value.dtype.isnative and all(s >= 0 for s in value.strides):
        return torch.from_numpy(value)
    # Read-only memory (a memory-mapped checkpoint) must not be written through a tensor: copy.
    return torch.tensor(value)


@functools.lru_cache(maxsize=1)
def _no_backward():
    torch = loaded_torch()

    class NoBackward(torch.autograd.Function):
        """Identity whose gradient is our error: ``loss.backward()`` says what is out of scope."""

        @staticmethod
        def forward(ctx, value):
            return value.clone()

        @staticmethod
        def backward(ctx, grad):
            raise OutOfScopeError("loss.backward()")

    return NoBackward


def as_loss(loss: np.ndarray | None, torch_out: bool):
    """A scalar loss in the call's kind. Outside ``torch.no_grad()`` a torch loss is attached
    to a graph whose ``backward`` raises ``OutOfScopeError``, as training code would call it."""
    if not torch_out or loss is None:
        return loss
    torch = loaded_torch()
    value = torch.from_numpy(loss)
    if not torch.is_grad_enabled():
        return value
    return _no_backward().apply(value.requires_grad_())
