"""The arms next to the served SIF model: how each encodes a sentence and compares two, loaded before any timing.

Project plumbing, not the paper (SIF is method.py and static_vectors.py): the config sections naming a corpus
part and the rows scored, the texts of the rows a corpus part reads, scikit-learn's TF-IDF, WordLlama from its
wheel, MiniLM, the timed scoring of every arm, and the pyfunc spec of the served model.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import Field

from paperline.core.config import StrictModel
from paperline.project.interface import ProjectData, PyfuncSpec, TrainedModel
from paperline.project.metrics import spearman_name
from paperline.project.sections import SENTENCES_EXAMPLE, pyfunc_spec

from . import static_vectors as sv

HERE = Path(__file__).resolve().parent


# ---- config sections: a corpus part (what a fit reads), the rows scored ------------------------------------


class CorpusPart(StrictModel):
    dataset: str
    split: str


class Evaluate(StrictModel):
    dataset: str = "stsb"
    splits: list[str] = Field(default_factory=lambda: ["dev", "test"])
    max_rows: int | None = Field(None, ge=2)
    batch_size: int = Field(64, ge=1)  # MiniLM and WordLlama batches


def texts_of(row) -> list[str]:
    """The texts of one row of any kind this project reads: both sentences of a pair, or a gloss."""
    for fields in (("sentence1", "sentence2"), ("premise", "hypothesis"), ("definition",)):
        if all(hasattr(row, f) for f in fields):
            return [getattr(row, f) for f in fields]
    raise TypeError(f"no text fields in a {type(row).__name__} row")


def corpus_texts(parts: list, data: ProjectData, max_rows: int | None = None) -> list[str]:
    return [text for part in parts for row in data.read(part.dataset, part.split, max_rows) for text in texts_of(row)]


def spearman100(gold, predicted) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(gold, predicted).statistic * 100)


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


def arm_encoders(cfg, model: TrainedModel, data: ProjectData):
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


def score_arms(encoders: dict, splits: dict[str, list], dataset: str) -> tuple[dict[str, float], dict[str, list]]:
    """(metrics, table) of every arm on every split: Spearman x100 of the pair cosines against the gold scores
    (`<arm>_<dataset>_<split>_spearman`), and the encode time per 1,000 sentences (`<arm>_encode_ms_per_1k`: the
    split's sentences, both sides, timed after a warm-up call, in this process)."""
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
            metrics[spearman_name(dataset, split, arm)] = value
            table[f"{split}_spearman"].append(round(value, 2))
        metrics[f"{arm}_encode_ms_per_1k"] = seconds / sentences * 1e6
        table["encode_ms_per_1k"].append(round(metrics[f"{arm}_encode_ms_per_1k"], 1))
    return metrics, table


def serving_spec(paths: dict[str, Path], dim: int) -> PyfuncSpec:
    """The pyfunc serving SIF embeddings: models from code (pyfunc_model.py), numpy files, no pickles."""
    return pyfunc_spec(HERE / "pyfunc_model.py", dict(paths), ["numpy"], code_paths=[HERE / "static_vectors.py"],
                       metadata={"embedding_dim": dim, "output": f"float32 array [n, {dim}]"},
                       input_example=SENTENCES_EXAMPLE)
