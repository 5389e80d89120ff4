"""MLflow "models from code" file for a search index version (paperline.ops.production.index).

Never imported by paperline: the index flow logs it with `artifacts={"index": <folder>}` (the ANN index, its
rows as `label<TAB>text`, the recall check) and `model_config={"query_model": "models:/<name>/<version>"}`, and
MLflow executes it when it loads the model. A query is encoded by exactly that model version, the one whose
vectors the index holds. `load_model(uri).predict(["a query", ...], params={"k": 10})` returns a DataFrame with
one row per answer: query, rank (from 1), label (the term of a gloss), text and score (cosine). The same JSON
works through `mlflow models serve` (`{"inputs": ["a query"], "params": {"k": 5}}`).
"""

from __future__ import annotations

import csv
import sys

import mlflow
from mlflow.pyfunc import PythonModel


class IndexSearch(PythonModel):
    def load_context(self, context):
        import numpy as np  # noqa: F401 -- the index returns numpy arrays

        from paperline.ml.vector_index import VectorIndex

        folder = context.artifacts["index"]
        self.index = VectorIndex.load(f"{folder}/index")
        self.index.ef_search = int(_check(folder)["ef_search"])
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        with open(f"{folder}/rows.tsv", encoding="utf-8", newline="") as f:
            self.rows = [(row[0], row[1]) for row in csv.reader(f, delimiter="\t")]
        self.encoder = mlflow.sentence_transformers.load_model(context.model_config["query_model"])
        self.default_k = int(context.model_config.get("k", 10))

    def predict(self, context, model_input: list[str], params=None):
        import numpy as np
        import pandas as pd

        queries = [str(q) for q in (model_input.iloc[:, 0] if hasattr(model_input, "iloc") else model_input)]
        k = int((params or {}).get("k", self.default_k))
        vectors = np.asarray(self.encoder.encode(queries, convert_to_numpy=True), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        ids, scores = self.index.search(vectors, min(k, len(self.rows)))
        out = [{"query": query, "rank": rank + 1, "label": self.rows[i][0], "text": self.rows[i][1],
                "score": float(score)}
               for query, row_ids, row_scores in zip(queries, ids, scores)
               for rank, (i, score) in enumerate(zip(row_ids, row_scores)) if i >= 0]
        return pd.DataFrame(out, columns=["query", "rank", "label", "text", "score"])


def _check(folder: str) -> dict:
    import json

    with open(f"{folder}/recall_check.json") as f:
        return json.load(f)


mlflow.models.set_model(IndexSearch())
