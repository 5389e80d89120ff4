"""DefSent+: train a sentence encoder to classify a definition into its dictionary entry, over a frozen entry space.

Liu et al., "DefSent+" (arXiv 2405.16153), reference ryuliuxiaodong/DefSent-Plus; predecessor DefSent
(Tsukagoshi et al., ACL 2021, hppRC/defsent). The pieces are in `defsent.py`, the shared start, the cached entry
spaces and the training rows in `start.py`; this file maps config to them:

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
from typing import Literal

from pydantic import Field, model_validator

from paperline.core.config import ProjectConfig, StrictModel
from paperline.ml.evaluation import sts_results
from paperline.ml.training import fit
from paperline.project.interface import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.project.metrics import prefixed, spearman_name, with_prefix
from paperline.project.sections import FitSection

from . import defsent
from .start import Start, entry_spaces, start_model, training_rows

ARMS = ("untrained", "raw", "isotropic")
TRAINED_ARMS = ("raw", "isotropic")
Arm = Literal["untrained", "raw", "isotropic"]


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
        sts = [spearman_name(self.sts_dataset, split) for split in self.sts_splits]
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
        return prefixed(self.evaluate.arm_metrics(), ["", *ARMS])


# ---- train: the start, the entry spaces, one job per trained arm ------------------------------------------------


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Build the start and the entry spaces, then train each arm from the start; a finished arm is kept on disk,
    so a killed job resumes where it was."""
    from sentence_transformers import SentenceTransformer

    untrained = ctx.workdir / "untrained"
    start = start_model(cfg, untrained)
    entries, spaces = entry_spaces(cfg, data, start, ctx.workdir / "entries")
    rows = training_rows(entries, cfg.train.max_rows)
    metrics: dict[str, float] = {"entries": len(entries.terms), "training_definitions": len(rows)}
    metrics.update({f"{arm}_entry_anisotropy": defsent.anisotropy(m) for arm, m in spaces.items()})
    notes = {"isotropy": cfg.entries.isotropy}
    outputs = {"untrained": untrained}
    for arm in TRAINED_ARMS:
        done = ctx.workdir / f"arm-{arm}" / "model"
        outputs[arm] = done
        if (done / "config.json").is_file():
            continue
        model = SentenceTransformer(str(untrained), device="cpu")
        loss = defsent.DefSentLoss(model, spaces[arm], cfg.train.logit_scale, cfg.train.normalize_entries)
        result = fit(model, rows, loss, cfg.train.settings(ctx.workdir / f"arm-{arm}" / "checkpoints", cfg.seed,
                                                            ctx.progress))
        model.save(str(done))
        (done.parent / "train.json").write_text(json.dumps(result.metrics()))
        notes.update(with_prefix(result.notes(), arm))
    for arm in TRAINED_ARMS:  # a resumed job reports the arms it skipped too
        saved = json.loads((ctx.workdir / f"arm-{arm}" / "train.json").read_text())
        metrics.update(with_prefix(saved, arm))
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
        retrieval = defsent.reverse_dictionary(encoder, queries, e.batch_size)
        arm_metrics.update({f"revdict_{e.revdict_split}_{k}": retrieval[k] for k in ("mrr", "top10", "top1")})
        metrics.update(with_prefix(arm_metrics, arm))
        if arm == e.headline:
            metrics.update(arm_metrics)
            predictions = arm_predictions
        table["arm"].append(arm)
        for name, value in arm_metrics.items():
            table.setdefault(name, []).append(round(value, 2))
    tags = {"paperline.defsent_plus.headline": e.headline, "paperline.defsent_plus.isotropy": cfg.entries.isotropy}
    return Evaluation(metrics=metrics, tables={"arms": table}, predictions=predictions, tags=tags)
