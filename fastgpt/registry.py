"""Where a model argument points: a checkpoint folder on disk, or a model bundled with fastgpt.

Bundled models live in ``fastgpt/models/<name>/`` as ordinary Hugging Face folders. Nothing
is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "kjv-tiny"


class ModelNotFoundError(ValueError):
    """The model argument is neither a checkpoint folder nor a bundled model name."""


def bundled_models() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model_path(name_or_path) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path}: is a file; pass the checkpoint folder that contains config.json")
    names = bundled_models()
    if str(name_or_path) in names:
        return BUNDLED_DIR / str(name_or_path)
    listed = ", ".join(names) if names else "none in this install"
    raise ModelNotFoundError(
        f"{name_or_path!s}: no such folder and not a bundled model (bundled: {listed}); "
        "a path to a Hugging Face GPT-2 folder (config.json + model.safetensors) works too"
    )
