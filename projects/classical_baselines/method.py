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

import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from paperline.core.config import ProjectConfig, StrictModel
from paperline.project.discovery import project_module
from paperline.project.interface import (
    Evaluation,
    ProjectData,
    PyfuncSpec,
    RunContext,
    TrainedModel,
)
from paperline.project.sections import SENTENCES_EXAMPLE, pyfunc_spec

HERE = Path(__file__).resolve().parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
Arm = Literal["tfidf", "glove_avg", "sif_glove", "wordllama", "minilm"]
ARMS: tuple[str, ...] = ("tfidf", "glove_avg", "sif_glove", "wordllama", "minilm")
SERVED = "sif_glove"  # the arm registered and served; its numbers are the unprefixed headline metrics

sv = project_module(HERE / "static_vectors.py")


# ---- config ------------------------------------------------------------------------------------------------


class CorpusPart(StrictModel):
    dataset: str
    split: str


class Sif(StrictModel):
    a: float = Field(1e-3, gt=0)  # the reference's weightpara; the paper finds 1e-4..1e-3 best
    # Texts whose word counts give p(w), and whose SIF averages give the removed component.
    corpus: list[CorpusPart] = Field(default_factory=lambda: [CorpusPart(dataset="stsb", split="train")])
    max_rows: int | None = Field(None, ge=2)  # rows per corpus part, for smoke runs


class Evaluate(StrictModel):
    dataset: str = "stsb"
    splits: list[str] = Field(default_factory=lambda: ["dev", "test"])
    max_rows: int | None = Field(None, ge=2)
    batch_size: int = Field(64, ge=1)  # MiniLM and WordLlama batches


class Config(ProjectConfig):
    base_model: str = MINILM  # the `minilm` arm
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
        names = {f"{self.evaluate.dataset}_{split}_spearman" for split in self.evaluate.splits}
        return names | {f"{arm}_{name}" for arm in self.arms for name in names}


# ---- helpers -----------------------------------------------------------------------------------------------


def texts_of(row) -> list[str]:
    """The texts of one row of any kind this project reads: both sentences of a pair, or a gloss."""
    for fields in (("sentence1", "sentence2"), ("premise", "hypothesis"), ("definition",)):
        if all(hasattr(row, f) for f in fields):
            return [getattr(row, f) for f in fields]
    raise TypeError(f"no text fields in a {type(row).__name__} row")


def corpus_texts(parts: list[CorpusPart], data: ProjectData, max_rows: int | None = None) -> list[str]:
    return [text for part in parts for row in data.read(part.dataset, part.split, max_rows) for text in texts_of(row)]


def spearman100(gold, predicted) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(gold, predicted).statistic * 100)


def fit_sif(texts: list[str], words: list[str], vectors: np.ndarray, a: float):
    """SIF's weights from the word counts of `texts`, then its first component from their weighted averages."""
    encoder = sv.StaticEncoder(words, vectors, sv.sif_weights(words, sv.word_counts(texts), a))
    encoder.fit_pc(texts)
    return encoder


class _Tfidf:
    """scikit-learn's TfidfVectorizer (l2-normalised rows, so a pair's cosine is a dot product)."""

    def __init__(self, texts: list[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(lowercase=True).fit(texts)

    def encode(self, sentences: list[str]):
        return self.vectorizer.transform(sentences)

    @staticmethod
    def cosine(a, b) -> np.ndarray:
        return np.asarray(a.multiply(b).sum(axis=1)).ravel()


def wordllama_model():
    """WordLlama from its wheel, offline. Its weights and tokenizer file ship in the wheel, but 0.4.0 looks for the
    tokenizer under `wordllama/tokenizer/` while the wheel has it in `wordllama/tokenizers/`, then downloads it:
    naming the package folder as the cache folder makes the lookup find the shipped file."""
    import wordllama

    return wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)


def _encoders(cfg: Config, model: TrainedModel, data: ProjectData):
    """arm -> (encode(sentences) -> embeddings, cosine(a, b) -> per-row cosines), loaded before any timing."""
    served = sv.StaticEncoder.load(**{k: model.output(k) for k in ("vocab", "vectors", "sif")})
    encoders = {}
    for arm in cfg.arms:
        if arm == "tfidf":
            tfidf = _Tfidf(corpus_texts([cfg.tfidf_fit], data))
            encoders[arm] = (tfidf.encode, tfidf.cosine)
        elif arm == "glove_avg":
            encoders[arm] = (sv.StaticEncoder(served.words, served.vectors).embed, sv.cosine_rows)
        elif arm == "sif_glove":
            encoders[arm] = (served.embed, sv.cosine_rows)
        elif arm == "wordllama":
            wl = wordllama_model()
            encoders[arm] = (lambda s, wl=wl: wl.embed(s, batch_size=cfg.evaluate.batch_size), sv.cosine_rows)
        elif arm == "minilm":
            from paperline.ml.models import load_sentence_transformer

            st = load_sentence_transformer(cfg.base_model, device="cpu")
            encoders[arm] = (lambda s, st=st: st.encode(s, batch_size=cfg.evaluate.batch_size,
                                                        convert_to_numpy=True, show_progress_bar=False),
                             sv.cosine_rows)
    return encoders


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


def serving_spec(paths: dict[str, Path], dim: int) -> PyfuncSpec:
    """The pyfunc serving SIF embeddings: models from code (pyfunc_model.py), numpy files, no pickles."""
    return pyfunc_spec(HERE / "pyfunc_model.py", dict(paths), ["numpy"], code_paths=[HERE / "static_vectors.py"],
                       metadata={"embedding_dim": dim, "output": f"float32 array [n, {dim}]"},
                       input_example=SENTENCES_EXAMPLE)


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """Every arm on every split: Spearman x100 of the pair cosines against the gold scores, and the encode time
    per 1,000 sentences (the split's sentences, both sides, timed after a warm-up call, in this process)."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    splits = {s: data.read(cfg.evaluate.dataset, s, cfg.evaluate.max_rows) for s in cfg.evaluate.splits}
    encoders = _encoders(cfg, model, data)
    metrics: dict[str, float] = {}
    table: dict[str, list] = {"arm": [], **{f"{s}_spearman": [] for s in splits}, "encode_ms_per_1k": []}
    for arm, (encode, cosine) in encoders.items():
        encode(SENTENCES_EXAMPLE)  # warm-up: lazy loads and first-call allocations are not encode time
        seconds, sentences = 0.0, 0
        table["arm"].append(arm)
        for split, rows in splits.items():
            began = time.perf_counter()
            left, right = encode([r.sentence1 for r in rows]), encode([r.sentence2 for r in rows])
            seconds += time.perf_counter() - began
            sentences += 2 * len(rows)
            value = spearman100([r.score for r in rows], cosine(left, right))
            metrics[f"{arm}_{cfg.evaluate.dataset}_{split}_spearman"] = value
            table[f"{split}_spearman"].append(round(value, 2))
        metrics[f"{arm}_encode_ms_per_1k"] = seconds / sentences * 1e6
        table["encode_ms_per_1k"].append(round(metrics[f"{arm}_encode_ms_per_1k"], 1))
    for split in splits:
        metrics[f"{cfg.evaluate.dataset}_{split}_spearman"] = metrics[f"{SERVED}_{cfg.evaluate.dataset}_{split}_spearman"]
    metrics["encode_ms_per_1k"] = metrics[f"{SERVED}_encode_ms_per_1k"]  # the served model's cost (leaderboard)
    tags = {"served_arm": SERVED}
    classical = [a for a in encoders if a != "minilm"]
    select = f"{cfg.evaluate.dataset}_{cfg.evaluate.splits[0]}_spearman"  # chosen on the first split (dev)
    best = max(classical, key=lambda a: metrics[f"{a}_{select}"])
    tags["best_classical_arm"] = f"{best} (by {select})"
    return Evaluation(metrics=metrics, tables={"arms": table}, tags=tags)


if __name__ == "__main__":  # prepare + evaluate without Prefect or MLflow (paperline.project.local_run)
    import sys

    from paperline.project.local_run import main

    main(["classical_baselines", *sys.argv[1:]])
