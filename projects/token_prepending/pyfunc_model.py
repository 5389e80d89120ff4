"""MLflow "models from code" file for Token Prepending sentence embeddings (Fu et al., ACL 2025, arXiv 2412.11556).

`mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"lm": <model folder>, "settings": <json>},
code_paths=[token_prepending.py])` stores this source, not a pickle, so loading never depends on a class from
paperline's dynamically imported project modules. `load_model(uri).predict(["a sentence", ...])` returns a
float32 numpy array [n, hidden]. `token_prepending` (shipped through code_paths) is imported only in
`load_context`: MLflow executes this file when logging, where code_paths are not on sys.path yet.
"""

from __future__ import annotations

import json

import mlflow
from mlflow.pyfunc import PythonModel


class TokenPrependingEmbedder(PythonModel):
    """Tokenizer, causal LM, prompt and TP hooks; the settings JSON says band, placeholder and output layer."""

    def load_context(self, context):
        import torch
        import token_prepending
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tp = token_prepending
        with open(context.artifacts["settings"]) as f:
            saved = json.load(f)
        self.settings = token_prepending.EmbedSettings.from_json(saved["embedding"])
        self.batch_size = int(saved.get("batch_size", 32))
        folder = context.artifacts["lm"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"  # the last position must be every row's last real token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()

    def predict(self, context, model_input: list[str], params=None):
        sentences = [str(s) for s in model_input]
        embeddings = self._tp.embed(self.model, self.tokenizer, sentences, self.settings, self.batch_size)
        return embeddings.numpy()


mlflow.models.set_model(TokenPrependingEmbedder())
