"""The chunked embedding store: resume after a kill, refuse mixed identities, detect a damaged chunk."""

import numpy as np
import pytest

from paperline.ml.embedding_store import EmbeddingStore, StoreError, chunked, fill

IDENTITY = {"model": "m", "model_version": "1", "data_version": "abc.dir", "corpus": "c", "chunk_rows": 4}


def _rows(n):
    return [(f"label{i}", f"text\twith tab {i}" if i == 3 else f"text {i}") for i in range(n)]


def _encode(texts):
    return np.array([[len(t), float(t.split()[-1])] for t in texts], dtype=np.float32)


def test_a_killed_encode_resumes_from_the_last_finished_chunk(tmp_path):
    store = EmbeddingStore.open(tmp_path / "s", IDENTITY)
    calls = []

    def dies_on_third_chunk(texts):
        calls.append(texts)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return _encode(texts)

    with pytest.raises(KeyboardInterrupt):
        fill(store, chunked(_rows(10), 4), dies_on_third_chunk, progress=lambda _: None)
    assert not EmbeddingStore.open(tmp_path / "s", IDENTITY).complete
    with pytest.raises(StoreError, match="unfinished"):
        EmbeddingStore.load(tmp_path / "s")

    again, encoded = EmbeddingStore.open(tmp_path / "s", IDENTITY), []
    stats = fill(again, chunked(_rows(10), 4), lambda t: encoded.append(t) or _encode(t), progress=lambda _: None)
    assert encoded == [["text 8", "text 9"]]  # only the chunk the kill lost
    assert stats["rows_skipped"] == 8 and stats["rows_encoded"] == 2
    done = EmbeddingStore.load(tmp_path / "s")
    assert done.rows == 10
    np.testing.assert_array_equal(done.vectors(), _encode([t for _, t in _rows(10)]))
    assert done.labelled_rows() == _rows(10)  # a tab inside a text survives the TSV


def test_vectors_of_another_model_version_are_never_mixed_into_a_store(tmp_path):
    EmbeddingStore.open(tmp_path / "s", IDENTITY)
    with pytest.raises(StoreError, match="never mixed"):
        EmbeddingStore.open(tmp_path / "s", {**IDENTITY, "model_version": "2"})


def test_a_damaged_chunk_is_encoded_again_and_never_read_as_vectors(tmp_path):
    store = EmbeddingStore.open(tmp_path / "s", IDENTITY)
    fill(store, chunked(_rows(8), 4), _encode, progress=lambda _: None)
    chunk = tmp_path / "s" / "chunks" / "00001.npy"
    chunk.write_bytes(chunk.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(StoreError, match="chunk 1 is missing or changed"):
        EmbeddingStore.load(tmp_path / "s").vectors()
    store = EmbeddingStore.open(tmp_path / "s", IDENTITY)
    assert not store.finished(1) and store.finished(0)
