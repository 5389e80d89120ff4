"""The vector index (paperline.ml.vector_index): exact search against a naive argsort, an HNSW index tuned to the
recall target on clustered data, a save/load round trip, and the folders and queries it must refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paperline.core.errors import PaperlineError
from paperline.ml.vector_index import (
    FORMAT,
    META,
    VectorIndex,
    VectorIndexError,
    exact_search,
    mean_reciprocal_rank,
    recall_at_k,
    tune_ef_search,
)

DIM = 32


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered():
    """3,000 unit vectors in 30 clusters plus 200 held-out queries from the same clusters: the shape of sentence
    embeddings (dense neighbourhoods), small enough to build in well under a second."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, DIM))
    points = centres[rng.integers(0, 30, 3_200)] + 0.6 * rng.normal(size=(3_200, DIM))
    points = unit_rows(points)
    return points[:3_000], points[3_000:]


@pytest.fixture(scope="module")
def index(clustered):
    vectors, _ = clustered
    return VectorIndex.build(vectors, M=8, ef_construction=40, ef_search=10)


def test_exact_search_matches_a_naive_argsort():
    rng = np.random.default_rng(1)
    vectors, queries = unit_rows(rng.normal(size=(500, DIM))), unit_rows(rng.normal(size=(37, DIM)))
    ids, scores = exact_search(vectors, queries, k=7, block=8)  # several blocks and a ragged last one
    naive = np.argsort(-(queries @ vectors.T), axis=1)[:, :7]
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (37, 7)
    np.testing.assert_array_equal(ids, naive)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, naive, axis=1), rtol=1e-6)


def test_exact_search_keeps_k_within_the_corpus_and_orders_ties_by_id():
    vectors = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)  # rows 0 and 2 are the same vector
    ids, scores = exact_search(vectors, np.array([[1, 0]], dtype=np.float32), k=10)
    assert ids.tolist() == [[0, 2, 1]] and scores.tolist() == [[1.0, 1.0, 0.0]]


def test_recall_counts_shared_ids_and_never_a_missing_one():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k(np.array([[4, 3, 2, 1], [5, 6, 9, -1]]), exact, k=4) == pytest.approx(6 / 8)
    assert recall_at_k(np.array([[1, 9, 9, 9], [-1, -1, -1, -1]]), exact, k=2) == pytest.approx(1 / 4)


def test_tuning_reaches_the_recall_target_on_clustered_data(index, clustered):
    vectors, queries = clustered
    exact_ids, _ = exact_search(vectors, queries, k=10)
    start = recall_at_k(index.search(queries, 10)[0], exact_ids, 10)
    ef, recall = tune_ef_search(index, queries, exact_ids, k=10, target=0.95)
    assert recall >= 0.95 and index.ef_search == ef
    assert recall_at_k(index.search(queries, 10)[0], exact_ids, 10) == pytest.approx(recall)
    assert start < 0.95  # the graph is sparse (M=8) so ef 10 finds ~0.91: tuning had to raise it


def test_tuning_fails_loudly_when_no_ef_reaches_the_target(index, clustered):
    vectors, queries = clustered
    wrong = exact_search(vectors, queries, k=10)[0][::-1]  # another query's neighbours: unreachable
    with pytest.raises(VectorIndexError, match="rebuild the index"):
        tune_ef_search(index, queries, wrong, k=10, target=0.95, ladder=(10, 20))


def test_save_then_load_gives_the_same_answers(index, clustered, tmp_path):
    _, queries = clustered
    index.ef_search = 24
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx")
    assert (loaded.dim, loaded.count, loaded.ef_search) == (DIM, 3_000, 24)
    ids, scores = index.search(queries, 5)
    loaded_ids, loaded_scores = loaded.search(queries, 5)
    np.testing.assert_array_equal(loaded_ids, ids)
    np.testing.assert_allclose(loaded_scores, scores, rtol=1e-6)
    meta = json.loads((tmp_path / "idx" / META).read_text())
    assert meta["format"] == FORMAT and meta["dim"] == DIM and meta["count"] == 3_000
    assert meta["metric"] == "inner_product" and meta["params"]["ef_search"] == 24


@pytest.mark.parametrize("change", ["missing", "format", "library"])
def test_load_refuses_a_folder_that_is_not_this_format(index, tmp_path, change):
    folder = tmp_path / "idx"
    index.save(folder)
    meta_path = folder / META
    if change == "missing":
        meta_path.unlink()
    else:
        meta = json.loads(meta_path.read_text())
        meta.update({"format": FORMAT + 1} if change == "format" else {"library": "annoy"})
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(VectorIndexError) as caught:
        VectorIndex.load(folder)
    assert isinstance(caught.value, PaperlineError) and "\n" not in str(caught.value)
    assert {"missing": META, "format": "format", "library": "annoy"}[change] in str(caught.value)


def test_search_refuses_queries_of_another_dimension(index):
    with pytest.raises(VectorIndexError, match=f"dim 16.*{DIM}"):
        index.search(np.ones((2, 16), dtype=np.float32), 3)


def test_mean_reciprocal_rank_on_a_hand_example():
    ranked = [["cat", "dog", "eel"], ["dog", "cat"], ["eel"], []]
    gold = ["cat", "cat", "dog", "eel"]
    # ranks 1, 2, absent, absent -> (1 + 1/2 + 0 + 0) / 4
    assert mean_reciprocal_rank(ranked, gold) == pytest.approx(0.375)
