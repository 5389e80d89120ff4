"""The teacher's side of the distillation: its score for every training pair, kept in the run's workdir.

Project plumbing, not the paper: the registered cross-encoder (`upstream.teacher`) scores the STS-B train pairs once;
the scores are a TSV (sentence1, sentence2, gold, teacher), so a resumed job does not score again and the run
records the file's sha256.
"""

from __future__ import annotations

from pathlib import Path

from paperline.data import derived
from paperline.ml import cross_encoder
from paperline.project.interface import RunContext


def pairs(rows) -> list[tuple[str, str]]:
    return [(r.sentence1, r.sentence2) for r in rows]


def teacher_scores(cfg, ctx: RunContext, rows: list) -> tuple[list[float], Path]:
    """The teacher's score for every training pair, kept in the workdir (a resumed job does not recompute)."""
    t = cfg.train
    teacher = ctx.upstream_model("teacher")
    path = ctx.workdir / f"teacher_scores-{teacher.name}-v{teacher.version}.tsv"
    saved = [float(r["teacher"]) for r in derived.read_tsv(path)] if path.is_file() else []
    if len(saved) == len(rows):
        return saved, path
    model = cross_encoder.load_logged(teacher.path)
    scores = cross_encoder.predict(model, pairs(rows), t.teacher_batch_size, both_orders=t.teacher_both_orders)
    derived.write_tsv(path, ["sentence1", "sentence2", "gold", "teacher"],
                      ((r.sentence1, r.sentence2, r.score / 5.0, f"{s:.6f}") for r, s in zip(rows, scores)))
    return [float(s) for s in scores], path
