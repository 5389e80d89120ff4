"""A corpus's vectors on disk, written chunk by chunk with a manifest, so that a long encode resumes after a kill.

A batch re-embed of a real corpus (207k WordNet glosses) takes minutes to an hour on a CPU; a kill, an outage or a
full disk must not cost the work already done, and a half-written file must never be read as vectors. So the
corpus is cut into chunks of a fixed number of rows; each finished chunk is written to a temporary name, flushed
and renamed (`chunks/00003.npy` with its rows in `chunks/00003.tsv`: the label and the text of each row), and only
then recorded in `manifest.json` (itself replaced by rename) with its row count and the sha256 of its vectors.
A rerun opens the same folder, skips every recorded chunk whose file still has that digest, and encodes the rest.

The folder is keyed by what made the vectors (the `identity`: model name and version, data version, dataset,
split, text column, backend, chunk size): a store opened with another identity is refused, so vectors of two model
versions or two data versions are never mixed in one store. Pure numpy: no MLflow, Prefect or torch here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperline.core.errors import PaperlineError

if TYPE_CHECKING:
    import numpy as np

FORMAT = 1
MANIFEST = "manifest.json"


class StoreError(PaperlineError):
    """A store folder that belongs to other vectors, or whose files no longer match its manifest."""


@dataclass(frozen=True)
class Chunk:
    """Rows `start .. start + len(texts)` of the corpus: what to encode, and the label each row is found by."""

    index: int
    start: int
    labels: Sequence[str]
    texts: Sequence[str]


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _replace(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through a temporary name, flush it to disk, then rename: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class EmbeddingStore:
    """One folder of chunked vectors and their manifest; see the module docstring."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder = folder
        self.manifest = manifest

    # ---- opening --------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: str | Path, identity: dict[str, Any]) -> EmbeddingStore:
        """The store in `folder` for `identity`, created empty if the folder has none; refuses another identity."""
        folder = Path(folder)
        path = folder / MANIFEST
        if path.is_file():
            manifest = json.loads(path.read_text())
            if manifest.get("format") != FORMAT or manifest.get("identity") != identity:
                raise StoreError(
                    f"{folder} holds vectors of {manifest.get('identity')}, not of {identity}; vectors of two model "
                    "or data versions are never mixed: remove the folder or use the store for this identity")
            return cls(folder, manifest)
        (folder / "chunks").mkdir(parents=True, exist_ok=True)
        store = cls(folder, {"format": FORMAT, "identity": identity, "complete": False, "rows": 0, "dim": None,
                             "chunks": {}, "started": time.time()})
        store._save_manifest()
        return store

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingStore:
        """A finished store, for reading; a missing or unfinished one is refused with what to run."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise StoreError(f"{folder} holds no embeddings ({MANIFEST} is missing); run `paperline encode` first")
        store = cls(folder, json.loads(path.read_text()))
        if not store.complete:
            raise StoreError(f"the embeddings in {folder} are unfinished ({len(store.manifest['chunks'])} chunks); "
                             "rerun the same `paperline encode` to finish them (it resumes)")
        return store

    # ---- state ----------------------------------------------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        return self.manifest["identity"]

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def rows(self) -> int:
        return int(self.manifest.get("rows") or 0)

    def _save_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1, sort_keys=True)
        _replace(self.folder / MANIFEST, lambda f: f.write(text), mode="w")

    def _paths(self, index: int) -> tuple[Path, Path]:
        stem = self.folder / "chunks" / f"{index:05d}"
        return stem.with_suffix(".npy"), stem.with_suffix(".tsv")

    def finished(self, index: int) -> bool:
        """Whether chunk `index` is recorded and its vectors still have the recorded digest (else: encode again)."""
        entry = self.manifest["chunks"].get(str(index))
        if entry is None:
            return False
        vectors, rows = self._paths(index)
        return vectors.is_file() and rows.is_file() and _sha256(vectors) == entry["sha256"]

    # ---- writing --------------------------------------------------------------------------------------------

    def write_chunk(self, chunk: Chunk, vectors: np.ndarray) -> None:
        import numpy as np

        if len(vectors) != len(chunk.texts):
            raise StoreError(f"chunk {chunk.index}: {len(vectors)} vectors for {len(chunk.texts)} rows")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = self.manifest.get("dim")
        if dim is not None and vectors.shape[1] != dim:
            raise StoreError(f"chunk {chunk.index}: vectors of width {vectors.shape[1]}, the store's are {dim}")
        vector_path, rows_path = self._paths(chunk.index)

        def rows(f):
            out = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            out.writerows(zip(chunk.labels, chunk.texts))

        _replace(rows_path, rows, mode="w")
        _replace(vector_path, lambda f: np.save(f, vectors))
        self.manifest["dim"] = int(vectors.shape[1])
        self.manifest["chunks"][str(chunk.index)] = {"start": chunk.start, "rows": len(vectors),
                                                     "sha256": _sha256(vector_path)}
        self._save_manifest()

    def finish(self, seconds: float) -> None:
        """Mark the store complete once every chunk is written; the row count is the chunks' sum."""
        entries = sorted(self.manifest["chunks"].values(), key=lambda e: e["start"])
        expected = 0
        for entry in entries:  # contiguous from row 0: a gap means a chunk was lost
            if entry["start"] != expected:
                raise StoreError(f"{self.folder}: rows {expected}..{entry['start']} have no chunk; rerun to fill them")
            expected += entry["rows"]
        self.manifest.update(complete=True, rows=expected, seconds=round(seconds, 3), finished=time.time())
        self._save_manifest()

    # ---- reading --------------------------------------------------------------------------------------------

    def _ordered(self) -> list[int]:
        return sorted((int(i) for i in self.manifest["chunks"]), key=lambda i: self.manifest["chunks"][str(i)]["start"])

    def vectors(self) -> np.ndarray:
        """All vectors in row order, as one float32 matrix (each chunk checked against its digest)."""
        import numpy as np

        parts = []
        for index in self._ordered():
            if not self.finished(index):
                raise StoreError(f"{self.folder}: chunk {index} is missing or changed since it was written; rerun "
                                 "the encode (it rewrites that chunk)")
            parts.append(np.load(self._paths(index)[0]))
        if not parts:
            return np.zeros((0, self.manifest.get("dim") or 0), dtype=np.float32)
        return np.concatenate(parts)

    def labelled_rows(self) -> list[tuple[str, str]]:
        """(label, text) of every row, in row order."""
        out: list[tuple[str, str]] = []
        for index in self._ordered():
            with open(self._paths(index)[1], encoding="utf-8", newline="") as f:
                out.extend((row[0], row[1]) for row in csv.reader(f, delimiter="\t"))
        return out


def fill(store: EmbeddingStore, chunks: Iterable[Chunk], encode: Callable[[list[str]], np.ndarray],
         progress: Callable[[str], None] = print) -> dict[str, float]:
    """Encode every chunk the store does not hold yet, then mark it complete; returns rows encoded, rows skipped
    (already there: a resume) and seconds spent encoding."""
    started, encoded, skipped, seconds = time.perf_counter(), 0, 0, 0.0
    for chunk in chunks:
        if store.finished(chunk.index):
            skipped += len(chunk.texts)
            continue
        t0 = time.perf_counter()
        store.write_chunk(chunk, encode(list(chunk.texts)))
        seconds += time.perf_counter() - t0
        encoded += len(chunk.texts)
        rate = encoded / seconds if seconds else 0.0
        progress(f"chunk {chunk.index}: rows {chunk.start}-{chunk.start + len(chunk.texts) - 1} encoded "
                 f"({encoded + skipped} rows so far, {rate:.0f} rows/s)")
    store.finish(time.perf_counter() - started)
    return {"rows_encoded": encoded, "rows_skipped": skipped, "encode_seconds": seconds}


def chunked(rows: Iterable[tuple[str, str]], chunk_rows: int) -> Iterator[Chunk]:
    """(label, text) rows cut into numbered chunks of `chunk_rows`."""
    labels: list[str] = []
    texts: list[str] = []
    index = start = 0
    for label, text in rows:
        labels.append(label)
        texts.append(text)
        if len(texts) == chunk_rows:
            yield Chunk(index, start, labels, texts)
            index, start, labels, texts = index + 1, start + chunk_rows, [], []
    if texts:
        yield Chunk(index, start, labels, texts)
