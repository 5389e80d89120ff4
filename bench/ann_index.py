"""Approximate nearest-neighbour libraries on real sentence embeddings: faiss-cpu HNSW vs hnswlib vs usearch.

The question: which library should paperline's vector index (paperline.ml.vector_index) use to serve MiniLM
embeddings of a gloss corpus, where an index is promoted only after a recall check against exact search.

Corpus: the WordNet glosses of `data/definitions` (train, dev, test in that order; the first `--limit` rows),
encoded with all-MiniLM-L6-v2 through paperline's ONNX Runtime path (paperline.ml.fast_encode; 384-d,
L2-normalised, so inner product is cosine). A gloss is indexed once: ~43% of the rows repeat a gloss (every
term of a synset has a row), and identical vectors only add ties, not information. `--vectors X.npy` takes a
float32 matrix instead. Encodings are cached in /tmp/ann_vectors/ (a prefix of the corpus reuses them).

Queries: `--queries` (2,000) distinct glosses drawn at random (seeded) and left out of the index, split in
two halves: ef_search is tuned on the first (the smallest of a fixed ladder with recall@10 >= `--target`
against exact search) and recall and speed are reported on the other, so the recall is not fit to the queries
it is reported on. Every library builds the same graph parameters (M, ef_construction) with all threads;
speed is the best of `--rounds` interleaved rounds (each library in turn, then again), so load from other
processes hits every row alike: a batch of all report queries on 1 thread and on all threads, and one query
per call on 1 thread (a server's shape: the per-call overhead of the Python binding counts there).

Run (repo root, after `paperline data pull` and
`.venv/bin/pip install -c constraints.txt faiss-cpu==1.15.1 hnswlib==0.8.0 usearch==2.26.6`):
    HF_HUB_OFFLINE=1 .venv/bin/python bench/ann_index.py                  # all ~207k rows (117k glosses)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/ann_index.py --limit 60000    # a quicker look
    .venv/bin/python bench/ann_index.py --vectors my_embeddings.npy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path("/tmp/ann_vectors")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SPLITS = ("train", "dev", "test")
ENCODE_CHUNK = 5_000  # glosses per cache write: an interrupted encoding loses at most one chunk


# ---- the corpus and its vectors ---------------------------------------------------------------------------


def read_glosses(limit: int | None) -> list[str]:
    """Distinct glosses of the first `limit` rows of train, dev, test, in first-seen order (so a smaller limit's
    glosses are a prefix of a larger one's, and the encoding cache serves both)."""
    from paperline.data.datasets import read_frame

    # read_frame reads the files as written (csv's minimal quoting: a field with a quote is quoted), which
    # QUOTE_NONE would not: 1,815 train rows have quoted examples
    texts: list[str] = []
    for split in SPLITS:
        texts += read_frame(ROOT / "data" / "definitions" / f"{split}.tsv", "definitions")["definition"].tolist()
    return list(dict.fromkeys(t for t in texts[:limit] if t.strip()))


def encode_cached(texts: list[str], threads: int) -> np.ndarray:
    """MiniLM embeddings of `texts` via ONNX Runtime, cached as a growing prefix in /tmp/ann_vectors/."""
    import numpy as np

    from paperline.ml.fast_encode import OnnxEncoder, cached_export, folder_digest
    from paperline.ml.models import resolve_model_path

    model_dir = resolve_model_path(MINILM)
    key = folder_digest(model_dir)[:16]  # another model (or its weights changed) gets another cache
    vectors_path, texts_path = CACHE / f"glosses-{key}.npy", CACHE / f"glosses-{key}.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    done = None
    if vectors_path.is_file() and texts_path.is_file():
        cached_texts = json.loads(texts_path.read_text())
        common = min(len(cached_texts), len(texts))
        if cached_texts[:common] == texts[:common]:
            done = np.load(vectors_path)[:common]
    if done is not None and len(done) == len(texts):
        return done
    print(f"encoding {len(texts) - (0 if done is None else len(done)):,} glosses on {threads} thread(s)...",
          flush=True)
    folder, _ = cached_export(model_dir, "optimized", cache_dir=CACHE / "onnx")
    encoder = OnnxEncoder(folder, threads=threads)
    if done is None:
        done = np.zeros((0, encoder.meta["width"]), dtype=np.float32)
    start, first = time.perf_counter(), len(done)
    for begin in range(len(done), len(texts), ENCODE_CHUNK):
        done = np.concatenate([done, encoder.encode(texts[begin : begin + ENCODE_CHUNK], batch_size=64)])
        # vectors first, then the texts they cover (a reader uses the vectors only up to the texts' length),
        # each written whole by a rename, so an interrupted run leaves a usable prefix
        np.save(vectors_path.with_suffix(".tmp.npy"), done)
        os.replace(vectors_path.with_suffix(".tmp.npy"), vectors_path)
        texts_path.with_suffix(".tmp").write_text(json.dumps(texts[: len(done)]))
        os.replace(texts_path.with_suffix(".tmp"), texts_path)
        rate = (len(done) - first) / (time.perf_counter() - start)
        print(f"  {len(done):,}/{len(texts):,} ({rate:,.0f} glosses/s)", flush=True)
    return done


def held_out_split(count: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indexed rows, tuning queries, report queries): a seeded random `queries` rows left out, halved."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(count)
    held, indexed = order[:queries], np.sort(order[queries:])
    return indexed, held[: queries // 2], held[queries // 2 :]


# ---- one adapter per library: build, ef_search, search(queries, k) -> (ids int64, scores), save --------------
# Same graph parameters everywhere: M links per node on the upper layers and 2M on the base layer (all three
# libraries double it there), ef_construction candidates while inserting.


class FaissHNSW:
    def __init__(self, dim: int, M: int, ef_construction: int, quantizer: str | None = None):
        import faiss

        self.faiss = faiss
        if quantizer is None:  # the vectors as they are, float32
            self.library = "faiss-cpu IndexHNSWFlat (f32, IP)"
            self.index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        else:  # a scalar quantizer (8bit: per-dimension min/max learnt from the corpus, 1 byte a value)
            self.library = f"faiss-cpu IndexHNSWSQ ({quantizer}, IP)"
            qtype = getattr(faiss.ScalarQuantizer, f"QT_{quantizer}")
            self.index = faiss.IndexHNSWSQ(dim, qtype, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.threads = 1

    def version(self) -> str:
        return self.faiss.__version__

    def build(self, vectors) -> None:
        self.faiss.omp_set_num_threads(self.threads)
        self.index.train(vectors)  # a no-op for the flat index
        self.index.add(vectors)

    @property
    def ef_search(self) -> int:
        return self.index.hnsw.efSearch

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def search(self, queries, k: int):
        self.faiss.omp_set_num_threads(self.threads)
        scores, ids = self.index.search(queries, k)
        return ids, scores

    def save(self, path: Path) -> None:
        self.faiss.write_index(self.index, str(path))


class Hnswlib:
    library = "hnswlib (f32, ip)"

    def __init__(self, dim: int, M: int, ef_construction: int):
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=dim)
        self.M, self.ef_construction, self.threads = M, ef_construction, 1

    def version(self) -> str:
        from importlib.metadata import version

        return version("hnswlib")  # the module has no __version__

    def build(self, vectors) -> None:
        import numpy as np

        self.index.init_index(max_elements=len(vectors), M=self.M, ef_construction=self.ef_construction,
                              random_seed=100)
        self.index.add_items(vectors, np.arange(len(vectors)), num_threads=self.threads)

    @property
    def ef_search(self) -> int:
        return self.index.ef

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        self.index.set_ef(ef)

    def search(self, queries, k: int):
        ids, distances = self.index.knn_query(queries, k, num_threads=self.threads)
        return ids.astype("int64"), 1.0 - distances  # hnswlib's "ip" distance is 1 - inner product

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))


class USearch:
    def __init__(self, dim: int, M: int, ef_construction: int, dtype: str = "f32"):
        from usearch.index import Index

        # i8 quantizes each value to round(127 x), which assumes unit-length rows: usearch pairs it with "cos"
        metric = "cos" if dtype == "i8" else "ip"
        self.library = f"usearch ({dtype}, {metric})"
        self.index = Index(ndim=dim, metric=metric, dtype=dtype, connectivity=M, expansion_add=ef_construction)
        self.threads = 1

    def version(self) -> str:
        import usearch

        return usearch.__version__

    def build(self, vectors) -> None:
        import numpy as np

        self.index.add(np.arange(len(vectors)), vectors, threads=self.threads)

    @property
    def ef_search(self) -> int:
        return self.index.expansion_search

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search(self, queries, k: int):
        import numpy as np

        matches = self.index.search(queries, k, threads=self.threads)
        if len(queries) == 1:  # one query gives `Matches`, trimmed to what was found; pad as a batch would be
            ids, scores = np.full((1, k), -1, dtype=np.int64), np.full((1, k), -np.inf, dtype=np.float32)
            ids[0, : len(matches.keys)], scores[0, : len(matches.keys)] = matches.keys, 1.0 - matches.distances
            return ids, scores
        found = np.arange(k)[None, :] < matches.counts[:, None]  # columns past a row's count are padding
        return np.where(found, matches.keys.astype(np.int64), -1), 1.0 - matches.distances

    def kernel(self) -> str:
        return self.index.hardware_acceleration  # the SIMD level its distance kernels were dispatched to

    def save(self, path: Path) -> None:
        self.index.save(str(path))


class Exact:
    """numpy brute force (paperline.ml.vector_index.exact_search): the baseline and the recall reference."""

    library = "exact (numpy matmul, f32)"

    def __init__(self):
        self.vectors, self.threads, self.ef_search = None, 1, 0

    def version(self) -> str:
        import numpy as np

        return np.__version__

    def build(self, vectors) -> None:
        self.vectors = vectors

    def search(self, queries, k: int):  # BLAS threads: set around the timing (threadpoolctl costs ~ms a call)
        from paperline.ml.vector_index import exact_search

        return exact_search(self.vectors, queries, k)

    def save(self, path: Path) -> None:
        import numpy as np

        np.save(path, self.vectors)


# The three libraries as float32 indexes (the comparison asked for), then the compressed variants two of them
# offer (a quarter or half the vector bytes), since at the recall target they can be faster as well as smaller.
LIBRARIES = {
    "faiss": FaissHNSW,
    "hnswlib": Hnswlib,
    "usearch": USearch,
    "faiss-sq8": partial(FaissHNSW, quantizer="8bit"),
    "usearch-bf16": partial(USearch, dtype="bf16"),
    "usearch-i8": partial(USearch, dtype="i8"),
}
PACKAGES = {"faiss": "faiss-cpu", "hnswlib": "hnswlib", "usearch": "usearch"}  # row name's prefix -> distribution


# ---- measuring -------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    adapter: object | None = None
    problem: str = ""  # why there is no measurement (not installed, failed to build, missed the target)
    version: str = ""
    wheel: str = ""
    build_s: float = 0.0
    size_bytes: int = 0
    ef: int = 0
    tune_recall: float = 0.0
    recall: float = 0.0
    qps: dict[str, float] = field(default_factory=dict)  # mode -> best queries/s over rounds


def wheel_tag(package: str) -> str:
    """The installed wheel's platform tag: `manylinux...` came prebuilt from PyPI, `linux_x86_64` was compiled
    here from the sdist (so installing it needs a C++ compiler)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        text = distribution(package).read_text("WHEEL") or ""
    except PackageNotFoundError:
        return "not installed"
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    platforms = sorted({t.rsplit("-", 1)[-1] for t in tags})
    return ", ".join(p if len(p) < 40 else p[:37] + "..." for p in platforms) or "?"


def queries_per_second(adapter, queries, k: int, threads: int, one_per_call: bool, min_seconds: float) -> float:
    """Queries/s of `adapter.search`: the whole batch per call, or one query per call, repeated >= min_seconds."""
    from threadpoolctl import threadpool_limits

    adapter.threads = threads
    with threadpool_limits(threads, user_api="blas"):  # numpy's matmul (the exact row); the others own theirs
        done, start = 0, time.perf_counter()
        while True:
            if one_per_call:
                for row in range(len(queries)):
                    adapter.search(queries[row : row + 1], k)
            else:
                adapter.search(queries, k)
            done += len(queries)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return done / elapsed


def directory_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def measure(args, vectors, tune, report, exact_tune, exact_report) -> list[Row]:
    from paperline.ml.vector_index import VectorIndexError, recall_at_k, tune_ef_search

    all_threads = os.cpu_count() or 1
    rows = []
    for name in ["exact", *args.libraries]:
        package = PACKAGES.get(name.split("-")[0], "numpy")
        row = Row(name)
        row.wheel = wheel_tag(package) if name != "exact" else "-"
        try:
            adapter = Exact() if name == "exact" else LIBRARIES[name](vectors.shape[1], args.M, args.ef_construction)
            row.name, row.version = adapter.library, adapter.version()
        except ImportError as error:  # not installed, or its binary does not load on this machine
            row.problem = f"import failed: {error}"
            rows.append(row)
            continue
        if hasattr(adapter, "kernel"):
            row.name += f" [{adapter.kernel()}]"
        adapter.threads = all_threads
        print(f"building {row.name} on {all_threads} threads...", flush=True)
        start = time.perf_counter()
        try:
            adapter.build(vectors)
        except Exception as error:  # a library that cannot build is a row of the table, not a crash
            row.problem = f"build failed: {type(error).__name__}: {error}"
            rows.append(row)
            continue
        row.build_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as folder:
            adapter.save(Path(folder) / "index")
            row.size_bytes = directory_size(Path(folder))
        if name == "exact":
            row.tune_recall = row.recall = 1.0
        else:
            try:
                row.ef, row.tune_recall = tune_ef_search(adapter, tune, exact_tune, args.k, args.target)
            except VectorIndexError:  # reported, and timed at the largest ef tried
                row.problem = f"missed at ef {adapter.ef_search}"
            adapter.threads = 1
            row.recall = recall_at_k(adapter.search(report, args.k)[0], exact_report, args.k)
        row.adapter = adapter
        rows.append(row)
    modes = {"batch, 1 thread": (1, False), f"batch, {all_threads} threads": (all_threads, False),
             "1 query per call, 1 thread": (1, True)}
    for round_ in range(args.rounds):
        print(f"timing round {round_ + 1}/{args.rounds}...", flush=True)
        for row in rows:
            if row.adapter is None:
                continue
            for mode, (threads, one_per_call) in modes.items():
                qps = queries_per_second(row.adapter, report, args.k, threads, one_per_call, args.min_seconds)
                row.qps[mode] = max(row.qps.get(mode, 0.0), qps)
    return rows


# ---- reporting -------------------------------------------------------------------------------------------


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                 platform.processor())
    return (f"{os.cpu_count()} CPU cores ({model}), {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}")


def table(rows: list[Row], k: int, target: float) -> str:
    modes = list(next((r.qps for r in rows if r.qps), {}))
    head = (["library", "version", "wheel (platform tag)", "build s", "size MB", f"ef_search (recall@{k} >= "
             f"{target} on tuning queries)", f"recall@{k} (report queries)"] + [f"QPS {m}" for m in modes])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if row.adapter is None:
            cells = [row.name, row.version or "-", row.wheel, row.problem] + ["-"] * (len(head) - 4)
        else:
            ef = row.problem or (str(row.ef) if row.ef else "-")
            cells = [row.name, row.version, row.wheel, f"{row.build_s:.1f}", f"{row.size_bytes / 1e6:.1f}", ef,
                     f"{row.recall:.3f}"] + [f"{row.qps[m]:,.0f}" for m in modes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", type=Path, help="a float32 .npy matrix [rows, dim] instead of encoding the glosses")
    p.add_argument("--limit", type=int, default=None, help="first N rows of the gloss files (default: all)")
    p.add_argument("--queries", type=int, default=2_000, help="held-out rows: half tune ef, half are reported")
    p.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=list(LIBRARIES),
                   help="the first three are float32 indexes; faiss-sq8, usearch-bf16/-i8 compress the vectors")
    p.add_argument("--M", type=int, default=32, help="HNSW links per node (2M on the base layer)")
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--target", type=float, default=0.95, help="recall@k that ef_search must reach")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; each figure is the best")
    p.add_argument("--min-seconds", type=float, default=0.5, help="repeat each timing for at least this long")
    p.add_argument("--encode-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "ann_index.md"),
                   help="markdown file for the table ('' to skip)")
    args = p.parse_args()

    import numpy as np

    from paperline.ml.vector_index import exact_search

    if args.vectors:
        source = f"{args.vectors} ({args.vectors.stat().st_size / 1e6:.0f} MB)"
        vectors = np.load(args.vectors)[: args.limit]
    else:
        texts = read_glosses(args.limit)
        rows_read = "all" if args.limit is None else f"first {args.limit:,}"
        source = (f"WordNet glosses of data/definitions (train, dev, test; {rows_read} rows -> {len(texts):,} "
                  f"distinct glosses), all-MiniLM-L6-v2 via ONNX Runtime")
        vectors = encode_cached(texts, args.encode_threads)
    # rows are made unit length, so inner product is cosine (MiniLM's are already; a --vectors file may not be)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    indexed, tune_rows, report_rows = held_out_split(len(vectors), args.queries, args.seed)
    corpus, tune, report = vectors[indexed], vectors[tune_rows], vectors[report_rows]
    exact_tune, exact_report = exact_search(corpus, tune, args.k)[0], exact_search(corpus, report, args.k)[0]

    rows = measure(args, corpus, tune, report, exact_tune, exact_report)

    command = "HF_HUB_OFFLINE=1 .venv/bin/python bench/ann_index.py " + " ".join(sys.argv[1:])
    header = "\n".join([
        f"command: `{command.strip()}`",
        f"machine: {machine()}; load average at the end {os.getloadavg()[0]:.2f}",
        f"corpus: {source}",
        f"indexed: {len(corpus):,} x {corpus.shape[1]} float32; queries: {len(tune):,} tuning + {len(report):,} "
        f"report, held out (not indexed), seed {args.seed}",
        f"graph: M={args.M} (2M on the base layer), ef_construction={args.ef_construction}, built on all "
        f"{os.cpu_count()} threads (one build each); QPS: best of {args.rounds} interleaved rounds, each >= "
        f"{args.min_seconds} s, at each library's own ef_search; numpy {np.__version__}",
    ])
    text = header + "\n\n" + table(rows, args.k, args.target)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# ANN index libraries on real sentence embeddings (bench/ann_index.py)\n\n"
                       + header.replace("\n", "  \n") + "\n\n" + table(rows, args.k, args.target) + "\n")
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
