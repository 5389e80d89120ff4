"""A vector index: exact top-k search, and an approximate one (faiss HNSW) measured against it by recall@k.

The index answers "which stored embeddings are nearest this query" for L2-normalised sentence embeddings, where
inner product is cosine. `exact_search` is the reference (numpy, blocked); `VectorIndex` is the fast one, and
`tune_ef_search` sets its search effort to the smallest that reaches a recall target against the reference, which
is what a registry gate checks before an index is promoted. `mean_reciprocal_rank` scores a reverse dictionary
(a gloss in, its term out) on what either search returns. Pure: numpy and faiss, imported inside functions.

Why faiss-cpu (bench/ann_index.py; bench/results/ann_index.md). 114,698 distinct WordNet glosses (all 206,941
rows of data/definitions) as 384-d MiniLM vectors, 1,000 held-out queries, each library's HNSW with the same
M=32 and ef_construction=200, ef_search the smallest reaching recall@10 >= 0.95 on 1,000 other held-out queries,
2 CPU cores shared with other jobs (load ~3.5, so speeds are +-20% and the two-thread column is not a scaling):

    library (float32)           build s   size MB   ef   recall@10   QPS, 1 thread   QPS, 1 query a call
    faiss-cpu IndexHNSWFlat       53        207     16     0.950         16,601           15,940
    hnswlib 0.8.0                 47        208     16     0.951         14,315           13,573
    usearch 2.26.6                91        208     16     0.952          5,046            4,239
    exact (numpy matmul)           -        176      -     1.000            384              167

- Speed at the target: faiss is ahead of hnswlib in all three full-corpus runs, by 11-32% (M=16 and M=32;
  the machine's noise is ~20%), and ~40x exact search in the same run; usearch's float32 is 3x slower (its
  bf16 index on the same graph did 13,282 QPS, so the gap is its f32 distance kernel), and it pays the most
  per Python call.
- Build and size: the same graph costs the same bytes everywhere (vectors + 2M links a node); faiss and hnswlib
  build alike, usearch float32 takes ~2x.
- Wheels and upkeep: faiss-cpu 1.15.1 installs as manylinux, macOS and Windows wheels (~66 MB with its
  OpenBLAS) and releases often; hnswlib 0.8.0 (Dec 2023, still its latest) has no wheel for Python 3.11 on
  Linux, so pip compiled it here from the sdist: installing needs a C++ compiler, and its setup.py builds with
  -march=native, so a wheel built on one machine may crash with SIGILL on an older CPU. usearch has wheels.
- Room to grow in the same API: faiss's IndexHNSWSQ (8-bit) measured 75 MB instead of 207 at the same speed
  (recall@10 0.957 at ef 20), the step to take when a corpus outgrows memory; FORMAT and the meta would change.

Parameters, and why:
- M=32 (links a node per upper layer, 64 on the base layer): against M=16 on the same corpus, the same ef
  finds more (ef 16: 0.950 vs 0.930; ef 32: 0.979 vs 0.975) at about the same queries/s, for ~7% more bytes
  (207 vs 193 MB); build times overlapped within the noise (47-116 s vs 57-77 s). Recall headroom is what the
  promotion gate needs.
- ef_construction=200: the usual quality setting (hnswlib's README uses it; faiss's default of 40 builds a
  weaker graph); building 115k takes ~50 s on two cores, a small part of encoding them (~8 min on one thread).
- ef_search=32 before tuning: recall@10 ~0.98 here; `tune_ef_search` then picks the corpus's own (16 here).
  The ef tuned on one query set reached 0.945-0.952 on another across runs: tune on queries the gate does not
  report on, and keep a margin (tune to 0.96 for a 0.95 gate) or raise ef one step.

A folder holds `index.faiss` (faiss's own format, no pickle) and `vector_index.json`: FORMAT, library and
version, the index type, metric, dim, count and params. `load` refuses a folder without that meta, of another
FORMAT or library, or whose index bytes disagree with the meta; `search` refuses queries of another dim. Ids
are the row positions of the matrix given to `build`: the caller keeps what row i stands for (a gloss, its
terms). Index distinct texts: rows repeating a text give identical vectors, which only add ties.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperline.core.errors import PaperlineError

if TYPE_CHECKING:
    import numpy as np

LIBRARY = "faiss-cpu"  # the distribution whose index bytes a folder holds; load refuses another's
FORMAT = 1  # bump when the folder's layout or the meta's meaning changes: load then refuses older folders
META = "vector_index.json"
INDEX_FILE = "index.faiss"
METRIC = "inner_product"

# Defaults measured by bench/ann_index.py (the module docstring says why): M links per node (2M on the base
# layer), ef_construction candidates while inserting, ef_search until `tune_ef_search` sets the corpus's own.
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 32

# Queries per block of exact search. Peak memory is ~12 bytes x block x count (the float32 scores and
# argpartition's int64 positions): 128 x 207k rows is ~320 MB. Measured on 115k x 384, one thread: block 32
# gives 772 queries/s, 128 956, 256 1,006 for twice the memory, 512 and 1,024 no faster.
EXACT_BLOCK = 128

# ef values tried in order by `tune_ef_search`: the first reaching the target recall is kept. Bounded, so a
# target an index cannot meet (too small M, bad data) fails in a few seconds instead of searching forever.
EF_LADDER = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512)


class VectorIndexError(PaperlineError):
    """An index folder this code cannot read, or vectors that do not fit the index; the message says which."""


def _as_matrix(vectors: Any, name: str) -> np.ndarray:
    """float32, C-contiguous, two-dimensional: what every ANN library and BLAS expect without a copy."""
    import numpy as np

    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise VectorIndexError(f"{name} must be a 2-d matrix [rows, dim], got shape {matrix.shape}")
    return matrix


def exact_search(vectors: Any, queries: Any, k: int, block: int = EXACT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product (cosine for normalised rows): (ids int64 [n, k], scores float32 [n, k]).

    Queries go `block` at a time so memory stays at block x count scores (see EXACT_BLOCK). Within a block,
    argpartition finds the k best in linear time and only those k are sorted; ties keep the lower id first.
    """
    import numpy as np

    vectors, queries = _as_matrix(vectors, "vectors"), _as_matrix(queries, "queries")
    if vectors.shape[1] != queries.shape[1]:
        raise VectorIndexError(f"queries have dim {queries.shape[1]}, the vectors {vectors.shape[1]}")
    k = min(k, len(vectors))
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ vectors.T
        # the k largest sit past position count-k after partitioning; no negated copy of sims needed
        top = np.argpartition(sims, sims.shape[1] - k, axis=1)[:, -k:]
        top_scores = np.take_along_axis(sims, top, axis=1)
        # sort by score descending, then id ascending: a stable order for equal scores (duplicate vectors)
        order = np.lexsort((top, -top_scores), axis=1)
        ids[start : start + block] = np.take_along_axis(top, order, axis=1)
        scores[start : start + block] = np.take_along_axis(top_scores, order, axis=1)
    return ids, scores


def recall_at_k(approx_ids: Any, exact_ids: Any, k: int) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / k: the share of true neighbours found.

    Missing results (-1, which libraries return when they find fewer than k) never match an exact id.
    """
    import numpy as np

    approx, exact = np.asarray(approx_ids)[:, :k], np.asarray(exact_ids)[:, :k]
    if len(approx) != len(exact):
        raise ValueError(f"{len(approx)} approximate rows but {len(exact)} exact rows")
    if len(exact) == 0:
        return 0.0
    hits = sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact))
    return hits / (len(exact) * exact.shape[1])


def tune_ef_search(index: Any, queries: Any, exact_ids: Any, k: int = 10, target: float = 0.95,
                   ladder: Sequence[int] = EF_LADDER) -> tuple[int, float]:
    """The smallest ef of `ladder` whose recall@k on `queries` reaches `target`: (ef, recall); the index keeps it.

    `index` is anything with a settable `ef_search` and `search(queries, k) -> (ids, scores)` (a VectorIndex,
    or the benchmark's adapters of other libraries). Raises VectorIndexError when even the largest ef misses:
    then the graph itself is too sparse (raise M or ef_construction), not the search.
    """
    recall = 0.0
    for ef in ladder:
        if ef < k:  # HNSW keeps ef candidates, so fewer than k cannot fill the answer
            continue
        index.ef_search = ef
        recall = recall_at_k(index.search(queries, k)[0], exact_ids, k)
        if recall >= target:
            return ef, recall
    raise VectorIndexError(f"recall@{k} {recall:.3f} < {target} even at ef_search={ladder[-1]}; rebuild the "
                           "index with a larger M or ef_construction")


def mean_reciprocal_rank(ranked_labels: Sequence[Sequence[Any]], gold_labels: Sequence[Any]) -> float:
    """Mean over queries of 1/rank of the first label equal to the gold one (1-based; 0 when it is absent).

    For a reverse dictionary: per query gloss, the terms of its nearest glosses in rank order, and its own term.
    """
    if len(ranked_labels) != len(gold_labels):
        raise ValueError(f"{len(ranked_labels)} ranked lists but {len(gold_labels)} gold labels")
    if len(gold_labels) == 0:
        return 0.0
    total = 0.0
    for ranked, gold in zip(ranked_labels, gold_labels):
        total += next((1.0 / rank for rank, label in enumerate(ranked, 1) if label == gold), 0.0)
    return total / len(gold_labels)


class VectorIndex:
    """An HNSW graph over float32 vectors scored by inner product (faiss IndexHNSWFlat); ids are row positions.

    Rows should be L2-normalised so inner product is cosine (MiniLM's are). The flat storage keeps the vectors
    as given, so scores are exact inner products of the neighbours found; only *which* neighbours is approximate.
    """

    def __init__(self, index: Any, params: dict[str, int]):
        self._index = index
        self.params = dict(params)  # M, ef_construction, ef_search: what `save` writes to the meta file
        self.ef_search = int(self.params["ef_search"])

    @classmethod
    def build(cls, vectors: Any, *, M: int = DEFAULT_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION,
              ef_search: int = DEFAULT_EF_SEARCH) -> VectorIndex:
        """Index the rows of `vectors` [count, dim]; row i is id i. Uses faiss's OpenMP threads (all cores unless
        OMP_NUM_THREADS says otherwise): 50-120 s for 115k x 384 on two busy cores."""
        import faiss

        vectors = _as_matrix(vectors, "vectors")
        if len(vectors) == 0:
            raise VectorIndexError("cannot build a vector index of no vectors")
        index = faiss.IndexHNSWFlat(vectors.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(vectors)
        return cls(index, {"M": M, "ef_construction": ef_construction, "ef_search": ef_search})

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    @property
    def ef_search(self) -> int:
        """Candidates kept while searching: larger is slower and finds more of the true neighbours."""
        return int(self._index.hnsw.efSearch)

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        self._index.hnsw.efSearch = int(ef)
        self.params["ef_search"] = int(ef)

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [n, k], scores float32 [n, k]), best first; k is capped at the count. A row the graph
        could not fill (rare once ef_search >= k) ends in id -1 with score -3.4e38, as faiss returns it."""
        queries = _as_matrix(queries, "queries")
        if queries.shape[1] != self.dim:
            raise VectorIndexError(f"queries have dim {queries.shape[1]}, the index dim {self.dim}; encode them "
                                   "with the model the index was built from")
        scores, ids = self._index.search(queries, min(k, self.count))
        return ids.astype("int64", copy=False), scores

    def meta(self) -> dict[str, Any]:
        import faiss

        return {"format": FORMAT, "library": LIBRARY, "library_version": faiss.__version__, "index": "IndexHNSWFlat",
                "metric": METRIC, "dim": self.dim, "count": self.count, "params": self.params}

    def save(self, folder: str | Path) -> Path:
        """Write `folder/index.faiss` and `folder/vector_index.json`, whole or not at all: both go to a temporary
        sibling folder that is renamed into place, so a reader never sees an index without its meta."""
        import faiss

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            faiss.write_index(self._index, str(work / INDEX_FILE))
            (work / META).write_text(json.dumps(self.meta(), indent=1))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(work, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> VectorIndex:
        """Read a folder `save` wrote; refuses one without this FORMAT's meta, another library's, or bytes that
        disagree with the meta (a copied-over index file)."""
        import faiss

        folder = Path(folder)
        meta_path = folder / META
        if not meta_path.is_file():
            raise VectorIndexError(f"{folder} has no {META}: not a paperline vector index (write one with "
                                   "VectorIndex.save)")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as error:
            raise VectorIndexError(f"{meta_path} is not valid JSON ({error}); rebuild the index") from None
        if meta.get("format") != FORMAT:
            raise VectorIndexError(f"{folder} is vector index format {meta.get('format')}, this paperline reads "
                                   f"format {FORMAT}; rebuild the index")
        if meta.get("library") != LIBRARY:
            raise VectorIndexError(f"{folder} was built with {meta.get('library')}, this paperline reads "
                                   f"{LIBRARY} indexes; rebuild the index")
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as error:  # faiss's message is a multi-line C++ trace; its last line says what
            raise VectorIndexError(f"{folder / INDEX_FILE} cannot be read ({str(error).strip().splitlines()[-1]}); "
                                   "rebuild the index") from None
        found = (type(index).__name__, int(index.d), int(index.ntotal), int(index.metric_type))
        expected = ("IndexHNSWFlat", meta.get("dim"), meta.get("count"), int(faiss.METRIC_INNER_PRODUCT))
        if found != expected:
            raise VectorIndexError(f"{folder / INDEX_FILE} holds {found[0]} dim {found[1]} count {found[2]}, its "
                                   f"meta says IndexHNSWFlat dim {expected[1]} count {expected[2]}; rebuild the index")
        # params the meta lacks (a hand-edited file) fall back to what the index bytes hold
        return cls(index, {"ef_search": int(index.hnsw.efSearch), **(meta.get("params") or {})})
