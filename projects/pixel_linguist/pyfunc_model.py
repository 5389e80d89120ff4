"""MLflow "models from code" file for a Pixel-Linguist sentence encoder (Xiao et al., arXiv 2402.08183).

`mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"student": <folder of pixel_student.save_student>},
code_paths=[pixel_student.py])` stores this source, not a pickle. `load_model(uri).predict(["a sentence", ...])`
renders each sentence to a 160x160 picture with the font saved beside the weights and returns a float32 numpy array
[n, 384] of L2-normalised embeddings (cosine similarity = dot product), the numbers the project's `evaluate` scored.
`pixel_student` (shipped through code_paths) is imported only in `load_context`: MLflow executes this file when
logging, where code_paths are not on sys.path yet.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class PixelSentenceEncoder(PythonModel):
    def load_context(self, context):
        import torch

        import pixel_student

        self._px = pixel_student
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.student, self.renderer = pixel_student.load_student(context.artifacts["student"], device=device)

    def predict(self, context, model_input: list[str], params=None):
        return self._px.encode(self.student, self.renderer, [str(s) for s in model_input], batch_size=32)


mlflow.models.set_model(PixelSentenceEncoder())
