"""MLflow "models from code" file for a Uni-Encoder response scorer (Song et al., Findings of ACL 2023).

`mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"scorer": <folder written by uni_encoder.save>},
code_paths=[uni_encoder.py])` stores this source, not a pickle. `load_model(uri).predict([[context, cand_1, ...,
cand_K], ...])` returns one list of K float scores per row (K may differ between rows); the context is the
dialogue so far, one turn per line. `uni_encoder` (shipped through code_paths) is imported only in
`load_context`: MLflow executes this file when logging, where code_paths are not on sys.path yet.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class UniEncoderScorer(PythonModel):
    def load_context(self, context):
        import torch
        import uni_encoder

        self._uni = uni_encoder
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.scorer, self.tokenizer = uni_encoder.load(context.artifacts["scorer"], device=device)

    def predict(self, context, model_input: list[list[str]], params=None):
        requests = []
        for row in model_input:
            if len(row) < 2:
                raise ValueError(f"each input row is [context, candidate_1, ...]: at least 2 items, got {len(row)}")
            turns = [t for t in str(row[0]).split("\n") if t.strip()] or [str(row[0])]
            requests.append((turns, [str(c) for c in row[1:]]))
        return self._uni.score(self.scorer, self.tokenizer, requests, batch_size=8)


mlflow.models.set_model(UniEncoderScorer())
