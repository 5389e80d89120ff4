"""MLflow "models from code" file for a sentence-transformers model exported to ONNX (paperline.ml.fast_encode).

Never imported by paperline: `paperline export-onnx NAME@ALIAS` logs it with `artifacts={"onnx": <export
folder>}` (model.onnx, the tokenizer, paperline_onnx.json) and MLflow executes it when it loads the model, so
serving needs onnxruntime, transformers (for the tokenizer) and numpy; no torch, no paperline.
`load_model(uri).predict(["a sentence", ...])` returns a float32 numpy array [n, width]: what
`SentenceTransformer.encode` returns for the source model, to cosine >= 0.999 for the fp32 export.
The encode below is `paperline.ml.fast_encode.OnnxEncoder.encode`, restated so this file stands alone
(tests/unit/test_fast_encode.py checks that the two agree).
"""

from __future__ import annotations

import json

import mlflow
from mlflow.pyfunc import PythonModel


class OnnxSentenceEmbedder(PythonModel):
    def load_context(self, context):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = context.artifacts["onnx"]
        with open(f"{folder}/paperline_onnx.json") as f:
            self.meta = json.load(f)
        self.session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def predict(self, context, model_input: list[str], params=None):
        import numpy as np

        sentences = [str(s) for s in model_input]
        meta = self.meta
        out = np.zeros((len(sentences), meta["width"]), dtype=np.float32)
        order = np.argsort([-len(s) for s in sentences], kind="stable")
        for start in range(0, len(sentences), 64):
            chosen = order[start : start + 64]
            tokens = self.tokenizer([sentences[i] for i in chosen], padding=True, truncation=True,
                                    max_length=meta["max_seq_length"], return_tensors="np")
            states = self.session.run(None, {k: tokens[k].astype(np.int64) for k in meta["inputs"]})[0]
            states = states[-1] if meta["all_layers"] else states
            mask = tokens["attention_mask"][..., None].astype(states.dtype)
            if meta["pooling"] == "cls":
                pooled = states[:, 0]
            elif meta["pooling"] == "max":
                pooled = np.where(mask > 0, states, -1e9).max(axis=1)
            else:
                pooled = (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            if meta["normalize"]:
                pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out[chosen] = pooled
        return out


mlflow.models.set_model(OnnxSentenceEmbedder())
