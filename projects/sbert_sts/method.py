"""SBERT fine-tuning on STS-B, optionally after an NLI stage: the baseline every sentence-embedding paper beats.

- Reimers & Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", EMNLP 2019
  (arXiv 1908.10084): a siamese encoder fine-tuned on STS-B with a regression objective on cosine similarity.
- Su, "CoSENT" (2022) / Li & Li, AnglE (arXiv 2309.12871): the ranking loss on cosine similarities that we use
  by default (`CoSENTLoss`); `cosine` selects SBERT's original `CosineSimilarityLoss`.
- Joshi et al., "L3Cube-MahaSBERT and HindSBERT" (arXiv 2211.11187): train on NLI first (entailment as the
  positive, contradiction as the hard negative, MultipleNegativesRankingLoss), then on STS-B. The `nli_then_sts`
  config runs that recipe in English on the SNLI pairs available here.

Every loss, the trainer and the evaluator are sentence-transformers' own; this file only maps config to them.

References:
    - Reimers & Gurevych, "Sentence-BERT", EMNLP 2019, arXiv 1908.10084
    - Li & Li, "AnglE-optimized Text Embeddings" (CoSENT), arXiv 2309.12871
    - Joshi et al., "L3Cube-MahaSBERT and HindSBERT", arXiv 2211.11187 (nli_then_sts)

Inputs (data kinds):
    `scored_pairs` (STS-B: train for the `cosent`/`cosine` stages, dev and test for evaluation) and, for an `mnrl`
    stage, `nli_pairs` (SNLI dev+test, as (premise, entailment, contradiction) triplets).

Example:
    paperline run sbert_sts --config smoke
    paperline run sbert_sts --config nli_then_sts train.stages.0.epochs=2
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Literal

from pydantic import Field

from paperline.core.config import ProjectConfig, StrictModel
from paperline.data.kinds.nli_pairs import NliPair
from paperline.ml.evaluation import Backend
from paperline.ml.models import load_sentence_transformer
from paperline.ml.ranks import save_on_main
from paperline.ml.training import fit
from paperline.project.interface import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.project.metrics import with_prefix
from paperline.project.sections import EvaluateSection, FitSection, scored_pairs_dataset, sts_evaluation

# `nproc_per_node` > 1 runs `train` under torchrun: every file it writes besides fit's goes through save_on_main
RANK_SAFE = True


class Stage(FitSection):
    """One training stage; stages run in order, each starting from the previous stage's weights."""

    name: str
    dataset: str  # a dataset of `data` in the config
    loss: Literal["cosent", "cosine", "mnrl"]


class Train(StrictModel):
    stages: list[Stage] = Field(min_length=1)


class Evaluate(EvaluateSection):
    # onnx / onnx-int8: score with ONNX Runtime (paperline.ml.fast_encode) when its dev Spearman stays within
    # 0.1 of PyTorch's (checked once per model); the run's tags `stsb_encode_*` say which backend scored
    backend: Backend = "torch"


class Config(ProjectConfig):
    train: Train
    evaluate: Evaluate = Evaluate()


def training_rows(stage: Stage, data: ProjectData, seed: int):
    """The stage's rows as a `datasets.Dataset` in the column layout its loss expects."""
    from datasets import Dataset

    if stage.loss != "mnrl":  # both losses compare a cosine against a similarity in [0, 1]: score / 5
        return scored_pairs_dataset(data.read(stage.dataset, "train"), stage.max_rows)
    # SNLI's train split is not available here; its dev and test splits are the NLI training data
    # (they are never used for evaluation in this project, which evaluates on STS-B).
    rows = [row for split in ("dev", "test") for row in data.read(stage.dataset, split)]
    dataset = Dataset.from_dict(_nli_triplets(rows, seed))
    return dataset.select(range(min(stage.max_rows, len(dataset)))) if stage.max_rows else dataset


def _nli_triplets(rows: list[NliPair], seed: int) -> dict[str, list[str]]:
    """(premise, entailed hypothesis, contradicted hypothesis) for every premise that has both."""
    by_premise: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_premise[row.premise][row.label].append(row.hypothesis)
    triplets = [
        (premise, positive, labels["contradiction"][i % len(labels["contradiction"])])
        for premise, labels in by_premise.items()
        if labels["contradiction"]
        for i, positive in enumerate(labels["entailment"])
    ]
    random.Random(seed).shuffle(triplets)
    return {"anchor": [t[0] for t in triplets], "positive": [t[1] for t in triplets],
            "negative": [t[2] for t in triplets]}


def make_loss(name: str, model):
    from sentence_transformers.sentence_transformer.losses import (
        CoSENTLoss,
        CosineSimilarityLoss,
        MultipleNegativesRankingLoss,
    )

    return {"cosent": CoSENTLoss, "cosine": CosineSimilarityLoss, "mnrl": MultipleNegativesRankingLoss}[name](model)


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Run every stage in order; a finished stage is kept on disk, so a killed job resumes where it was."""
    from sentence_transformers import SentenceTransformer

    model = load_sentence_transformer(cfg.base_model)
    metrics, notes = {}, {}
    for i, stage in enumerate(cfg.train.stages):
        stage_dir = ctx.workdir / f"stage{i}-{stage.name}"
        done = stage_dir / "model"
        if (done / "config.json").is_file():
            model = SentenceTransformer(str(done), device=str(model.device))
            continue
        result = fit(model, training_rows(stage, data, cfg.seed), make_loss(stage.loss, model),
                     stage.settings(stage_dir / "checkpoints", cfg.seed, ctx.progress))
        save_on_main(model.save, str(done))  # rank 0 writes, every rank waits for the finished folder
        metrics.update(with_prefix(result.metrics(), stage.name))
        notes.update(with_prefix(result.notes(), stage.name))
    final = ctx.workdir / "model"
    save_on_main(model.save, str(final))
    return TrainedModel(path=final, metrics=metrics, notes=notes)


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS Spearman x100 of the trained model and, in the same run, of the untrained base model."""
    return sts_evaluation(model.path, cfg, data, cfg.evaluate.backend)
