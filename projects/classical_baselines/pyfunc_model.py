"""MLflow "models from code" file for SIF sentence embeddings over GloVe 6B 50-d (Arora et al., ICLR 2017).

`mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"vocab", "vectors", "sif"}, code_paths=
[static_vectors.py])` stores this source and three plain files (a word list, a float32 .npy, an .npz of the
SIF weights and component), no pickle. `load_model(uri).predict(["a sentence", ...])` returns a float32 numpy
array [n, 50], the same numbers the project's `evaluate` scored. `static_vectors` (shipped through code_paths)
is imported only in `load_context`: MLflow executes this file when logging, where code_paths are not on
sys.path yet.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class SifEmbedder(PythonModel):
    def load_context(self, context):
        import static_vectors

        self.encoder = static_vectors.StaticEncoder.load(
            context.artifacts["vocab"], context.artifacts["vectors"], context.artifacts["sif"])

    def predict(self, context, model_input: list[str], params=None):
        return self.encoder.embed([str(s) for s in model_input])


mlflow.models.set_model(SifEmbedder())
