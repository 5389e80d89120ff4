"""DefSent+: train a sentence encoder to classify a definition into its dictionary entry, over a frozen entry space.

Liu et al., "DefSent+" (arXiv 2405.16153), reference ryuliuxiaodong/DefSent-Plus; predecessor DefSent
(Tsukagoshi et al., ACL 2021, hppRC/defsent). The pieces are in `defsent.py`; this file maps config to them:

1. the start: the base encoder, optionally weakened (first layers only, or a re-initialised top) because the
   paper starts from raw BERT and MiniLM is already a sentence encoder; saved as the `untrained` arm;
2. the entries: `entries.count` train terms of `definitions` (seeded), each the mean of the start encoder's
   embeddings of all its definitions; the `isotropic` arm whitens (or ICA-transforms) that matrix;
3. one training job per arm (`raw`, `isotropic`) from the same start, same rows, steps and seed, with the entry
   matrix frozen (`DefSentLoss`);
4. evaluation of every arm in the same run: STS-B dev/test Spearman, and reverse-dictionary retrieval on the
   held-out terms of `definitions/test` (definition -> term, terms embedded from the term string).

Inputs (data kinds): `definitions` (train: the entries; test: reverse dictionary), `scored_pairs` (STS-B dev/test).

Example:
    paperline run defsent_plus --config smoke
    paperline run defsent_plus --config weak_start
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from paperline.core.config import ProjectConfig, StrictModel
from paperline.ml.evaluation import sts_results
from paperline.ml.models import load_sentence_transformer
from paperline.ml.training import fit
from paperline.project.discovery import project_module
from paperline.project.interface import (
    Evaluation,
    ProjectData,
    RunContext,
    TrainedModel,
)
from paperline.project.sections import FitSection


def _defsent():
    """The sibling `defsent.py` (projects are folders, not packages)."""
    return project_module(Path(__file__).with_name("defsent.py"))

ARMS = ("untrained", "raw", "isotropic")
TRAINED_ARMS = ("raw", "isotropic")
Arm = Literal["untrained", "raw", "isotropic"]


class Start(StrictModel):
    """How the encoder starts (the `untrained` arm). Both null/0: the base model as it is."""

    keep_layers: int | None = Field(None, ge=1)  # keep only the first K transformer layers
    reinit_top_layers: int = Field(0, ge=0)  # then re-initialise the top N of them (seeded)


class EntrySpace(StrictModel):
    dataset: str = "definitions"
    count: int | None = Field(2000, ge=2)  # train terms used as entries (seeded choice); null: every train term
    isotropy: Literal["whitening", "ica"] = "whitening"  # the isotropic arm's transform
    ica_max_iter: int = Field(200, ge=1)
    encode_batch_size: int = Field(128, ge=1)


class Train(FitSection):
    batch_size: int = Field(32, ge=2)
    logit_scale: float = Field(20.0, gt=0)  # logits = scale * embedding . entry (unit-length entry rows)
    normalize_entries: bool = True


class Evaluate(StrictModel):
    headline: Arm = "isotropic"  # the arm whose metrics go unprefixed, and whose encoder is the logged model
    sts_dataset: str = "stsb"
    sts_splits: list[str] = Field(default_factory=lambda: ["dev", "test"])
    revdict_split: str = "test"  # of the entry space's dataset; its terms never occur in train
    max_rows: int | None = Field(None, ge=2)  # cap on STS pairs and on reverse-dictionary queries (smoke runs)
    batch_size: int = Field(128, ge=1)

    def arm_metrics(self) -> list[str]:
        sts = [f"{self.sts_dataset}_{split}_spearman" for split in self.sts_splits]
        return sts + [f"revdict_{self.revdict_split}_mrr", f"revdict_{self.revdict_split}_top10"]


class Config(ProjectConfig):
    start: Start = Start()
    entries: EntrySpace = EntrySpace()
    train: Train = Train()
    evaluate: Evaluate = Evaluate()

    @model_validator(mode="after")
    def _weak_start_fits(self) -> Config:
        if self.start.keep_layers is not None and self.start.reinit_top_layers > self.start.keep_layers:
            raise ValueError(f"start.reinit_top_layers ({self.start.reinit_top_layers}) exceeds start.keep_layers "
                             f"({self.start.keep_layers}); lower it")
        return self

    def metric_names(self) -> set[str]:
        """The headline arm's metrics unprefixed (`stsb_test_spearman`, `revdict_test_mrr`), and every arm's
        with its name in front (`raw_revdict_test_mrr`)."""
        names = self.evaluate.arm_metrics()
        return set(names) | {f"{arm}_{name}" for arm in ARMS for name in names}


# ---- train: the start, the entry spaces, one job per trained arm ------------------------------------------------


def start_model(cfg: Config, folder: Path):
    """The `untrained` arm, saved once to `folder` and loaded from there, so every arm starts from the same
    bytes (a re-initialised top is drawn once)."""
    from sentence_transformers import SentenceTransformer

    if not (folder / "config.json").is_file():
        model = load_sentence_transformer(cfg.base_model, device="cpu")
        _defsent().weaken(model, cfg.start.keep_layers, cfg.start.reinit_top_layers, cfg.seed)
        model.save(str(folder))
    return SentenceTransformer(str(folder), device="cpu")


def entry_spaces(cfg: Config, data: ProjectData, start, folder: Path) -> tuple[object, dict[str, np.ndarray]]:
    """The entries and, per trained arm, its frozen entry matrix (cached as .npy in `folder`)."""
    e = cfg.entries
    entries = _defsent().select_entries(data.read(e.dataset, "train"), e.count, cfg.seed)
    folder.mkdir(parents=True, exist_ok=True)
    raw_file, iso_file = folder / "raw.npy", folder / f"isotropic-{e.isotropy}.npy"
    if not raw_file.is_file():
        np.save(raw_file, _defsent().entry_matrix(start, entries, e.encode_batch_size))
    raw = np.load(raw_file)
    if not iso_file.is_file():
        np.save(iso_file, _defsent().isotropic(raw, e.isotropy, cfg.seed, e.ica_max_iter))
    return entries, {"raw": raw, "isotropic": np.load(iso_file)}


def training_rows(entries, max_rows: int | None = None):
    """Every definition of every entry with its entry index as the label, as a `datasets.Dataset`."""
    from datasets import Dataset

    texts, labels = entries.rows()
    dataset = Dataset.from_dict({"definition": texts, "label": labels})
    return dataset.select(range(min(max_rows, len(dataset)))) if max_rows else dataset


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Build the start and the entry spaces, then train each arm from the start; a finished arm is kept on disk,
    so a killed job resumes where it was."""
    from sentence_transformers import SentenceTransformer

    untrained = ctx.workdir / "untrained"
    start = start_model(cfg, untrained)
    entries, spaces = entry_spaces(cfg, data, start, ctx.workdir / "entries")
    rows = training_rows(entries, cfg.train.max_rows)
    metrics: dict[str, float] = {"entries": len(entries.terms), "training_definitions": len(rows)}
    metrics.update({f"{arm}_entry_anisotropy": _defsent().anisotropy(m) for arm, m in spaces.items()})
    notes = {"isotropy": cfg.entries.isotropy}
    outputs = {"untrained": untrained}
    for arm in TRAINED_ARMS:
        done = ctx.workdir / f"arm-{arm}" / "model"
        outputs[arm] = done
        if (done / "config.json").is_file():
            continue
        model = SentenceTransformer(str(untrained), device="cpu")
        loss = _defsent().DefSentLoss(model, spaces[arm], cfg.train.logit_scale, cfg.train.normalize_entries)
        result = fit(model, rows, loss, cfg.train.settings(ctx.workdir / f"arm-{arm}" / "checkpoints", cfg.seed,
                                                            ctx.progress))
        model.save(str(done))
        (done.parent / "train.json").write_text(json.dumps(result.metrics()))
        notes.update({f"{arm}_{k}": v for k, v in result.notes().items()})
    for arm in TRAINED_ARMS:  # a resumed job reports the arms it skipped too
        saved = json.loads((ctx.workdir / f"arm-{arm}" / "train.json").read_text())
        metrics.update({f"{arm}_{k}": v for k, v in saved.items()})
    return TrainedModel(path=outputs[cfg.evaluate.headline], metrics=metrics, notes=notes, outputs=outputs)


# ---- evaluate: every arm, in the same run -------------------------------------------------------------------


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS-B dev/test Spearman x100 and reverse-dictionary MRR / top-10 x100 of every arm; the headline arm's
    metrics also go unprefixed, and its STS predictions are plotted."""
    from sentence_transformers import SentenceTransformer

    e = cfg.evaluate
    sts = {split: data.read(e.sts_dataset, split, e.max_rows) for split in e.sts_splits}
    queries = data.read(cfg.entries.dataset, e.revdict_split, e.max_rows)
    metrics: dict[str, float] = {}
    table: dict[str, list] = {"arm": []}
    predictions = {}
    for arm in ARMS:
        encoder = SentenceTransformer(str(model.output(arm)))
        arm_metrics, arm_predictions = sts_results(encoder, sts, prefix=e.sts_dataset)
        retrieval = _defsent().reverse_dictionary(encoder, queries, e.batch_size)
        arm_metrics[f"revdict_{e.revdict_split}_mrr"] = retrieval["mrr"]
        arm_metrics[f"revdict_{e.revdict_split}_top10"] = retrieval["top10"]
        arm_metrics[f"revdict_{e.revdict_split}_top1"] = retrieval["top1"]
        metrics.update({f"{arm}_{k}": v for k, v in arm_metrics.items()})
        if arm == e.headline:
            metrics.update(arm_metrics)
            predictions = arm_predictions
        table["arm"].append(arm)
        for name, value in arm_metrics.items():
            table.setdefault(name, []).append(round(value, 2))
    tags = {"paperline.defsent_plus.headline": e.headline, "paperline.defsent_plus.isotropy": cfg.entries.isotropy}
    return Evaluation(metrics=metrics, tables={"arms": table}, predictions=predictions, tags=tags)
