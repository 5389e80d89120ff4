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
    from sentence_transformers import SimilarityFunction
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    if not pairs:
        raise ValueError(f"no pairs to evaluate for '{name}'")
    evaluator = EmbeddingSimilarityEvaluator(
        sentences1=[p.sentence1 for p in pairs],
        sentences2=[p.sentence2 for p in pairs],
        scores=[p.score / 5.0 for p in pairs],
        main_similarity=SimilarityFunction.COSINE,
        similarity_fn_names=["cosine"],
        batch_size=batch_size,
        name=name,
        show_progress_bar=False,
    )
    result = evaluator(model)
    return 100.0 * float(result[f"{name}_spearman_cosine"])


def sts_metrics(model, splits: dict[str, Sequence[ScoredPair]], prefix: str) -> dict[str, float]:
    """`{prefix}_{split}_spearman` for every split, e.g. `stsb_test_spearman`."""
    return {f"{prefix}_{split}_spearman": sts_spearman(model, pairs, name=split) for split, pairs in splits.items()}
