"""The method card (`projects/<name>/project.yaml`): the paper, the data kinds it reads, the primary metric and
the reference results a run is checked against.

The card is the one place that names a project's datasets and its base model: a config that does not set
`data` or `base_model` gets them from the card (`MethodCard.fill_config`, applied by the config loader).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from paperline.core.config import ConfigError, StrictModel


class Paper(StrictModel):
    title: str
    arxiv: str | None = None
    venue: str | None = None
    bibtex: str


class ReferenceImplementation(StrictModel):
    url: str
    commit: str | None = None


class DataNeed(StrictModel):
    """A dataset the method reads, its data kind (a file in paperline/data/kinds/) and the splits a run reads.

    `min_rows` is the smallest each split may be, per split: the data gate fails a version whose split shrank below
    it (a truncated export that still parses trains a worse model that looks fine). `max_shrink` is the fraction
    of a split's rows a new version may lose against the last version that passed the gate, when this dataset
    needs another bound than its data kind's `max_shrink_fraction`; `max_duplicates` the fraction of a split's
    rows that may repeat an earlier row, when the dataset's own make-up needs another bound than its kind's
    `max_duplicate_fraction` (STS 2012-2016 repeats 3.2% of its pairs across subsets).
    """

    dataset: str
    kind: str
    splits: list[str] = Field(default_factory=lambda: ["train", "dev", "test"], min_length=1)  # the splits a run reads
    min_rows: dict[str, int] = Field(default_factory=dict)
    max_shrink: float | None = Field(default=None, ge=0.0, le=1.0)
    max_duplicates: float | None = Field(default=None, ge=0.0, le=1.0)


class PrimaryMetric(StrictModel):
    name: str
    greater_is_better: bool = True


class ReferenceResult(StrictModel):
    metric: str
    value: float
    tolerance: float
    provenance: str  # "paper Table N" or "our run <mlflow run id> on <hardware>"
    config: str = "default"
    # A result with `checked: false` is shown beside ours for comparison (a paper's number under a setup we
    # deviate from: another base model, other training data), never part of "reproduced".
    checked: bool = True


# The dataset each comparison (`MethodCard.compare`) scores its suite on; every run of such a project reads it.
COMPARE_SUITES = {"sts": "sts12_16"}
# The metrics the `sts` comparison measures on that suite (paperline.ops.compare.suite): Spearman x 100 per year,
# SentEval's "all" setting, and their mean. A card with `compare: sts` may list reference results for them.
SUITE_METRICS = ("sts12_spearman", "sts13_spearman", "sts14_spearman", "sts15_spearman", "sts16_spearman",
                 "sts12_16_avg_spearman")


class MethodCard(StrictModel):
    name: str
    title: str
    paper: Paper
    papers: list[Paper] = Field(default_factory=list)  # further papers a config reproduces
    reference_implementation: ReferenceImplementation | None = None
    data: list[DataNeed]
    base_model: str
    primary_metric: PrimaryMetric
    # How the platform scores this project's candidate and its champion on the same rows before a promotion
    # (paperline.ops.compare): `sts` scores sentence pairs on STS-B test (the primary metric, per genre and year)
    # and the STS 2012-2016 suite; none (null) for a task it cannot score, where the policy's
    # `unscored_champion` decides.
    compare: Literal["sts"] | None = None
    reference_results: list[ReferenceResult] = Field(default_factory=list)
    deviations: list[str] = Field(default_factory=list)
    status: str = Field(pattern="^(experimental|stable)$")

    def kind_of(self, dataset: str) -> str | None:
        need = self.need(dataset)
        return need.kind if need else None

    def min_rows(self) -> dict[str, dict[str, int]]:
        """Dataset -> split -> the smallest row count the data gate accepts."""
        return {need.dataset: dict(need.min_rows) for need in self.data if need.min_rows}

    def limits(self) -> dict[str, dict[str, float]]:
        """Dataset -> the gate limits the card sets for it (`max_shrink_fraction`, `max_duplicate_fraction`;
        the others keep their data kind's)."""
        out: dict[str, dict[str, float]] = {}
        for need in self.data:
            own = {"max_shrink_fraction": need.max_shrink, "max_duplicate_fraction": need.max_duplicates}
            if any(v is not None for v in own.values()):
                out[need.dataset] = {k: v for k, v in own.items() if v is not None}
        return out

    def fill_config(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A config's raw YAML with what it leaves to the card filled in (before `key=value` overrides apply):

        - `base_model`: the card's, unless the config sets another;
        - `data` absent: every dataset of the card, each with its kind and splits;
        - `data` a list of names (`[stsb]`): those datasets of the card, each with its kind and splits;
        - `data` a mapping: each entry's missing `kind` and `splits` from the card (an entry may narrow the splits
          or set `allow_shrink`; one that names another kind is reported by the contract check).
        """
        raw = dict(raw)
        raw.setdefault("base_model", self.base_model)
        data = raw.get("data")
        if data is None:
            data = [need.dataset for need in self.data]
        if isinstance(data, list):
            unknown = [name for name in data if self.need(name) is None]
            if unknown:
                raise ConfigError(f"`data` names {', '.join(map(str, unknown))}, not in the card's `data:` "
                                  f"({', '.join(n.dataset for n in self.data)})")
            data = {name: {} for name in data}
        if isinstance(data, dict):
            data = {name: self._use(name, use) for name, use in data.items()}
            suite = COMPARE_SUITES.get(self.compare or "")
            if suite and self.need(suite) and suite not in data:  # read by every run: gated, logged, versioned
                data[suite] = self._use(suite, {})
        raw["data"] = data
        return raw

    def need(self, dataset: str) -> DataNeed | None:
        return next((need for need in self.data if need.dataset == dataset), None)

    def _use(self, name: str, use: Any) -> Any:
        need = self.need(name)
        if need is None or not isinstance(use, dict | None):
            return use  # not the card's: validation or the contract check says what is wrong
        return {"kind": need.kind, "splits": list(need.splits), **(use or {})}
