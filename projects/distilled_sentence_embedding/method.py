"""Distilled Sentence Embedding (DSE): distil a cross-encoder into a bi-encoder with a pair head.

Barkan et al., "Scalable Attentive Sentence-Pair Modeling via Distilled Sentence Embedding", AAAI 2020 (arXiv
1908.05161; reference implementation microsoft/Distilled-Sentence-Embedding). The teacher is the registered
cross-encoder (`upstream.teacher` in the config: `models:/cross_encoder_sts@champion`, produced by that
project's flow first if it has no champion); the student is all-MiniLM-L6-v2 with the pair head of dse.py,
trained on STS-B train with (1 - alpha) * MSE to the gold score / 5 + alpha * squared error to the teacher's
score. One run trains and evaluates the arms the paper compares: the teacher, the DSE student (alpha = 0.5) and
the same student without distillation (alpha = 0).

The interface the flows call (paperline.projects): `Config`, `train`, `evaluate`. The model registered is the
DSE student, as an MLflow pyfunc whose `predict` takes [sentence1, sentence2] pairs and returns scores.
"""

from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

from pydantic import Field

from paperline import cross_encoder
from paperline.config import ProjectConfig, StrictModel
from paperline.data import ScoredPair
from paperline.evaluation import sts_metrics
from paperline.models import load_sentence_transformer
from paperline.projects import Evaluation, ProjectData, RunContext, TrainedModel, project_module
from paperline.training import TrainSettings, fit

HERE = Path(__file__).resolve().parent


def _sibling(name: str):
    return project_module(HERE / f"{name}.py")


dse = _sibling("dse")


class Train(StrictModel):
    dataset: str = "stsb"
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the teacher term; the paper's STS-B setting is a tuned mix
    control_alpha: float | None = Field(0.0, ge=0, le=1)  # the comparison arm in the same run; null skips it
    head_hidden: int = Field(512, ge=1)
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=2)
    learning_rate: float = Field(2e-5, gt=0)  # the encoder's
    head_learning_rate: float = Field(1e-3, gt=0)  # a new head moves little at an encoder's rate
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    teacher_both_orders: bool = True  # the teacher's target is its mean over (a, b) and (b, a)
    teacher_batch_size: int = Field(64, ge=1)
    group_by_length: bool = False
    checkpoint_every: int = Field(200, ge=1)
    max_rows: int | None = Field(None, ge=2)
    max_steps: int = -1
    device: str = "auto"


class Evaluate(StrictModel):
    dataset: str = "stsb"
    splits: list[str] = ["dev", "test"]
    teacher: bool = True  # the teacher's own score in the same run
    baseline: bool = True  # the base encoder's zero-shot cosine score
    batch_size: int = Field(64, ge=1)
    max_rows: int | None = Field(None, ge=2)


class Config(ProjectConfig):
    train: Train = Train()
    evaluate: Evaluate = Evaluate()


def _pairs(rows: list[ScoredPair]) -> list[tuple[str, str]]:
    return [(r.sentence1, r.sentence2) for r in rows]


def teacher_scores(cfg: Config, ctx: RunContext, rows: list[ScoredPair]) -> list[float]:
    """The teacher's score for every training pair, kept in the workdir (a resumed job does not recompute)."""
    t = cfg.train
    teacher = ctx.upstream_model("teacher")
    path = ctx.workdir / f"teacher_scores-{teacher.name}-v{teacher.version}.tsv"
    if path.is_file():
        with path.open() as f:
            saved = [float(r["teacher"]) for r in csv.DictReader(f, delimiter="\t")]
        if len(saved) == len(rows):
            return saved
    model = cross_encoder.load_logged(teacher.path)
    scores = cross_encoder.predict(model, _pairs(rows), t.teacher_batch_size, both_orders=t.teacher_both_orders)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["sentence1", "sentence2", "gold", "teacher"])
        writer.writerows((r.sentence1, r.sentence2, r.score / 5.0, f"{s:.6f}") for r, s in zip(rows, scores))
    return [float(s) for s in scores]


def train_student(cfg: Config, rows: list[ScoredPair], targets: list[float], alpha: float, folder: Path,
                  progress: bool) -> dict:
    """One arm: MiniLM + a new pair head, trained with DSE's loss at `alpha`; resumable (paperline.training)."""
    from datasets import Dataset

    t = cfg.train
    if (folder / "student" / dse.HEAD_CONFIG).is_file():
        return {}
    encoder = load_sentence_transformer(cfg.base_model)
    import torch

    torch.manual_seed(cfg.seed)  # the head's initial weights, the same in every arm
    head = dse.PairHead(encoder.get_embedding_dimension(), t.head_hidden)
    rows_ds = Dataset.from_dict({
        "sentence1": [r.sentence1 for r in rows], "sentence2": [r.sentence2 for r in rows],
        "label": [[r.score / 5.0, s] for r, s in zip(rows, targets)],  # [gold, teacher]: DSELoss splits them
    })
    result = fit(encoder, rows_ds, dse.DSELoss(encoder, head, alpha), TrainSettings(
        output_dir=folder / "checkpoints", epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
        warmup_ratio=t.warmup_ratio, seed=cfg.seed, checkpoint_every=t.checkpoint_every, max_steps=t.max_steps,
        device=t.device, progress=progress, group_by_length=t.group_by_length,
        learning_rate_mapping={r"^head\.": t.head_learning_rate}))
    dse.save_student(encoder, head, folder / "student")
    return {k: v for k, v in vars(result).items() if isinstance(v, (int, float))}


def _arm(alpha: float) -> str:
    return f"alpha{alpha:g}"


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Score the training pairs with the teacher, then train the DSE arm and the control arm."""
    t = cfg.train
    rows = data.read(t.dataset, "train")
    rows = rows[: t.max_rows] if t.max_rows else rows
    began = time.perf_counter()
    targets = teacher_scores(cfg, ctx, rows)
    info: dict = {"teacher_scoring_seconds": time.perf_counter() - began, "train_pairs": len(rows)}
    arms = [t.alpha] + ([t.control_alpha] if t.control_alpha is not None and t.control_alpha != t.alpha else [])
    for alpha in arms:
        result = train_student(cfg, rows, targets, alpha, ctx.workdir / _arm(alpha), ctx.progress)
        info.update({f"{_arm(alpha)}_{k}": v for k, v in result.items()})
    folder = ctx.workdir / _arm(t.alpha) / "student"
    info["arms"] = [_arm(a) for a in arms]
    info["pyfunc"] = pyfunc_kwargs(folder)
    return TrainedModel(path=folder, flavor="pyfunc", info=info)


def pyfunc_kwargs(folder: Path) -> dict:
    import numpy as np
    import sentence_transformers
    import torch

    return {
        "python_model": str(HERE / "pyfunc_model.py"),
        "artifacts": {"student": str(folder)},
        "code_paths": [str(HERE / "dse.py")],
        "pip_requirements": [f"torch=={torch.__version__.split('+')[0]}",
                             f"sentence-transformers=={sentence_transformers.__version__}",
                             f"numpy=={np.__version__}"],
        "metadata": {"model_type": "dse-student", "input": "list of [sentence1, sentence2] pairs",
                     "output": "float32 score per pair (STS score / 5 scale)"},
    }


def evaluate(model: TrainedModel | None, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS Spearman x100 of the teacher, the DSE student and the alpha-0 student, on the same pairs."""
    e, t = cfg.evaluate, cfg.train
    splits = {}
    for split in e.splits:
        rows = data.read(e.dataset, split)
        splits[split] = rows[: e.max_rows] if e.max_rows else rows
    metrics: dict[str, float] = {}
    arms = {"": t.alpha} | ({"control_": t.control_alpha} if t.control_alpha not in (None, t.alpha) else {})
    for prefix, alpha in arms.items():
        folder = (model.path if prefix == "" and model else ctx.workdir / _arm(alpha) / "student")
        encoder, head = dse.load_student(folder)
        for split, rows in splits.items():
            scores = dse.score_pairs(encoder, head, _pairs(rows), e.batch_size).tolist()
            metrics[f"{prefix}{e.dataset}_{split}_spearman"] = cross_encoder.spearman(scores, [r.score for r in rows])
    if e.teacher:
        teacher = cross_encoder.load_logged(ctx.upstream_model("teacher").path)
        for split, rows in splits.items():
            scores = cross_encoder.predict(teacher, _pairs(rows), e.batch_size)
            metrics[f"teacher_{e.dataset}_{split}_spearman"] = cross_encoder.spearman(scores, [r.score for r in rows])
    if e.baseline:
        metrics.update(sts_metrics(load_sentence_transformer(cfg.base_model), splits, prefix=f"baseline_{e.dataset}"))
    for split in splits:
        student, teacher_key = f"{e.dataset}_{split}_spearman", f"teacher_{e.dataset}_{split}_spearman"
        if teacher_key in metrics:  # the paper's measure: the student's relative gap to its teacher, in %
            metrics[f"{split}_gap_to_teacher_pct"] = 100.0 * (metrics[teacher_key] - metrics[student]) / metrics[teacher_key]
    up = ctx.upstream_model("teacher")
    return Evaluation(metrics=metrics, tags={"dse.teacher": f"{up.name} v{up.version}", "dse.alpha": f"{t.alpha:g}",
                                             "dse.teacher_scores_sha256": _sha256(ctx.workdir, up)})


def _sha256(workdir: Path, up) -> str:
    path = workdir / f"teacher_scores-{up.name}-v{up.version}.tsv"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
