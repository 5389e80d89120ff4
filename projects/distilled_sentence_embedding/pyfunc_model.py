"""MLflow "models from code" file for a DSE student (Barkan et al., AAAI 2020, arXiv 1908.05161).

`mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"student": <folder of dse.save_student>},
code_paths=[dse.py])` stores this source, not a pickle. `load_model(uri).predict([["a", "b"], ...])` returns one
float32 score per pair (on the STS score / 5 scale). `dse` (shipped through code_paths) is imported only in
`load_context`: MLflow executes this file when logging, where code_paths are not on sys.path yet.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class DSEStudentScorer(PythonModel):
    def load_context(self, context):
        import torch

        import dse

        self._dse = dse
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder, self.head = dse.load_student(context.artifacts["student"], device=device)

    def predict(self, context, model_input: list[list[str]], params=None):
        pairs = []
        for row in model_input:
            if len(row) != 2:
                raise ValueError(f"each input row must be a [sentence1, sentence2] pair, got {len(row)} items")
            pairs.append((str(row[0]), str(row[1])))
        return self._dse.score_pairs(self.encoder, self.head, pairs).numpy().astype("float32")


mlflow.models.set_model(DSEStudentScorer())
