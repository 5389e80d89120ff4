"""MLflow "models from code" file for a sentence-pair cross-encoder (see paperline.ml.cross_encoder).

Never imported by paperline: `mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"cross_encoder":
<saved CrossEncoder folder>})` stores this source, and MLflow executes it when it logs or loads the model, so
loading needs only sentence-transformers, not paperline. `load_model(uri).predict([["a", "b"], ...])` returns a
float32 numpy array with one score in [0, 1] per pair (sigmoid of the one-logit head).
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class CrossEncoderScorer(PythonModel):
    def load_context(self, context):
        import torch
        from sentence_transformers.cross_encoder import CrossEncoder

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = CrossEncoder(context.artifacts["cross_encoder"], device=device)

    def predict(self, context, model_input: list[list[str]], params=None):
        pairs = []
        for row in model_input:
            if len(row) != 2:
                raise ValueError(f"each input row must be a [sentence1, sentence2] pair, got {len(row)} items")
            pairs.append((str(row[0]), str(row[1])))
        scores = self.model.predict(pairs, batch_size=64, show_progress_bar=False, convert_to_numpy=True)
        return scores.astype("float32").reshape(-1)


mlflow.models.set_model(CrossEncoderScorer())
