"""MLflow "models from code" file for a visually grounded caption-picture encoder (Kiela et al., NAACL 2018).

`mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"encoder": <folder written by towers.save>},
code_paths=[towers.py])` stores this source, not a pickle. A request is a list of rows, each with exactly one of
`caption` (text) or `image` (a base64-encoded PNG, or any picture Pillow reads; a `data:image/png;base64,` prefix
is allowed), as `mlflow models serve` receives it in JSON:

    {"inputs": [{"caption": "a red apple"}, {"image": "iVBORw0KGgo..."}]}

The answer is one L2-normalised float embedding per row, all of the same width, in the space the two towers share:
a caption and a picture are compared by their dot product (their cosine). The input schema comes from the type
hint of `predict` (a list of `Row`), which refuses anything else at serving time. `towers` (shipped through
code_paths) is imported only in `load_context`; when MLflow runs the input example at logging time, code_paths are
not on sys.path yet and `towers.py` is imported from beside this file instead.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel
from pydantic import BaseModel


class Row(BaseModel):
    caption: str | None = None  # a sentence or a caption
    image: str | None = None  # a base64 PNG


class GroundedEncoderModel(PythonModel):
    def load_context(self, context):
        import torch

        try:
            import towers
        except ModuleNotFoundError:  # logging: MLflow runs the input example before code_paths are on sys.path
            import sys
            from pathlib import Path

            sys.path.insert(0, str(Path(__file__).resolve().parent))  # towers.py sits beside this file
            import towers

        self._towers = towers
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = towers.load(context.artifacts["encoder"], device=device)

    def predict(self, context, model_input: list[Row], params=None) -> list[list[float]]:
        rows = [(row.caption, row.image) if isinstance(row, Row) else (row.get("caption"), row.get("image"))
                for row in model_input]
        return self._towers.encode_requests(self.encoder, rows).tolist()


mlflow.models.set_model(GroundedEncoderModel())
