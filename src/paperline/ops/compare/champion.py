"""The candidate and the current champion, scored in the same run on the same rows: the numbers a promotion
decides on (TFX's Evaluator and ZenML's templates do the same: a baseline's number from another day, data version
or backend is not comparable).

`compare` scores both models on `ComparisonRows` (`paperline.ops.compare.suite`), computes every metric for each
(the primary metric, its slices, the STS 2012-2016 suite) and, for each, the paired bootstrap interval of
candidate - champion (`paperline.ops.compare.bootstrap`). The policy (`paperline.ops.registry.policy.decide`)
reads the primary metric's interval for its margin and the other metrics for its guards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paperline.ops.compare.bootstrap import Interval, paired_difference, spearman
from paperline.ops.compare.scoring import UnscorableModel, score_rows
from paperline.ops.compare.suite import SUITE_AVERAGE, SUITE_YEARS, ComparisonRows


@dataclass
class Comparison:
    """What the run measured of its candidate and (when there is one and it could be scored) its champion."""

    primary_metric: str
    champion_version: str | None  # None: no champion yet
    candidate: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] = field(default_factory=dict)  # empty when there is no champion or it is unscored
    intervals: dict[str, Interval] = field(default_factory=dict)  # metric -> candidate - champion
    rows: dict[str, int] = field(default_factory=dict)  # metric -> rows it is computed over
    removed: dict[str, int] = field(default_factory=dict)  # suite year -> pairs left out (trained on)
    unscored: str | None = None  # why the champion could not be scored here

    @property
    def scored(self) -> bool:
        """Whether the champion was scored on the same rows in this run."""
        return self.champion_version is not None and self.unscored is None and bool(self.champion)

    def run_metrics(self) -> dict[str, float]:
        """What the MLflow run logs: `compare.<metric>` for the candidate, `champion_<metric>` for the champion,
        and `delta_<metric>` with `_low`/`_high` for the interval (names MLflow accepts: no `=` or `:`)."""
        out = {f"compare.{k}": v for k, v in self.candidate.items()}
        out.update({f"champion_{k}": v for k, v in self.champion.items()})
        for name, interval in self.intervals.items():
            out.update({f"delta_{name}": interval.point, f"delta_{name}_low": interval.low,
                        f"delta_{name}_high": interval.high})
        out.update({f"suite_removed.{year}": float(n) for year, n in self.removed.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"primary_metric": self.primary_metric, "champion_version": self.champion_version,
                "candidate": self.candidate, "champion": self.champion,
                "intervals": {k: v.to_dict() for k, v in self.intervals.items()}, "rows": self.rows,
                "removed": self.removed, "unscored": self.unscored}

    def lines(self) -> list[str]:
        """The summary's lines: the primary metric with its interval, then the suite per year."""
        primary = self.primary_metric
        out = []
        if self.champion_version is None:
            out.append(f"champion: none yet; {primary} {self.candidate.get(primary, float('nan')):.2f} on "
                       f"{self.rows.get(primary, 0)} rows")
        elif not self.scored:
            out.append(f"champion v{self.champion_version}: not scored in this run ({self.unscored})")
        else:
            out.append(f"champion v{self.champion_version} on the same {self.rows[primary]} rows: {primary} "
                       f"{self.candidate[primary]:.2f} vs {self.champion[primary]:.2f}, difference "
                       f"{self.intervals[primary].text()}")
        suite = [name for name in (*(f"{y}_spearman" for y in SUITE_YEARS), SUITE_AVERAGE) if name in self.candidate]
        for name in suite:
            rows = f" ({self.rows[name]} rows, {self.removed.get(name.removesuffix('_spearman'), 0)} trained-on " \
                   "pairs left out)" if name in self.rows else " (mean of the years)"
            theirs = f" vs champion {self.champion[name]:.2f}" if name in self.champion else ""
            out.append(f"suite {name}: {self.candidate[name]:.2f}{theirs}{rows}")
        return out


def _metrics(scores: np.ndarray, gold: np.ndarray, rows: ComparisonRows) -> dict[str, float]:
    values = {name: spearman(scores[index], gold[index]) for name, index in rows.metrics.items()}
    years = [values[f"{year}_spearman"] for year in SUITE_YEARS if f"{year}_spearman" in values]
    if len(years) == len(SUITE_YEARS):
        values[SUITE_AVERAGE] = float(np.mean(years))
    return values


def compare(rows: ComparisonRows, *, candidate_uri: str, candidate_id: str, champion_uri: str | None,
            champion_version: str | None, champion_id: str | None, resamples: int, confidence: float,
            cache_dir: Path | None = None, seed: int = 0) -> Comparison:
    """Score the candidate and (if any) the champion on `rows`; intervals for every metric both have. `*_id` names a
    model for the scores' cache: its training cache key, so a champion's scores from when it was the candidate are
    reused.

    The candidate must score (a model that cannot be served cannot be promoted either: the error propagates);
    a champion that cannot is recorded in `unscored`, and the policy decides what that means.
    """
    gold = np.asarray(rows.rows.gold, dtype=np.float64)
    result = Comparison(rows.primary_metric, champion_version, removed=dict(rows.removed),
                        rows={name: len(index) for name, index in rows.metrics.items()})
    try:
        candidate_scores = score_rows(candidate_uri, rows.rows, candidate_id, cache_dir)
    except UnscorableModel as error:
        raise UnscorableModel(f"the candidate: {error}") from None
    result.candidate = _metrics(candidate_scores, gold, rows)
    if champion_uri is None:
        return result
    try:
        champion_scores = score_rows(champion_uri, rows.rows, champion_id or champion_uri, cache_dir)
    except UnscorableModel as error:
        result.unscored = str(error)
        return result
    result.champion = _metrics(champion_scores, gold, rows)
    for name, index in rows.metrics.items():
        result.intervals[name] = paired_difference(candidate_scores[index], champion_scores[index], gold[index],
                                                   resamples=resamples, confidence=confidence, seed=seed)
    return result
