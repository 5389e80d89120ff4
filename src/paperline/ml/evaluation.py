"""Evaluation: STS Spearman correlation of cosine similarities, the metric every sentence-embedding paper reports.

Importable without Prefect, MLflow, DVC or Great Expectations. Scores are Spearman x 100, as in the papers.
"""

from __future__ import annotations

from collections.abc import Sequence

from paperline.data.kinds.scored_pairs import ScoredPair


def sts_spearman(model, pairs: Sequence[ScoredPair], name: str = "sts", batch_size: int = 64) -> float:
    """Spearman x 100 between gold scores and the cosine similarity of the two sentences' embeddings.

    Uses sentence-transformers' `EmbeddingSimilarityEvaluator`, the evaluator SBERT (Reimers & Gurevych, 2019)
    and its successors report.
    """
    return sts_scored(model, pairs, name, batch_size)[0]


def sts_scored(model, pairs: Sequence[ScoredPair], name: str = "sts",
               batch_size: int = 64) -> tuple[float, dict[str, list[float]]]:
    """`sts_spearman` and the predictions it ranked: {"gold": score 0-5 per pair, "predicted": cosine per pair},
    from the evaluator's own embeddings (no second encoding pass), as plain floats for a predicted-vs-gold plot."""
    import numpy as np
    from sentence_transformers import SimilarityFunction
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from paperline.ml.progress import bar

    kept = []  # the evaluator's embeddings of sentences1, then sentences2
    # A bar per split, gone when the split is done: evaluation can run for minutes on a CPU with nothing else shown.
    shown = bar(2 * len(pairs), f"evaluating {name}", unit="sentence", leave=False)

    class KeepingEmbeddings(EmbeddingSimilarityEvaluator):
        def embed_inputs(self, model, sentences, **kwargs):
            embeddings = super().embed_inputs(model, sentences, **kwargs)
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


def sts_results(model, splits: dict[str, Sequence[ScoredPair]],
                prefix: str) -> tuple[dict[str, float], dict[str, dict[str, list[float]]]]:
    """`sts_metrics`, and each split's predictions under `{prefix}_{split}` (`Evaluation.predictions`)."""
    metrics, predictions = {}, {}
    for split, pairs in splits.items():
        metrics[f"{prefix}_{split}_spearman"], predictions[f"{prefix}_{split}"] = sts_scored(model, pairs, name=split)
    return metrics, predictions
