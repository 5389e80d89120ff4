"""A cross-encoder for STS-B, initialised from all-MiniLM-L6-v2, registered as a model of its own.

BERT's sentence-pair regression on STS-B (Devlin et al., NAACL 2019, arXiv 1810.04805): both sentences in one
forward pass, a one-logit head, trained on score / 5 with binary cross-entropy (sentence-transformers'
cross-encoder STS recipe). It is the teacher that the distillation projects consume by registry alias
(`models:/cross_encoder_sts@champion`): distilled_sentence_embedding distils it into a bi-encoder.

Everything is paperline.cross_encoder (sentence-transformers' CrossEncoder, its trainer and loss); this file
maps the config to it. The model is logged as an MLflow pyfunc whose `predict` takes [sentence1, sentence2]
pairs and returns scores in [0, 1].
"""

from __future__ import annotations

import time

from pydantic import Field

from paperline import cross_encoder
from paperline.config import ProjectConfig, StrictModel
from paperline.data import ScoredPair
from paperline.evaluation import sts_metrics
from paperline.models import load_sentence_transformer
from paperline.projects import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.training import TrainSettings


class Train(StrictModel):
    dataset: str = "stsb"
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=2)
    learning_rate: float = Field(8e-5, gt=0)  # see configs/default.yaml: 2e-5 leaves the new head undertrained
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    both_orders: bool = True  # train on (a, b) and (b, a): the head is not symmetric by construction
    max_length: int = Field(128, ge=8)  # tokens of the joined pair; STS-B pairs: mean 28, max 125
    group_by_length: bool = False  # length-grouped batches (paperline.batching): less padding on a CPU
    checkpoint_every: int = Field(200, ge=1)
    max_rows: int | None = Field(None, ge=2)  # cap on training pairs, for smoke runs
    max_steps: int = -1  # > 0 caps the optimizer steps, for smoke runs
    device: str = "auto"


class Evaluate(StrictModel):
    dataset: str = "stsb"
    splits: list[str] = ["dev", "test"]
    both_orders: bool = False  # average the scores of both orders (off: one order, as papers report)
    baseline: bool = True  # also the base bi-encoder's cosine Spearman: what the cross-encoder should beat
    batch_size: int = Field(64, ge=1)
    max_rows: int | None = Field(None, ge=2)


class Config(ProjectConfig):
    train: Train = Train()
    evaluate: Evaluate = Evaluate()


def _pairs(rows: list[ScoredPair]) -> list[tuple[str, str]]:
    return [(r.sentence1, r.sentence2) for r in rows]


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Fine-tune a one-logit cross-encoder on STS-B train (score / 5); resumable from its checkpoints."""
    t = cfg.train
    rows = data.read(t.dataset, "train")
    rows = rows[: t.max_rows] if t.max_rows else rows
    model = cross_encoder.load_cross_encoder(cfg.base_model, max_length=t.max_length)
    result = cross_encoder.train(
        model, _pairs(rows), [r.score / 5.0 for r in rows],
        TrainSettings(output_dir=ctx.workdir / "checkpoints", epochs=t.epochs, batch_size=t.batch_size,
                      learning_rate=t.learning_rate, warmup_ratio=t.warmup_ratio, seed=cfg.seed,
                      checkpoint_every=t.checkpoint_every, max_steps=t.max_steps, device=t.device,
                      progress=ctx.progress, group_by_length=t.group_by_length),
        both_orders=t.both_orders,
    )
    folder = ctx.workdir / "cross_encoder"
    model.save(str(folder))
    info = {k: v for k, v in vars(result).items() if isinstance(v, (int, float))}
    info["train_pairs"] = len(rows) * (2 if t.both_orders else 1)
    return TrainedModel(path=folder, flavor="pyfunc",
                        info={**info, "pyfunc": cross_encoder.pyfunc_kwargs(folder, t.max_length)})


def evaluate(model: TrainedModel | None, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS Spearman x100 of the cross-encoder's scores and, in the same run, of the base bi-encoder's cosines."""
    from sentence_transformers.cross_encoder import CrossEncoder

    e = cfg.evaluate
    splits = {}
    for split in e.splits:
        rows = data.read(e.dataset, split)
        splits[split] = rows[: e.max_rows] if e.max_rows else rows
    metrics: dict[str, float] = {}
    if model is not None:
        scorer = CrossEncoder(str(model.path))
        for split, rows in splits.items():
            began = time.perf_counter()
            scores = cross_encoder.predict(scorer, _pairs(rows), e.batch_size, both_orders=e.both_orders)
            metrics[f"{e.dataset}_{split}_spearman"] = cross_encoder.spearman(scores, [r.score for r in rows])
            metrics[f"{split}_pairs_per_second"] = len(rows) / (time.perf_counter() - began)
    if e.baseline:
        base = load_sentence_transformer(cfg.base_model)
        metrics.update(sts_metrics(base, splits, prefix=f"baseline_{e.dataset}"))
    return Evaluation(metrics=metrics)
