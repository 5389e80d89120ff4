"""SBERT fine-tuning on STS-B, optionally after an NLI stage: the baseline every sentence-embedding paper beats.

- Reimers & Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", EMNLP 2019
  (arXiv 1908.10084): a siamese encoder fine-tuned on STS-B with a regression objective on cosine similarity.
- Su, "CoSENT" (2022) / Li & Li, AnglE (arXiv 2309.12871): the ranking loss on cosine similarities that we use
  by default (`CoSENTLoss`); `cosine` selects SBERT's original `CosineSimilarityLoss`.
- Joshi et al., "L3Cube-MahaSBERT and HindSBERT" (arXiv 2211.11187): train on NLI first (entailment as the
  positive, contradiction as the hard negative, MultipleNegativesRankingLoss), then on STS-B. The `nli_then_sts`
  config runs that recipe in English on the SNLI pairs available here.

Every loss, the trainer and the evaluator are sentence-transformers' own; this file only maps config to them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from pydantic import Field

from paperline.config import ProjectConfig, StrictModel
from paperline.data import NliPair, ScoredPair
from paperline.evaluation import sts_metrics
from paperline.models import load_sentence_transformer
from paperline.projects import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.training import TrainSettings, fit


class Stage(StrictModel):
    """One training stage; stages run in order, each starting from the previous stage's weights."""

    name: str
    dataset: str  # a dataset of `data` in the config
    loss: Literal["cosent", "cosine", "mnrl"]
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=2)
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_rows: int | None = Field(None, ge=2)  # cap on training rows, for smoke runs
    max_steps: int = -1  # > 0 caps the optimizer steps, for smoke runs
    group_by_length: bool = False  # batches of similar lengths: less padding, see paperline.batching


class Train(StrictModel):
    stages: list[Stage] = Field(min_length=1)
    checkpoint_every: int = Field(100, ge=1)
    device: str = "auto"


class Evaluate(StrictModel):
    dataset: str = "stsb"
    splits: list[str] = ["dev", "test"]
    baseline: bool = True  # also score the untrained base model, the zero-shot number the paper starts from
    max_rows: int | None = Field(None, ge=2)  # cap on evaluation rows, for smoke runs


class Config(ProjectConfig):
    train: Train
    evaluate: Evaluate = Evaluate()


def training_rows(stage: Stage, data: ProjectData, seed: int):
    """The stage's rows as a `datasets.Dataset` in the column layout its loss expects."""
    from datasets import Dataset

    rows = data.read(stage.dataset, "train") if stage.loss != "mnrl" else _nli_rows(data, stage.dataset)
    if stage.loss == "mnrl":
        columns = _nli_triplets(rows, seed)
    else:
        columns = {
            "sentence1": [r.sentence1 for r in rows],
            "sentence2": [r.sentence2 for r in rows],
            "score": [r.score / 5.0 for r in rows],  # both losses compare against a similarity in [0, 1]
        }
    dataset = Dataset.from_dict(columns)
    if stage.max_rows:
        dataset = dataset.select(range(min(stage.max_rows, len(dataset))))
    return dataset


def _nli_rows(data: ProjectData, dataset: str) -> list[NliPair]:
    # SNLI's train split is not available here; its dev and test splits are the NLI training data
    # (they are never used for evaluation in this project, which evaluates on STS-B).
    return [row for split in ("dev", "test") for row in data.read(dataset, split)]


def _nli_triplets(rows: list[NliPair], seed: int) -> dict[str, list[str]]:
    """(premise, entailed hypothesis, contradicted hypothesis) for every premise that has both."""
    import random

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
    return {
        "anchor": [t[0] for t in triplets],
        "positive": [t[1] for t in triplets],
        "negative": [t[2] for t in triplets],
    }


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
    info: dict[str, float] = {}
    for i, stage in enumerate(cfg.train.stages):
        stage_dir = ctx.workdir / f"stage{i}-{stage.name}"
        done = stage_dir / "model"
        if (done / "config.json").is_file():
            model = SentenceTransformer(str(done), device=str(model.device))
            continue
        result = fit(
            model,
            training_rows(stage, data, cfg.seed),
            make_loss(stage.loss, model),
            TrainSettings(
                output_dir=stage_dir / "checkpoints",
                epochs=stage.epochs,
                batch_size=stage.batch_size,
                learning_rate=stage.learning_rate,
                warmup_ratio=stage.warmup_ratio,
                seed=cfg.seed,
                checkpoint_every=cfg.train.checkpoint_every,
                max_steps=stage.max_steps,
                device=cfg.train.device,
                progress=ctx.progress,
                group_by_length=stage.group_by_length,
            ),
        )
        model.save(str(done))
        info.update({f"{stage.name}_{k}": v for k, v in vars(result).items() if isinstance(v, (int, float))})
        info[f"{stage.name}_device"] = result.device
        info[f"{stage.name}_precision"] = result.precision
    final = ctx.workdir / "model"
    model.save(str(final))
    return TrainedModel(path=final, flavor="sentence_transformers", info=info)


def evaluate(model: TrainedModel | None, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS Spearman x100 of the trained model and, in the same run, of the untrained base model."""
    from sentence_transformers import SentenceTransformer

    splits: dict[str, list[ScoredPair]] = {}
    for split in cfg.evaluate.splits:
        rows = data.read(cfg.evaluate.dataset, split)
        splits[split] = rows[: cfg.evaluate.max_rows] if cfg.evaluate.max_rows else rows
    metrics = {}
    if model is not None:
        metrics.update(sts_metrics(SentenceTransformer(str(model.path)), splits, prefix=cfg.evaluate.dataset))
    if cfg.evaluate.baseline:
        base = load_sentence_transformer(cfg.base_model)
        metrics.update(sts_metrics(base, splits, prefix=f"baseline_{cfg.evaluate.dataset}"))
    return Evaluation(metrics=metrics)
