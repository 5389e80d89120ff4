"""Distilled Sentence Embedding (DSE): distil a cross-encoder into a bi-encoder with a pair head.

Barkan et al., "Scalable Attentive Sentence-Pair Modeling via Distilled Sentence Embedding", AAAI 2020 (arXiv
1908.05161; reference implementation microsoft/Distilled-Sentence-Embedding). The teacher is the registered
cross-encoder (`upstream.teacher` in the config: `models:/cross_encoder_sts@champion`, produced by that
project's flow first if it has no champion); the student is all-MiniLM-L6-v2 with the pair head of dse.py,
trained on STS-B train with (1 - alpha) * MSE to the gold score / 5 + alpha * squared error to the teacher's
score. One run trains and evaluates the arms the paper compares: the teacher, the DSE student (alpha = 0.5) and
the same student without distillation (alpha = 0).

The model registered is the DSE student, as an MLflow pyfunc whose `predict` takes [sentence1, sentence2] pairs
and returns scores.

References:
    - Barkan et al., "Scalable Attentive Sentence-Pair Modeling via Distilled Sentence Embedding", AAAI 2020,
      arXiv 1908.05161
    - reference implementation: github.com/microsoft/Distilled-Sentence-Embedding

Inputs (data kinds):
    `scored_pairs` (STS-B train with gold scores; dev and test to score), and the upstream model `teacher` (a
    registered cross-encoder pyfunc).

Example:
    paperline run distilled_sentence_embedding --config smoke
    paperline run distilled_sentence_embedding train.alpha=0.8
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from paperline.core.config import ProjectConfig
from paperline.data import derived
from paperline.ml import cross_encoder
from paperline.ml.models import load_sentence_transformer
from paperline.ml.training import fit
from paperline.project.interface import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.project.metrics import with_prefix
from paperline.project.sections import PAIRS_EXAMPLE, EvaluateSection, FitSection, pyfunc_spec, scored_pairs_dataset

from . import dse
from .teacher import pairs as _pairs
from .teacher import teacher_scores

HERE = Path(__file__).resolve().parent


class Train(FitSection):
    dataset: str = "stsb"
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the teacher term; the paper's STS-B setting is a tuned mix
    control_alpha: float | None = Field(0.0, ge=0, le=1)  # the comparison arm in the same run; null skips it
    head_hidden: int = Field(512, ge=1)
    head_learning_rate: float = Field(1e-3, gt=0)  # a new head moves little at the encoder's learning_rate
    teacher_both_orders: bool = True  # the teacher's target is its mean over (a, b) and (b, a)
    teacher_batch_size: int = Field(64, ge=1)
    checkpoint_every: int = Field(200, ge=1)

    def arms(self) -> list[float]:
        """The DSE arm first, then the control arm (the same student without the teacher) unless it is off."""
        return [self.alpha] + ([self.control_alpha] if self.control_alpha not in (None, self.alpha) else [])


class Evaluate(EvaluateSection):
    teacher: bool = True  # the teacher's own score in the same run
    # baseline: the base encoder's zero-shot cosine score

    def prefixes(self) -> list[str]:
        return [*super().prefixes(), *(["teacher"] if self.teacher else [])]


class Config(ProjectConfig):
    train: Train = Train()
    evaluate: Evaluate = Evaluate()


def _arm(alpha: float) -> str:
    return f"alpha{alpha:g}"


def train_student(cfg: Config, rows: list, targets: list[float], alpha: float, folder: Path, progress: bool) -> dict:
    """One arm: MiniLM + a new pair head, trained with DSE's loss at `alpha`; resumable (paperline.ml.training)."""
    import torch

    t = cfg.train
    if (folder / "student" / dse.HEAD_CONFIG).is_file():
        return {}
    encoder = load_sentence_transformer(cfg.base_model)
    torch.manual_seed(cfg.seed)  # the head's initial weights, the same in every arm
    head = dse.PairHead(encoder.get_embedding_dimension(), t.head_hidden)
    labels = [[r.score / 5.0, s] for r, s in zip(rows, targets)]  # [gold, teacher]: DSELoss splits them
    rows_ds = scored_pairs_dataset(rows, label=labels).remove_columns("score")
    result = fit(encoder, rows_ds, dse.DSELoss(encoder, head, alpha), t.settings(
        folder / "checkpoints", cfg.seed, progress, learning_rate_mapping={r"^head\.": t.head_learning_rate}))
    dse.save_student(encoder, head, folder / "student")
    return result.metrics()


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Score the training pairs with the teacher, then train the DSE arm and the control arm."""
    t = cfg.train
    rows = data.read(t.dataset, "train", t.max_rows)
    began = time.perf_counter()
    targets, scores_file = teacher_scores(cfg, ctx, rows)
    metrics = {"teacher_scoring_seconds": time.perf_counter() - began, "train_pairs": len(rows)}
    outputs = {"teacher_scores": scores_file}
    for alpha in t.arms():
        metrics.update(with_prefix(train_student(cfg, rows, targets, alpha, ctx.workdir / _arm(alpha), ctx.progress),
                                   _arm(alpha)))
        outputs[_arm(alpha)] = ctx.workdir / _arm(alpha) / "student"
    folder = outputs[_arm(t.alpha)]
    serving = pyfunc_spec(HERE / "pyfunc_model.py", {"student": folder}, ["torch", "sentence-transformers", "numpy"],
                          code_paths=[HERE / "dse.py"],
                          metadata={"model_type": "dse-student", "input": "list of [sentence1, sentence2] pairs",
                                    "output": "float32 score per pair (STS score / 5 scale)"},
                          input_example=PAIRS_EXAMPLE)
    return TrainedModel(path=folder, flavor="pyfunc", serving=serving, metrics=metrics, outputs=outputs,
                        notes={"arms": ", ".join(_arm(a) for a in t.arms())})


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS Spearman x100 of the teacher, the DSE student and the alpha-0 student, on the same pairs."""
    e, t = cfg.evaluate, cfg.train
    splits = e.rows(data)
    metrics: dict[str, float] = {}
    for prefix, alpha in zip(["", "control"], t.arms()):
        encoder, head = dse.load_student(model.output(_arm(alpha)))
        for split, rows in splits.items():
            scores = dse.score_pairs(encoder, head, _pairs(rows), e.batch_size).tolist()
            metrics[e.metric_name(split, prefix)] = cross_encoder.spearman(scores, [r.score for r in rows])
    up = ctx.upstream_model("teacher")
    if e.teacher:
        metrics.update(cross_encoder.split_spearman(cross_encoder.load_logged(up.path), splits, e.batch_size,
                                                    name=e.metric_name("{split}", "teacher")))
    metrics.update(e.baseline_metrics(cfg.base_model, splits))
    for split in splits:
        student, teacher_key = e.metric_name(split), e.metric_name(split, "teacher")
        if teacher_key in metrics:  # the paper's measure: the student's relative gap to its teacher, in %
            gap = metrics[teacher_key] - metrics[student]
            metrics[f"{split}_gap_to_teacher_pct"] = 100.0 * gap / metrics[teacher_key]
    scores_sha = derived.sha256_file(model.output("teacher_scores"))
    return Evaluation(metrics=metrics, tags={"dse.teacher": f"{up.name} v{up.version}", "dse.alpha": f"{t.alpha:g}",
                                             "dse.teacher_scores_sha256": scores_sha})
