"""The rows a candidate and its champion are scored on, and the names of what is measured on them.

- The primary split (STS-B test, capped as the run's own evaluation is): the primary metric, and slices of it per
  genre and per year (`stsb_test_spearman.genre.main-news`, `stsb_test_spearman.year.2015`), from the columns the
  STS-B files carry.
- The STS 2012-2016 suite (`sts12_16/test.tsv`): Spearman x 100 per year over all of that year's subsets joined
  (SentEval's "all" setting, the one SimCSE and its successors report: `sts12_spearman` .. `sts16_spearman`) and
  their mean (`sts12_16_avg_spearman`), as the papers' tables have it.

Contamination: STS-B was drawn from the same STS 2012-2016 sets, so 4,755 suite rows are STS-B train pairs
(`../shared/datasets/README.md`). A suite row whose pair (whitespace-normalised, either order) is in a split a
model trained on (`trained_on`: its config's pair datasets, and its upstream models', recorded per version) is
left out, for both models, and counted per year: the suite then measures generalisation, as it claims to.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from paperline.project.card import COMPARE_SUITES, SUITE_METRICS

SUITE_DATASET = COMPARE_SUITES["sts"]
PRIMARY_SPLIT = ("stsb", "test")  # the `sts` comparison's primary rows: every STS card's primary metric is on them
*_YEAR_METRICS, SUITE_AVERAGE = SUITE_METRICS  # the card's names: sts12_spearman .. sts16_spearman, then the mean
SUITE_YEARS = tuple(name.removesuffix("_spearman") for name in _YEAR_METRICS)
MIN_SLICE_ROWS = 30  # a slice smaller than this is not reported: its Spearman is noise
# The kinds whose rows are sentence pairs, and their two text columns: what a suite pair can have been trained on.
PAIR_COLUMNS = {"scored_pairs": ("sentence1", "sentence2"), "nli_pairs": ("premise", "hypothesis")}
# Kinds that are also evaluated on: only their `train` split trains (dev selects, test scores). The others are
# training data in every split a config reads (SNLI's dev and test are the NLI training data here).
EVALUATED_KINDS = {"scored_pairs"}
# The kinds of the pair datasets of the team's data: a champion's `trained_on` may name one this config does not read.
PAIR_DATASETS = {"stsb": "scored_pairs", "snli": "nli_pairs"}


def pair_key(first: str, second: str) -> tuple[str, str]:
    """The identity of a sentence pair for the contamination check: whitespace collapsed, order ignored."""
    a, b = (re.sub(r"\s+", " ", s).strip() for s in (first, second))
    return (a, b) if a <= b else (b, a)


@dataclass
class Rows:
    """Pairs to score, with their gold scores; `slices` names subsets of them by row index."""

    sentence1: list[str] = field(default_factory=list)
    sentence2: list[str] = field(default_factory=list)
    gold: list[float] = field(default_factory=list)
    slices: dict[str, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.gold)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.sentence1, self.sentence2]).encode()).hexdigest()


@dataclass
class ComparisonRows:
    """Everything both models are scored on: `rows` (the primary split, then the suite's kept rows) and what
    each metric is computed over (`metric -> row indices`); `removed` counts the suite's contaminated rows by year."""

    primary_metric: str
    rows: Rows
    metrics: dict[str, list[int]]
    removed: dict[str, int]
    trained_on: list[str]


def _frame(path: Path):
    import pandas as pd

    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=0)


def trained_pairs(data_dir: Path, trained_on: list[str], kinds: dict[str, str]) -> set[tuple[str, str]]:
    """The pair keys of every `dataset:split` in `trained_on` whose kind holds sentence pairs."""
    pairs: set[tuple[str, str]] = set()
    for item in trained_on:
        dataset, _, split = item.partition(":")
        columns = PAIR_COLUMNS.get(kinds.get(dataset, ""))
        path = data_dir / dataset / f"{split}.tsv"
        if columns is None or not path.is_file():
            continue
        frame = _frame(path)
        pairs.update(pair_key(a, b) for a, b in zip(frame[columns[0]], frame[columns[1]]))
    return pairs


def comparison_rows(data_dir: Path, primary_metric: str, dataset: str, split: str, max_rows: int | None,
                    trained_on: list[str], kinds: dict[str, str]) -> ComparisonRows:
    """The primary split's rows (the first `max_rows`, as the run's evaluation reads them) with their genre and
    year slices, and the suite's rows not trained on (the first `max_rows` of each year when capped)."""
    rows, metrics = Rows(), {}
    primary = _frame(data_dir / dataset / f"{split}.tsv")
    if max_rows:
        primary = primary.head(max_rows)
    _add(rows, primary)
    metrics[primary_metric] = list(range(len(primary)))
    for column in ("genre", "year"):
        if column not in primary.columns:
            continue
        for value, group in primary.groupby(primary[column].str[:4] if column == "year" else primary[column]):
            if len(group) >= MIN_SLICE_ROWS:
                metrics[f"{primary_metric}.{column}.{value}"] = [int(i) for i in group.index]
    removed: dict[str, int] = {}
    suite_path = data_dir / SUITE_DATASET / "test.tsv"
    if suite_path.is_file():
        seen = trained_pairs(data_dir, trained_on, kinds)
        suite = _frame(suite_path)
        for year in SUITE_YEARS:
            rows_of_year = suite[suite["source"] == year]
            contaminated = [pair_key(a, b) in seen for a, b in zip(rows_of_year.sentence1, rows_of_year.sentence2)]
            removed[year] = sum(contaminated)
            kept = rows_of_year[[not c for c in contaminated]]
            if max_rows:
                kept = kept.head(max_rows)
            start = len(rows)
            _add(rows, kept)
            if len(kept) >= 3:
                metrics[f"{year}_spearman"] = list(range(start, len(rows)))
    return ComparisonRows(primary_metric, rows, metrics, removed, sorted(trained_on))


def _add(rows: Rows, frame) -> None:
    rows.sentence1 += list(frame.sentence1)
    rows.sentence2 += list(frame.sentence2)
    rows.gold += [float(s) for s in frame.score]


@dataclass(frozen=True)
class ComparisonPlan:
    """What a run needs to build its comparison rows once it knows the champion: where the data is, the primary
    split and its cap, what the candidate trained on, and where scores are cached."""

    data_dir: Path
    dataset: str
    split: str
    max_rows: int | None
    trained_on: tuple[str, ...]
    kinds: dict[str, str]
    cache_dir: Path | None = None

    def rows(self, primary_metric: str, champion_trained_on: list[str] | None) -> ComparisonRows:
        """The rows for this candidate and a champion: the suite leaves out what either trained on (a champion
        registered before paperline recorded it is taken to have trained on what the candidate did)."""
        seen = sorted(set(self.trained_on) | set(champion_trained_on or []))
        return comparison_rows(self.data_dir, primary_metric, self.dataset, self.split, self.max_rows, seen,
                               {**PAIR_DATASETS, **self.kinds})


def trained_on(data: dict[str, tuple[str, list[str]]], evaluated: tuple[str, str]) -> tuple[str, ...]:
    """`dataset:split` of every pair dataset a config reads to train: the `train` split of a kind that is also
    evaluated on (`EVALUATED_KINDS`), every split read of the others, never the evaluated split. `data` is
    dataset -> (kind, splits)."""
    out = []
    for dataset, (kind, splits) in sorted(data.items()):
        if kind not in PAIR_COLUMNS or dataset == SUITE_DATASET:
            continue
        used = [s for s in splits if s == "train"] if kind in EVALUATED_KINDS else list(splits)
        out += [f"{dataset}:{split}" for split in used if (dataset, split) != evaluated]
    return tuple(out)


def contamination_notes(plan: ComparisonPlan) -> list[str]:
    """The data gate report's line on the suite: how many of its pairs this config trains on, by year (left out of
    the suite's numbers; a champion's own training pairs are left out too when the run compares with it)."""
    if not (plan.data_dir / SUITE_DATASET / "test.tsv").is_file():
        return []
    rows = comparison_rows(plan.data_dir, "primary", plan.dataset, plan.split, None, list(plan.trained_on),
                           {**PAIR_DATASETS, **plan.kinds})
    total = sum(rows.removed.values())
    by_year = ", ".join(f"{year} {count}" for year, count in rows.removed.items())
    seen = ", ".join(plan.trained_on) or "no pair dataset"
    return [f"{SUITE_DATASET}/test: {total} pairs are also in what this config trains on ({seen}): {by_year}; "
            "left out of its suite numbers (contamination check)"]
