"""Evaluation: STS Spearman correlation of cosine similarities, the metric every sentence-embedding paper reports.

Importable without Prefect, MLflow, DVC or Great Expectations. Scores are Spearman x 100, as in the papers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from paperline.data.kinds.scored_pairs import ScoredPair

# torch: the model's own encode; onnx / onnx-int8: paperline.ml.fast_encode, used only where the check below
# finds its Spearman within TOLERANCE of PyTorch's on the check split (dev)
Backend = Literal["torch", "onnx", "onnx-int8"]
TOLERANCE = 0.1
CHECKS = "spearman_checks.json"  # beside the export: one check per model, check split and backend
log = logging.getLogger("paperline")


def sts_spearman(model, pairs: Sequence[ScoredPair], name: str = "sts", batch_size: int = 64) -> float:
    """Spearman x 100 between gold scores and the cosine similarity of the two sentences' embeddings.

    Uses sentence-transformers' `EmbeddingSimilarityEvaluator`, the evaluator SBERT (Reimers & Gurevych, 2019)
    and its successors report.
    """
    return sts_scored(model, pairs, name, batch_size)[0]


def sts_scored(model, pairs: Sequence[ScoredPair], name: str = "sts", batch_size: int = 64,
               encoder=None) -> tuple[float, dict[str, list[float]]]:
    """`sts_spearman` and the predictions it ranked: {"gold": score 0-5 per pair, "predicted": cosine per pair},
    from the evaluator's own embeddings (no second encoding pass), as plain floats for a predicted-vs-gold plot.

    `encoder` (an `OnnxEncoder`, see `sts_backend`) embeds the sentences instead of `model.encode`."""
    import numpy as np
    from sentence_transformers import SimilarityFunction
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from paperline.ml.progress import bar

    kept = []  # the evaluator's embeddings of sentences1, then sentences2
    # A bar per split, gone when the split is done: evaluation can run for minutes on a CPU with nothing else shown.
    shown = bar(2 * len(pairs), f"evaluating {name}", unit="sentence", leave=False)

    class KeepingEmbeddings(EmbeddingSimilarityEvaluator):
        def embed_inputs(self, model, sentences, **kwargs):
            if encoder is None:
                embeddings = super().embed_inputs(model, sentences, **kwargs)
            else:
                embeddings = encoder.encode(list(sentences), batch_size=self.batch_size)
            kept.append(embeddings)
            shown.update(len(sentences))
            return embeddings

    if not pairs:
        raise ValueError(f"no pairs to evaluate for '{name}'")
    evaluator = KeepingEmbeddings(
        sentences1=[p.sentence1 for p in pairs],
        sentences2=[p.sentence2 for p in pairs],
        scores=[p.score / 5.0 for p in pairs],
        main_similarity=SimilarityFunction.COSINE,
        similarity_fn_names=["cosine"],
        batch_size=batch_size,
        name=name,
        show_progress_bar=False,
    )
    try:
        result = evaluator(model)
    finally:
        shown.close()
    first, second = (np.asarray(e, dtype=np.float64) for e in kept[-2:])
    cosine = (first * second).sum(1) / np.maximum(np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1),
                                                  1e-12)
    predictions = {"gold": [float(p.score) for p in pairs], "predicted": [round(float(c), 6) for c in cosine]}
    return 100.0 * float(result[f"{name}_spearman_cosine"]), predictions


def sts_metrics(model, splits: dict[str, Sequence[ScoredPair]], prefix: str) -> dict[str, float]:
    """`{prefix}_{split}_spearman` for every split, e.g. `stsb_test_spearman`."""
    return sts_results(model, splits, prefix)[0]


def sts_results(model, splits: dict[str, Sequence[ScoredPair]], prefix: str,
                encoder=None) -> tuple[dict[str, float], dict[str, dict[str, list[float]]]]:
    """`sts_metrics`, and each split's predictions under `{prefix}_{split}` (`Evaluation.predictions`)."""
    metrics, predictions = {}, {}
    for split, pairs in splits.items():
        metrics[f"{prefix}_{split}_spearman"], predictions[f"{prefix}_{split}"] = sts_scored(
            model, pairs, name=split, encoder=encoder)
    return metrics, predictions


def sts_backend_results(model, model_path: str | Path, splits: dict[str, Sequence[ScoredPair]], prefix: str,
                        backend: Backend = "torch", check_split: str = "dev"):
    """`sts_results` with the encode backend chosen by `sts_backend` on `splits[check_split]` (else the first
    split): (metrics, predictions, tags), the tags saying which backend produced the numbers and why."""
    check = splits.get(check_split) or next(iter(splits.values()), [])
    encoder, note = sts_backend(model, model_path, check, backend)
    metrics, predictions = sts_results(model, splits, prefix, encoder=encoder)
    used = "torch" if encoder is None else backend
    return metrics, predictions, {f"{prefix}_encode_backend": used, f"{prefix}_encode_check": note}


def sts_backend(model, model_path: str | Path, check: Sequence[ScoredPair], backend: Backend = "torch",
                all_layers: bool = False, tolerance: float = TOLERANCE, cache_dir: str | Path | None = None):
    """(encoder or None for PyTorch, a one-line note): the ONNX export of `model_path` when its Spearman on
    `check` is within `tolerance` of PyTorch's, checked once per model content, check rows and backend (the
    result is kept beside the export), else None with one log line. `model` is `model_path` loaded in PyTorch."""
    if backend == "torch":
        return None, "torch (asked for)"
    from paperline.ml import fast_encode

    variant = "int8" if backend == "onnx-int8" else "optimized"
    try:
        folder, _ = fast_encode.cached_export(model_path, variant, all_layers, cache_dir)
    except fast_encode.NotExportable as error:
        log.info("%s: %s", backend, error)
        return None, f"torch ({backend} not applicable: {error})"
    encoder = fast_encode.OnnxEncoder(folder)
    key = hashlib.sha256(json.dumps([[p.sentence1, p.sentence2, p.score] for p in check]).encode()).hexdigest()
    checks_file = folder / CHECKS
    checks = json.loads(checks_file.read_text()) if checks_file.is_file() else {}
    if key not in checks:
        checks[key] = {"torch": sts_scored(model, check, name="check")[0],
                       "onnx": sts_scored(model, check, name="check", encoder=encoder)[0], "rows": len(check)}
        partial = checks_file.with_name(f".{CHECKS}.{os.getpid()}")  # replaced whole: a reader never sees half
        partial.write_text(json.dumps(checks, indent=1))
        partial.replace(checks_file)
    torch_score, onnx_score = checks[key]["torch"], checks[key]["onnx"]
    said = (f"{backend} Spearman {onnx_score:.2f} vs torch {torch_score:.2f} on {checks[key]['rows']} check rows "
            f"(|difference| {abs(onnx_score - torch_score):.2f}, tolerance {tolerance})")
    if abs(onnx_score - torch_score) > tolerance:
        log.info("%s encode differs from PyTorch beyond %s Spearman on the check split: evaluating with PyTorch (%s)",
                 backend, tolerance, said)
        return None, f"torch ({said})"
    return encoder, said
