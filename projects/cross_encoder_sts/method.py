"""A cross-encoder for STS-B, initialised from all-MiniLM-L6-v2, registered as a model of its own.

BERT's sentence-pair regression on STS-B (Devlin et al., NAACL 2019, arXiv 1810.04805): both sentences in one
forward pass, a one-logit head, trained on score / 5 with binary cross-entropy (sentence-transformers'
cross-encoder STS recipe). It is the teacher that the distillation projects consume by registry alias
(`models:/cross_encoder_sts@champion`): distilled_sentence_embedding distils it into a bi-encoder.

Everything is paperline.ml.cross_encoder (sentence-transformers' CrossEncoder, its trainer and loss); this file
maps the config to it. The model is logged as an MLflow pyfunc whose `predict` takes [sentence1, sentence2]
pairs and returns scores in [0, 1].

References:
    - Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
      NAACL 2019, arXiv 1810.04805
    - sentence-transformers' cross-encoder STS example (training_stsbenchmark.py, v6.2)

Inputs (data kinds):
    `scored_pairs` (STS-B train to fit, dev and test to score).

Example:
    paperline run cross_encoder_sts --config smoke
    paperline run cross_encoder_sts train.learning_rate=2e-5
"""

from __future__ import annotations

import time

from pydantic import Field

from paperline.core.config import ProjectConfig
from paperline.ml import cross_encoder
from paperline.project.interface import Evaluation, ProjectData, PyfuncSpec, RunContext, TrainedModel
from paperline.project.sections import EvaluateSection, FitSection


class Train(FitSection):
    dataset: str = "stsb"
    learning_rate: float = Field(8e-5, gt=0)  # see configs/default.yaml: 2e-5 leaves the new head undertrained
    both_orders: bool = True  # train on (a, b) and (b, a): the head is not symmetric by construction
    max_length: int = Field(128, ge=8)  # tokens of the joined pair; STS-B pairs: mean 28, max 125
    checkpoint_every: int = Field(200, ge=1)


class Evaluate(EvaluateSection):
    both_orders: bool = False  # average the scores of both orders (off: one order, as papers report)
    # the baseline is the base bi-encoder's cosine Spearman: what the cross-encoder should beat


class Config(ProjectConfig):
    train: Train = Train()
    evaluate: Evaluate = Evaluate()


def _pairs(rows) -> list[tuple[str, str]]:
    return [(r.sentence1, r.sentence2) for r in rows]


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Fine-tune a one-logit cross-encoder on STS-B train (score / 5); resumable from its checkpoints."""
    t = cfg.train
    rows = data.read(t.dataset, "train", t.max_rows)
    model = cross_encoder.load_cross_encoder(cfg.base_model, max_length=t.max_length)
    result = cross_encoder.train(model, _pairs(rows), [r.score / 5.0 for r in rows],
                                 t.settings(ctx.workdir / "checkpoints", cfg.seed, ctx.progress),
                                 both_orders=t.both_orders)
    folder = ctx.workdir / "cross_encoder"
    model.save(str(folder))
    metrics = {**result.metrics(), "train_pairs": len(rows) * (2 if t.both_orders else 1)}
    serving = PyfuncSpec(**cross_encoder.pyfunc_kwargs(folder, t.max_length))
    return TrainedModel(path=folder, flavor="pyfunc", serving=serving, metrics=metrics, notes=result.notes())


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS Spearman x100 of the cross-encoder's scores and, in the same run, of the base bi-encoder's cosines."""
    from sentence_transformers.cross_encoder import CrossEncoder

    e = cfg.evaluate
    splits = e.rows(data)
    scorer = CrossEncoder(str(model.path))
    metrics: dict[str, float] = {}
    for split, rows in splits.items():
        began = time.perf_counter()
        scores = cross_encoder.predict(scorer, _pairs(rows), e.batch_size, both_orders=e.both_orders)
        metrics[e.metric_name(split)] = cross_encoder.spearman(scores, [r.score for r in rows])
        metrics[f"{split}_pairs_per_second"] = len(rows) / (time.perf_counter() - began)
    return Evaluation(metrics={**metrics, **e.baseline_metrics(cfg.base_model, splits)})
