"""Paired bootstrap of a Spearman difference: is the candidate better than the champion beyond the noise of the
evaluation rows?

Both models are scored on the same rows, so the rows are resampled together (a *paired* bootstrap, Koehn 2004;
Dror et al. 2018, "The Hitchhiker's Guide to Testing Statistical Significance in NLP"): each resample draws n row
indices with replacement, computes Spearman x 100 of each model's scores against the gold scores on those rows,
and keeps the difference. The interval is the percentile interval of the differences. Row noise only: the spread
of a method over training seeds is another source of noise, which the policy's margin (`min_improvement`) covers.

Numpy and scipy only, vectorised over resamples in blocks: 1,000 resamples took 0.7 s for 1,379 rows and 7 s for
12,544 rows on a shared 2-core CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BLOCK = 100  # resamples ranked at once: bounds memory at BLOCK x rows x 8 bytes per array (10 MB at 12.5k rows)


@dataclass(frozen=True)
class Interval:
    """candidate - champion: the difference on all rows (`point`) and its bootstrap interval [low, high]."""

    point: float
    low: float
    high: float
    confidence: float
    resamples: int
    rows: int

    def text(self) -> str:
        return (f"{self.point:+.2f} [{self.low:+.2f}, {self.high:+.2f}] ({self.confidence:.0%} paired bootstrap, "
                f"{self.resamples} resamples of {self.rows} rows)")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def spearman(predicted, gold) -> float:
    """Spearman x 100 (average ranks for ties, as scipy.stats.spearmanr)."""
    return float(_spearman_rows(np.asarray(predicted, float)[None, :], np.asarray(gold, float)[None, :])[0])


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=1, method="average")


def _centred_ranks(values: np.ndarray) -> np.ndarray:
    ranks = _ranks(values)
    return ranks - ranks.mean(1, keepdims=True)


def _spearman_rows(predicted: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman x 100 of each row of `predicted` against the same row of `gold` (2-D arrays)."""
    return _correlation(_centred_ranks(predicted), _centred_ranks(gold))


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson x 100 per row of centred ranks: Spearman."""
    denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * (a * b).sum(1) / denominator  # NaN where a resample has constant scores


def paired_difference(candidate, champion, gold, *, resamples: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> Interval:
    """The interval of Spearman(candidate) - Spearman(champion) over `resamples` paired resamples of the rows.

    Seeded: the same rows, scores and settings give the same interval, so a rerun reaches the same decision.
    """
    candidate, champion, gold = (np.asarray(x, dtype=np.float64) for x in (candidate, champion, gold))
    if not len(gold) == len(candidate) == len(champion):
        raise ValueError(f"scores of {len(candidate)} and {len(champion)} rows for {len(gold)} gold scores")
    if len(gold) < 3:
        raise ValueError(f"{len(gold)} rows are too few for an interval")
    point = spearman(candidate, gold) - spearman(champion, gold)
    rng = np.random.default_rng(seed)
    differences = []
    for start in range(0, resamples, BLOCK):
        rows = rng.integers(0, len(gold), size=(min(BLOCK, resamples - start), len(gold)))
        gold_ranks = _centred_ranks(gold[rows])  # once per block, for both models
        differences.append(_correlation(_centred_ranks(candidate[rows]), gold_ranks)
                           - _correlation(_centred_ranks(champion[rows]), gold_ranks))
    spread = np.concatenate(differences)
    spread = spread[~np.isnan(spread)]
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(spread, [tail, 100.0 - tail]) if len(spread) else (np.nan, np.nan)
    return Interval(point=float(point), low=float(low), high=float(high), confidence=confidence,
                    resamples=resamples, rows=len(gold))
