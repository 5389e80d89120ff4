"""The common start of every arm and the frozen entry spaces, built once per run folder and reused on resume.

Project plumbing around the paper's pieces (defsent.py): the `untrained` arm is saved once, so every arm starts
from the same bytes; the entry matrices are cached as .npy files; the definitions with their entry labels are the
rows every arm trains on. `Start` is the config section of the weakened start (the paper starts from raw BERT;
MiniLM is already a sentence encoder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from paperline.core.config import StrictModel
from paperline.ml.models import load_sentence_transformer
from paperline.project.interface import ProjectData

from . import defsent


class Start(StrictModel):
    """How the encoder starts (the `untrained` arm). Both null/0: the base model as it is."""

    keep_layers: int | None = Field(None, ge=1)  # keep only the first K transformer layers
    reinit_top_layers: int = Field(0, ge=0)  # then re-initialise the top N of them (seeded)


def start_model(cfg, folder: Path):
    """The `untrained` arm, saved once to `folder` and loaded from there, so every arm starts from the same
    bytes (a re-initialised top is drawn once)."""
    from sentence_transformers import SentenceTransformer

    if not (folder / "config.json").is_file():
        model = load_sentence_transformer(cfg.base_model, device="cpu")
        defsent.weaken(model, cfg.start.keep_layers, cfg.start.reinit_top_layers, cfg.seed)
        model.save(str(folder))
    return SentenceTransformer(str(folder), device="cpu")


def entry_spaces(cfg, data: ProjectData, start, folder: Path) -> tuple[object, dict[str, np.ndarray]]:
    """The entries and, per trained arm, its frozen entry matrix (cached as .npy in `folder`)."""
    e = cfg.entries
    entries = defsent.select_entries(data.read(e.dataset, "train"), e.count, cfg.seed)
    folder.mkdir(parents=True, exist_ok=True)
    raw_file, iso_file = folder / "raw.npy", folder / f"isotropic-{e.isotropy}.npy"
    if not raw_file.is_file():
        np.save(raw_file, defsent.entry_matrix(start, entries, e.encode_batch_size))
    raw = np.load(raw_file)
    if not iso_file.is_file():
        np.save(iso_file, defsent.isotropic(raw, e.isotropy, cfg.seed, e.ica_max_iter))
    return entries, {"raw": raw, "isotropic": np.load(iso_file)}


def training_rows(entries, max_rows: int | None = None):
    """Every definition of every entry with its entry index as the label, as a `datasets.Dataset`."""
    from datasets import Dataset

    texts, labels = entries.rows()
    dataset = Dataset.from_dict({"definition": texts, "label": labels})
    return dataset.select(range(min(max_rows, len(dataset)))) if max_rows else dataset
