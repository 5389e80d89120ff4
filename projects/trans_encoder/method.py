"""Trans-Encoder: unsupervised sentence-pair modelling by self-distillation between a bi- and a cross-encoder.

Liu et al., "Trans-Encoder: Unsupervised sentence-pair modelling through self- and mutual-distillations",
ICLR 2022 (arXiv 2109.13059; reference implementation amzn/trans-encoder, src/self_distill.py). No label is
used: the STS-B train pairs are read without their scores. Each cycle,

1. the bi-encoder scores every pair (cosine of its embeddings): pseudo-labels;
2. a cross-encoder trains on them, both sentence orders, binary cross-entropy (the reference's setting);
3. the cross-encoder relabels the pairs;
4. the bi-encoder trains on its labels (CosineSimilarityLoss: MSE on the cosine, the reference's loss).

Both encoders are scored on STS-B dev (and test, for the report) after every cycle; the bi-encoder of the cycle
with the best dev Spearman is the model registered. Every pseudo-labelled set is written as a TSV whose sha256
is recorded on the run (tags `trans_encoder.cycle<k>.<bi|cross>_labels.sha256`), and the files are attached
to the MLflow run as artifacts: each cycle's training data is versioned by content.

Optional mutual distillation (the paper's Section 2.3): `train.mutual_models` adds bi-encoders whose
pseudo-labels are averaged with the main one's in step 1 (each trains on the same cross-encoder labels).

References:
    - Liu et al., "Trans-Encoder", ICLR 2022, arXiv 2109.13059
    - reference implementation: github.com/amzn/trans-encoder (src/self_distill.py)

Inputs (data kinds):
    `scored_pairs` (STS-B: train pairs without their scores; dev to choose the cycle; test to report).

Example:
    paperline run trans_encoder --config smoke
    paperline run trans_encoder train.cycles=1 'train.mutual_models=[sentence-transformers/all-mpnet-base-v2]'
"""

from __future__ import annotations

import json
import time
from pydantic import Field, model_validator

from paperline.core.config import ProjectConfig, StrictModel
from paperline.ml import cross_encoder
from paperline.ml.models import load_sentence_transformer
from paperline.ml.training import fit
from paperline.project.interface import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.project.metrics import spearman_name
from paperline.project.sections import FitSection

from .labels import Evaluate, bi_scores, cycles_report, read_labels, write_labels


class Side(FitSection):
    """Training settings of one encoder in each cycle."""

    group_by_length: bool = True  # length-grouped batches: the cycles are the budget on a CPU
    checkpoint_every: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _rows_are_capped_once(self):
        if self.max_rows is not None:
            raise ValueError("cap the pairs of every cycle with train.max_rows, not per encoder")
        return self


class Cross(Side):
    learning_rate: float = Field(8e-5, gt=0)  # a new head on MiniLM: see cross_encoder_sts's README
    both_orders: bool = True  # train on (a, b) and (b, a), as the reference does
    max_length: int = Field(128, ge=8)
    relabel_both_orders: bool = True  # its labels are the mean over both orders: symmetric, like a cosine


class Train(StrictModel):
    dataset: str = "stsb"
    cycles: int = Field(3, ge=1)
    fresh_models: bool = True  # each cycle starts both encoders from the base model (the reference's setting)
    bi: Side = Side()
    cross: Cross = Cross()
    mutual_models: list[str] = Field(default_factory=list)  # extra bi-encoders whose labels are averaged in
    max_rows: int | None = Field(None, ge=2)
    batch_size_predict: int = Field(64, ge=1)


class Config(ProjectConfig):
    train: Train = Train()
    evaluate: Evaluate = Evaluate()


def bi_labels(encoders, pairs: list[tuple[str, str]], batch_size: int, progress: bool = False):
    """Cosine of each pair under each bi-encoder, averaged over encoders and clipped to [0, 1] (BCE targets)."""
    import torch

    total = None
    sentences = sorted({s for pair in pairs for s in pair})
    index = {s: i for i, s in enumerate(sentences)}
    for encoder in encoders:  # a bar per encoder: an MPNet pass over the train sentences takes minutes on a CPU
        emb = encoder.encode(sentences, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=progress)
        u, v = emb[[index[a] for a, _ in pairs]], emb[[index[b] for _, b in pairs]]
        cos = torch.nn.functional.cosine_similarity(u, v).float().cpu()
        total = cos if total is None else total + cos
    return (total / len(encoders)).clamp(0.0, 1.0).numpy()


# ---- the cycles ---------------------------------------------------------------------------------------------


def run_cycle(cfg: Config, k: int, pairs, bis: list, splits, ctx: RunContext) -> tuple[list, dict]:
    """One cycle from the current bi-encoders; returns the trained bi-encoders and the cycle's record."""
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    t, folder = cfg.train, ctx.workdir / f"cycle{k}"
    began = time.perf_counter()
    bi_file = folder / "bi_labels.tsv"
    bi_sha = write_labels(bi_file, pairs, bi_labels(bis, pairs, t.batch_size_predict, ctx.progress))

    previous_cross = ctx.workdir / f"cycle{k - 1}" / "cross"
    start = cfg.base_model if t.fresh_models or k == 1 else str(previous_cross)
    cross = cross_encoder.load_cross_encoder(start, max_length=t.cross.max_length)
    _, labels = read_labels(bi_file)  # train from the file as written: the recorded hash is what was learned
    cross_encoder.train(cross, pairs, labels, t.cross.settings(folder / "cross_checkpoints", cfg.seed, ctx.progress),
                        both_orders=t.cross.both_orders)
    cross.save(str(folder / "cross"))
    cross_scores = cross_encoder.split_spearman(cross, splits, t.batch_size_predict)

    cross_file = folder / "cross_labels.tsv"
    relabels = cross_encoder.predict(cross, pairs, t.batch_size_predict, both_orders=t.cross.relabel_both_orders)
    cross_sha = write_labels(cross_file, pairs, relabels)
    del cross

    from datasets import Dataset

    _, labels = read_labels(cross_file)  # already in [0, 1]: the cosine targets of CosineSimilarityLoss
    rows = Dataset.from_dict({"sentence1": [a for a, _ in pairs], "sentence2": [b for _, b in pairs], "score": labels})
    trained = []
    for i, (bi, base) in enumerate(zip(bis, [cfg.base_model, *t.mutual_models])):
        if i > 0 and k == t.cycles:  # the extra bi-encoders only label the next cycle's pairs; the last has none
            trained.append(bi)
            continue
        model = load_sentence_transformer(base) if t.fresh_models else bi
        settings = t.bi.settings(folder / f"bi{i}_checkpoints", cfg.seed, ctx.progress)
        fit(model, rows, CosineSimilarityLoss(model), settings)
        model.save(str(folder / ("bi" if i == 0 else f"bi{i}")))
        trained.append(model)
    record = {"cycle": k, "bi": bi_scores(trained[0], splits), "cross": cross_scores,
              "bi_labels_sha256": bi_sha, "cross_labels_sha256": cross_sha, "seconds": time.perf_counter() - began}
    (folder / "cycle.json").write_text(json.dumps(record, indent=1))
    return trained, record


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """N cycles of bi -> cross -> bi on the unlabelled STS-B train pairs; the best cycle's bi-encoder by dev."""
    from sentence_transformers import SentenceTransformer

    t = cfg.train
    pairs = [(r.sentence1, r.sentence2) for r in data.read(t.dataset, "train", t.max_rows)]  # scores unread
    splits = cfg.evaluate.rows(data)
    bis = [load_sentence_transformer(name) for name in [cfg.base_model, *t.mutual_models]]
    records = [{"cycle": 0, "bi": bi_scores(bis[0], splits), "cross": {}}]
    for k in range(1, t.cycles + 1):
        done = ctx.workdir / f"cycle{k}" / "cycle.json"
        if done.is_file():  # a resumed job: this cycle finished before the kill
            records.append(json.loads(done.read_text()))
            names = ["bi"] + [f"bi{i}" for i in range(1, len(bis))]
            bis = [SentenceTransformer(str(done.parent / n)) if (done.parent / n).is_dir() else bi
                   for n, bi in zip(names, bis)]
            continue
        bis, record = run_cycle(cfg, k, pairs, bis, splits, ctx)
        records.append(record)
    select = cfg.evaluate.select_split
    best = max(records[1:], key=lambda r: r["bi"][select])
    cycles_file = ctx.workdir / "cycles.json"
    cycles_file.write_text(json.dumps({"best_cycle": best["cycle"], "records": records}, indent=1))
    metrics = {"best_cycle": best["cycle"], "train_pairs": len(pairs)}
    for r in records:
        for side in ("bi", "cross"):
            metrics.update({f"cycle{r['cycle']}_{side}_{split}_spearman": v for split, v in r[side].items()})
    return TrainedModel(path=ctx.workdir / f"cycle{best['cycle']}" / "bi", metrics=metrics,
                        outputs={"cycles": cycles_file, **{f"cycle{r['cycle']}": ctx.workdir / f"cycle{r['cycle']}"
                                                           for r in records[1:]}})


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """The chosen bi-encoder on dev and test, the per-cycle table of both encoders, and the labelled sets."""
    from sentence_transformers import SentenceTransformer

    e = cfg.evaluate
    splits = cfg.evaluate.rows(data)
    metrics = {spearman_name(e.dataset, split): v
               for split, v in bi_scores(SentenceTransformer(str(model.path)), splits).items()}
    saved = json.loads(model.output("cycles").read_text())
    records = saved["records"]
    metrics["best_cycle"] = float(saved["best_cycle"])
    for split in splits:  # the starting bi-encoder (cycle 0) on the same rows: the number to beat without labels
        metrics[spearman_name(e.dataset, split, "cycle0")] = records[0]["bi"][split]
    table, tags, artifacts = cycles_report(records, e.select_split, e.report_split,
                                           {f"cycle{r['cycle']}": model.output(f"cycle{r['cycle']}")
                                            for r in records[1:]}, ctx.workdir)
    return Evaluation(metrics=metrics, tables={"cycles": table}, tags=tags, artifacts=artifacts)
