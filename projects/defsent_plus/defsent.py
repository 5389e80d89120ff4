"""DefSent+'s pieces: entries from definitions, the frozen (optionally isotropic) entry space, the loss, and a
reverse-dictionary retrieval.

Liu et al., "DefSent+: Improving sentence embeddings of language models by projecting definition sentences into
a quasi-isotropic or isotropic vector space of unlimited dictionary entries" (arXiv 2405.16153); reference
ryuliuxiaodong/DefSent-Plus. Its predecessor DefSent (Tsukagoshi et al., ACL 2021, hppRC/defsent) classified a
definition into its word with the language model's word-embedding matrix, so only single-token words could be
entries. DefSent+ builds one vector per dictionary entry instead (`GenerateEntryEmbeddings.py`: the mean of the
encoder's embeddings of all of the entry's definitions, so multi-word entries count too), can make that entry
space isotropic (`ICA-transform.py`: StandardScaler, then FastICA with unit-variance whitening and logcosh, times
100), freezes it, and trains the encoder so that a definition's embedding times the entry matrix classifies its
entry (`TrainEncoder.py`: a bias-free linear head holding the frozen entries, cross-entropy over all entries).

No paperline imports: the pieces are tested on tiny inputs without the platform.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Entries:
    """The training dictionary: entry i is `terms[i]`, its definitions are `definitions[i]`."""

    terms: list[str]
    definitions: list[list[str]]

    def rows(self) -> tuple[list[str], list[int]]:
        """(definition, entry index) per training example: every definition of every entry."""
        texts = [d for defs in self.definitions for d in defs]
        labels = [i for i, defs in enumerate(self.definitions) for _ in defs]
        return texts, labels


def select_entries(rows: Sequence, count: int | None, seed: int) -> Entries:
    """Group (term, definition) rows into entries and keep `count` of them, chosen with a seeded shuffle (all
    when `count` is None). Terms are kept as written, multi-word ones included; a repeated (term, definition)
    row (WordNet has a few) counts once."""
    by_term: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row.definition not in by_term[row.term]:
            by_term[row.term].append(row.definition)
    terms = sorted(by_term)
    random.Random(seed).shuffle(terms)
    terms = terms[:count] if count else terms
    return Entries(terms=terms, definitions=[by_term[t] for t in terms])


def encode(model, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """The model's sentence embeddings (float32, as the model outputs them: MiniLM's are unit-length)."""
    return np.asarray(model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                   show_progress_bar=False), dtype=np.float32)


def entry_matrix(model, entries: Entries, batch_size: int = 128) -> np.ndarray:
    """[entries, dim]: the mean of the model's embeddings of each entry's definitions (the reference's "AMP")."""
    texts, labels = entries.rows()
    embedded = encode(model, texts, batch_size)
    sums = np.zeros((len(entries.terms), embedded.shape[1]), dtype=np.float64)
    np.add.at(sums, np.asarray(labels), embedded)
    counts = np.bincount(labels, minlength=len(entries.terms))[:, None]
    return (sums / counts).astype(np.float32)


def whiten(matrix: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Standardise each dimension, then ZCA-whiten: zero mean, identity covariance (an isotropic space).

    Of all whitening transforms (any rotation of one is another), ZCA's output stays closest to the input's own
    coordinates. That matters here: the encoder's embeddings live in those coordinates, and a rotated entry space
    (PCA whitening, or ICA's components) is one the encoder must first learn to rotate into: with PCA whitening,
    90 steps left the loss above chance (8.0 against ln 2,000 = 7.6; see the README). Directions without variance
    (fewer entries than dimensions) become zeros rather than noise blown up by 1/sqrt(~0).
    """
    x = (matrix - matrix.mean(0)) / (matrix.std(0) + eps)
    eigval, eigvec = np.linalg.eigh(np.cov(x, rowvar=False))
    kept = eigval > eps * eigval.max()
    scale = np.where(kept, 1.0 / np.sqrt(np.where(kept, eigval, 1.0)), 0.0)
    return ((x @ eigvec * scale) @ eigvec.T).astype(np.float32)


def ica(matrix: np.ndarray, seed: int, max_iter: int = 1000) -> np.ndarray:
    """The reference's transform: StandardScaler, then FastICA over every dimension with unit-variance whitening
    and the logcosh contrast (its x100 scale is left out: `DefSentLoss` sets the logits' scale)."""
    import warnings

    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(matrix)
    model = FastICA(n_components=matrix.shape[1], max_iter=max_iter, tol=1e-4, whiten="unit-variance",
                    fun="logcosh", random_state=seed)
    with warnings.catch_warnings():  # a cap on iterations is a setting here, not a failure
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit_transform(x).astype(np.float32)


def isotropic(matrix: np.ndarray, method: str, seed: int, max_iter: int = 1000) -> np.ndarray:
    if method == "ica":
        return ica(matrix, seed, max_iter)
    if method == "whitening":
        return whiten(matrix)
    raise ValueError(f"isotropy must be 'ica' or 'whitening', got {method!r}")


def anisotropy(matrix: np.ndarray, pairs: int = 20000, seed: int = 0) -> float:
    """Mean cosine between random pairs of rows: near 0 for an isotropic space, high for a narrow cone."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(matrix), pairs), rng.integers(0, len(matrix), pairs)
    keep = i != j
    a, b = matrix[i[keep]], matrix[j[keep]]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cos.mean())


class DefSentLoss(nn.Module):
    """A sentence-transformers loss: logits = scale * embedding @ entries^T, cross-entropy against the entry id.

    The entry matrix is a buffer, never a parameter: frozen as in the reference, and not optimised or saved by
    the trainer (paperline's `fit` checkpoints only a loss's parameters). With `normalize_entries`, each entry
    row is L2-normalised first, so the raw and the isotropic arm give logits of the same range and differ only
    in the geometry of the entry space.
    """

    def __init__(self, model, entries: np.ndarray | torch.Tensor, scale: float = 20.0,
                 normalize_entries: bool = True):
        super().__init__()
        matrix = torch.as_tensor(np.asarray(entries), dtype=torch.float32)
        if normalize_entries:
            matrix = nn.functional.normalize(matrix, dim=1)
        self.model, self.scale = model, scale
        self.register_buffer("entries", matrix)
        self.cross_entropy = nn.CrossEntropyLoss()

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * embeddings @ self.entries.to(embeddings.dtype).T

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        (features,) = sentence_features
        embeddings = self.model(features)["sentence_embedding"]
        return self.cross_entropy(self.logits(embeddings).float(), labels.long())

    @property
    def citation(self) -> str:
        return "Liu et al., DefSent+, arXiv 2405.16153"


def reverse_dictionary(model, rows: Sequence, batch_size: int = 128) -> dict[str, float]:
    """Definition -> term retrieval over every distinct term of `rows`: each definition is a query, each term is
    a candidate embedded from the term string itself (so the query never sits among the candidates), ranked by
    cosine. Returns MRR and top-1/top-10 accuracy, x100."""
    terms = sorted({r.term for r in rows})
    index = {t: i for i, t in enumerate(terms)}
    queries = torch.from_numpy(encode(model, [r.definition for r in rows], batch_size))
    candidates = torch.from_numpy(encode(model, terms, batch_size))
    return retrieval_scores(queries, candidates, [index[r.term] for r in rows])


def retrieval_scores(queries: torch.Tensor, candidates: torch.Tensor, gold: Sequence[int]) -> dict[str, float]:
    """MRR, top-1 and top-10 (x100) of the gold candidate per query, by cosine; ties rank the gold last."""
    sims = nn.functional.normalize(queries.float(), dim=1) @ nn.functional.normalize(candidates.float(), dim=1).T
    gold_t = torch.as_tensor(list(gold), dtype=torch.long)
    gold_sim = sims[torch.arange(len(gold_t)), gold_t].unsqueeze(1)
    ranks = (sims >= gold_sim).sum(1).float()  # 1 = the gold term is the nearest
    return {"mrr": float((1.0 / ranks).mean() * 100), "top1": float((ranks <= 1).float().mean() * 100),
            "top10": float((ranks <= 10).float().mean() * 100)}


def weaken(model, keep_layers: int | None = None, reinit_top_layers: int = 0, seed: int = 0):
    """A weaker start from a BERT-style sentence encoder, in place: keep only its first `keep_layers`
    transformer layers, then re-initialise the top `reinit_top_layers` of those (seeded, with the model's own
    initialiser). Returns the model."""
    auto = model[0].auto_model
    layers = auto.encoder.layer
    if keep_layers is not None:
        if not 1 <= keep_layers <= len(layers):
            raise ValueError(f"keep_layers must be in [1, {len(layers)}], got {keep_layers}")
        auto.encoder.layer = layers = nn.ModuleList(list(layers)[:keep_layers])
        auto.config.num_hidden_layers = keep_layers
    if not 0 <= reinit_top_layers <= len(layers):
        raise ValueError(f"reinit_top_layers must be in [0, {len(layers)}], got {reinit_top_layers}")
    if reinit_top_layers:
        generator = torch.Generator().manual_seed(seed)
        std = getattr(auto.config, "initializer_range", 0.02)
        for layer in list(layers)[len(layers) - reinit_top_layers:]:
            _reinit(layer, std, generator)
    return model


@torch.no_grad()
def _reinit(module: nn.Module, std: float, generator: torch.Generator) -> None:
    """BERT's initialisation, written out: transformers' own `_init_weights` skips weights it marked as loaded
    from a checkpoint, which is every weight of a pretrained model."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) * std)
            if sub.bias is not None:
                sub.bias.zero_()
        elif isinstance(sub, nn.LayerNorm):
            sub.weight.fill_(1.0)
            sub.bias.zero_()
