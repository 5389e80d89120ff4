"""Classical baselines for sentence similarity, training-free: the floor under every other project's table.

The classical sentence representations of the survey "From Word Vectors to Multimodal Embeddings" (Zhang et al.
2024, arXiv 2411.05036), scored on STS-B in one run with the encode latency of each (same run, same CPU):

- `tfidf`: TF-IDF bag of words (IDF fitted on STS-B train sentences), cosine;
- `glove_avg`: the plain average of GloVe 6B 50-d vectors;
- `sif_glove`: SIF (Arora et al., ICLR 2017): a/(a + p(w)) weighted average of the same vectors, p(w) from a
  corpus here, first principal component (fitted on that corpus) removed. The served model (a pyfunc);
- `wordllama`: WordLlama's l2_supercat 256-d token embeddings (average pooling), from the wheel;
- `minilm`: the base all-MiniLM-L6-v2, the contextual encoder every trained project starts from.

A `TrainingFreeMethod` (paperline.project.interface): `prepare` counts the corpus, fits SIF's weights and
component and writes the served model; `evaluate` scores every arm. The static-vector code is
static_vectors.py, which the pyfunc model ships.

References:
    - Arora, Liang, Ma, "A Simple but Tough-to-Beat Baseline for Sentence Embeddings", ICLR 2017
      (reference PrincetonML/SIF)
    - Pennington, Socher, Manning, "GloVe: Global Vectors for Word Representation", EMNLP 2014
    - Zhang et al., "From Word Vectors to Multimodal Embeddings", arXiv 2411.05036

Inputs (data kinds):
    `scored_pairs` (STS-B: train for the IDF and word counts, dev and test scored), `nli_pairs` (SNLI dev) and
    `definitions` (WordNet glosses, train) for SIF's word frequencies.

Example:
    paperline run classical_baselines --config smoke
    .venv/bin/python projects/classical_baselines/method.py          # without Prefect or MLflow
"""

from __future__ import annotations

if __name__ == "__main__":  # prepare + evaluate without Prefect or MLflow (paperline.project.local_run)
    from paperline.project.local_run import main_file

    main_file(__file__)

import time
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from paperline.core.config import ProjectConfig, StrictModel
from paperline.project.interface import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.project.metrics import metric_name, spearman_name, spearman_names

from . import static_vectors as sv
from .arms import CorpusPart, Evaluate, arm_encoders, corpus_texts, score_arms, serving_spec

Arm = Literal["tfidf", "glove_avg", "sif_glove", "wordllama", "minilm"]
ARMS: tuple[str, ...] = ("tfidf", "glove_avg", "sif_glove", "wordllama", "minilm")
SERVED = "sif_glove"  # the arm registered and served; its numbers are the unprefixed headline metrics


# ---- config ------------------------------------------------------------------------------------------------


class Sif(StrictModel):
    a: float = Field(1e-3, gt=0)  # the reference's weightpara; the paper finds 1e-4..1e-3 best
    # Texts whose word counts give p(w), and whose SIF averages give the removed component.
    corpus: list[CorpusPart] = Field(default_factory=lambda: [CorpusPart(dataset="stsb", split="train")])
    max_rows: int | None = Field(None, ge=2)  # rows per corpus part, for smoke runs


class Config(ProjectConfig):  # base_model (the card's): the `minilm` arm
    threads: int | None = Field(None, ge=1)  # torch CPU threads (the minilm arm); None leaves torch's default
    arms: list[Arm] = Field(default_factory=lambda: list(ARMS))
    tfidf_fit: CorpusPart = CorpusPart(dataset="stsb", split="train")  # IDF from these sentences
    sif: Sif = Sif()
    evaluate: Evaluate = Evaluate()

    @model_validator(mode="after")
    def _served_arm(self):
        if SERVED not in self.arms:
            raise ValueError(f"arms must include {SERVED}: it is the model this project registers and serves")
        return self

    def metric_names(self) -> set[str]:
        """The served SIF arm's Spearman per split (test is the primary metric), and every arm's."""
        return spearman_names(self.evaluate.dataset, self.evaluate.splits, ["", *self.arms])


# ---- SIF -----------------------------------------------------------------------------------------------------


def fit_sif(texts: list[str], words: list[str], vectors: np.ndarray, a: float):
    """SIF's weights from the word counts of `texts`, then its first component from their weighted averages."""
    encoder = sv.StaticEncoder(words, vectors, sv.sif_weights(words, sv.word_counts(texts), a))
    encoder.fit_pc(texts)
    return encoder


# ---- the interface -------------------------------------------------------------------------------------------


def prepare(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """SIF over GloVe 6B 50-d (Arora et al. 2017): word weights a/(a + p(w)) from the corpus's counts, the first
    principal component of the corpus's weighted averages; written as the pyfunc's files. No training."""
    began = time.perf_counter()
    words, vectors = sv.load_glove_50d()
    texts = corpus_texts(cfg.sif.corpus, data, cfg.sif.max_rows)
    encoder = fit_sif(texts, words, vectors, cfg.sif.a)
    out = ctx.workdir / "sif_glove"
    paths = encoder.save(out)
    known = sum(1 for w in sv.word_counts(texts) if w in encoder.index)
    return TrainedModel(path=out, flavor="pyfunc", serving=serving_spec(paths, encoder.dim),
                        metrics={"prepare_seconds": round(time.perf_counter() - began, 1),
                                 "sif_corpus_texts": float(len(texts)), "sif_corpus_words_in_glove": float(known)},
                        notes={"sif_corpus": ", ".join(f"{p.dataset}/{p.split}" for p in cfg.sif.corpus)},
                        outputs=dict(paths))


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """Every arm on every split: Spearman x100 of the pair cosines against the gold scores, and the encode time
    per 1,000 sentences (the split's sentences, both sides, timed after a warm-up call, in this process; arms.py
    `score_arms`); the served arm's numbers unprefixed, and the best classical arm by the first split."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    splits = {s: data.read(cfg.evaluate.dataset, s, cfg.evaluate.max_rows) for s in cfg.evaluate.splits}
    encoders = arm_encoders(cfg, model, data)
    metrics, table = score_arms(encoders, splits, cfg.evaluate.dataset)
    for split in splits:
        metrics[spearman_name(cfg.evaluate.dataset, split)] = metrics[spearman_name(cfg.evaluate.dataset, split, SERVED)]
    metrics["encode_ms_per_1k"] = metrics[f"{SERVED}_encode_ms_per_1k"]  # the served model's cost (leaderboard)
    tags = {"served_arm": SERVED}
    classical = [a for a in encoders if a != "minilm"]
    select = spearman_name(cfg.evaluate.dataset, cfg.evaluate.splits[0])  # chosen on the first split (dev)
    best = max(classical, key=lambda a: metrics[metric_name(a, select)])
    tags["best_classical_arm"] = f"{best} (by {select})"
    return Evaluation(metrics=metrics, tables={"arms": table}, tags=tags)

