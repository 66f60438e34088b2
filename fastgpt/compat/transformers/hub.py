"""Model names to folders, offline: a folder, a bundled model, or the local Hugging Face cache.

``from_pretrained("gpt2")`` in transformers downloads into the Hugging Face cache and reads
from there afterwards. fastgpt never downloads, but reads the same cache, laid out by
huggingface_hub as ``<cache>/models--<org>--<name>/snapshots/<commit>/`` with
``refs/<revision>`` holding the commit of a branch or tag. The cache folder is found the
way huggingface_hub finds it (``cache_dir=``, then ``HF_HUB_CACHE``, the older
``HUGGINGFACE_HUB_CACHE``, ``HF_HOME/hub``, ``XDG_CACHE_HOME/huggingface/hub``,
``~/.cache/huggingface/hub``); huggingface_hub itself is not needed.

The GPT-2 checkpoints moved on the Hub (``gpt2`` is now ``openai-community/gpt2``,
``distilgpt2`` is ``distilbert/distilgpt2``); a cache may hold either name, so both are tried.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ...registry import ModelNotFoundError, resolve_model_path

#: Hub names of OpenAI's GPT-2 family: all share GPT-2's vocabulary, which fastgpt bundles.
GPT2_FAMILY = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}
GPT2_VOCAB_NAMES = frozenset(GPT2_FAMILY) | frozenset(GPT2_FAMILY.values())
_OLD_NAME = {new: old for old, new in GPT2_FAMILY.items()}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache_dir(cache_dir=None) -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub chooses it."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(os.path.expandvars(env[key])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _repo_names(name: str) -> list[str]:
    names = [name]
    alias = GPT2_FAMILY.get(name) or _OLD_NAME.get(name)
    if alias:
        names.append(alias)
    return names


def _snapshot(repo: Path, revision: str) -> Path | None:
    if _COMMIT.match(revision) and (repo / "snapshots" / revision).is_dir():
        return repo / "snapshots" / revision
    ref = repo / "refs" / revision
    if not ref.is_file():
        return None
    commit = ref.read_text(encoding="utf-8").strip()
    folder = repo / "snapshots" / commit
    return folder if folder.is_dir() else None


def find_in_cache(name: str, cache_dir=None, revision: str | None = None) -> tuple[Path | None, list[Path]]:
    """(snapshot folder or None, the repo folders looked at)."""
    cache = hub_cache_dir(cache_dir)
    looked = []
    for repo_id in _repo_names(name):
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        looked.append(repo)
        folder = _snapshot(repo, revision or "main")
        if folder is not None:
            return folder, looked
    return None, looked


def resolve(name_or_path, *, cache_dir=None, revision: str | None = None, needs: str = "config.json") -> Path:
    """The folder for a path, a bundled model name, or a Hub name found in the local cache."""
    try:
        return resolve_model_path(name_or_path)
    except ModelNotFoundError as not_local:
        name = str(name_or_path)
        if Path(name).exists() or not _looks_like_repo_id(name):
            raise
        folder, looked = find_in_cache(name, cache_dir, revision)
        if folder is not None and (folder / needs).is_file():
            return folder
        where = ", ".join(str(p) for p in looked)
        found = f" ({folder} has no {needs})" if folder is not None else ""
        raise ModelNotFoundError(
            f"{not_local}. Nor is {name!r} in the local Hugging Face cache: looked for "
            f"{where}{found} at revision {revision or 'main'!r}. fastgpt never downloads: on a connected "
            f"machine run `huggingface-cli download {name}` (it fills that cache; copy the cache over, or "
            f"set HF_HUB_CACHE to it), or pass the folder's path"
        ) from None


def _looks_like_repo_id(name: str) -> bool:
    return bool(name) and name.count("/") <= 1 and not name.startswith(("/", ".", "~"))
