"""Score sentence pairs with a logged or registered MLflow model, the way it is served.

Both the candidate (its logged model, `models:/<model id>`) and the champion (`models:/<name>/<version>`) are
loaded with `mlflow.pyfunc.load_model` and scored by the same code on the same rows, so the two numbers differ only
by the model: same data version, same rows, same backend (the served one). A model whose input is a list of
sentences returns embeddings, and a pair's score is the cosine of its two sentences' (each distinct sentence is
encoded once, however many pairs hold it); a model whose input is a list of pairs (a cross-encoder) scores each
distinct pair once.

Scores are cached in the workspace per model identity and rows (plain JSON, `<workspace>/cache/scores`): a rerun
against the same champion does not encode it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from paperline.ops.compare.suite import Rows

CHUNK = 256  # sentences (or pairs) per predict call: bounded memory, and progress between calls
log = logging.getLogger("paperline")


class UnscorableModel(Exception):
    """The model cannot be loaded or scored here; the message says why in one line."""


def _takes_pairs(model) -> bool:
    """Whether the model's input is a list of [sentence, sentence] pairs (else a list of sentences), read from
    the input example logged with it (paperline logs one with every model)."""
    try:
        example = model.input_example
    except Exception:  # noqa: BLE001 -- an example MLflow cannot read back: fall back to the schema
        example = None
    if example is None:
        schema = model.metadata.get_input_schema()
        return schema is not None and "Array(Array" in repr(schema.inputs)
    if hasattr(example, "values"):  # a DataFrame: one column of sentences, or one of pairs
        example = [row[0] for row in example.values.tolist()]
    return bool(example) and isinstance(example[0], (list, tuple, np.ndarray))


def local_model_uri(model_uri: str) -> str:
    """The model's own folder when its artifacts are on this machine (a workspace's file store), so that loading it
    copies nothing (about 2 s per model of MiniLM's size); else the URI, which MLflow downloads."""
    from urllib.parse import urlparse

    from mlflow import MlflowClient

    ref = model_uri.removeprefix("models:/")
    if not model_uri.startswith("models:/"):
        return model_uri
    try:
        client = MlflowClient()
        name, _, version = ref.partition("/")
        location = (client.get_model_version_download_uri(name, version) if version
                    else client.get_logged_model(ref).artifact_location)
    except Exception:  # noqa: BLE001 -- an alias, a server without these calls: let MLflow resolve the URI
        return model_uri
    parsed = urlparse(location)
    folder = Path(parsed.path) if parsed.scheme in ("", "file") else None
    return str(folder) if folder is not None and (folder / "MLmodel").is_file() else model_uri


def _predict(model, inputs: list, what: str) -> np.ndarray:
    from paperline.ml.progress import bar

    out = []
    shown = bar(len(inputs), f"scoring {what}", unit="input", leave=False)
    try:
        for start in range(0, len(inputs), CHUNK):
            chunk = inputs[start:start + CHUNK]
            out.append(np.asarray(model.predict(chunk), dtype=np.float64))
            shown.update(len(chunk))
    finally:
        shown.close()
    return np.concatenate(out) if out else np.zeros(0)


def score_rows(model_uri: str, rows: Rows, identity: str, cache_dir: Path | None = None) -> np.ndarray:
    """One score per row of `rows` from the model at `model_uri`; `identity` names the model for the cache
    (its cache key, or its registered name and version)."""
    key = hashlib.sha256(f"{identity}\n{rows.digest()}".encode()).hexdigest()
    cached = cache_dir / f"{key}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        scores = json.loads(cached.read_text())
        if len(scores) == len(rows):
            return np.asarray(scores, dtype=np.float64)
    import mlflow

    try:
        model = mlflow.pyfunc.load_model(local_model_uri(model_uri))
    except Exception as error:  # noqa: BLE001 -- any failure to load means: not scorable here, say why
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UnscorableModel(f"cannot load {model_uri}: {first}") from None
    try:
        if _takes_pairs(model):
            pairs = sorted({(a, b) for a, b in zip(rows.sentence1, rows.sentence2)})
            index = {pair: i for i, pair in enumerate(pairs)}
            scored = _predict(model, [list(p) for p in pairs], "pairs").reshape(-1)
            scores = scored[[index[(a, b)] for a, b in zip(rows.sentence1, rows.sentence2)]]
        else:
            sentences = sorted(set(rows.sentence1) | set(rows.sentence2))
            index = {s: i for i, s in enumerate(sentences)}
            embeddings = _predict(model, sentences, "sentences")
            embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
            first = embeddings[[index[s] for s in rows.sentence1]]
            second = embeddings[[index[s] for s in rows.sentence2]]
            scores = (first * second).sum(1)
    except Exception as error:  # noqa: BLE001 -- a model that loads but cannot score these rows
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UnscorableModel(f"{model_uri} cannot score sentence pairs: {first}") from None
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")  # replaced whole: a reader never sees half
        partial.write_text(json.dumps([round(float(s), 7) for s in scores]))
        partial.replace(cached)
    return scores
