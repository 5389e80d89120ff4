"""The method card (`projects/<name>/project.yaml`): the paper, the data kinds it reads, the primary metric and
the reference results a run is checked against."""

from __future__ import annotations

from pydantic import Field

from paperline.core.config import StrictModel


class Paper(StrictModel):
    title: str
    arxiv: str | None = None
    venue: str | None = None
    bibtex: str


class ReferenceImplementation(StrictModel):
    url: str
    commit: str | None = None


class DataNeed(StrictModel):
    """A dataset the method reads and its data kind (a file in paperline/data/kinds/).

    `min_rows` is the smallest each split may be, per split: the data gate fails a version whose split shrank below
    it (a truncated export that still parses trains a worse model that looks fine). `max_shrink` is the fraction
    of a split's rows a new version may lose against the last version that passed the gate, when this dataset
    needs another bound than its data kind's `max_shrink_fraction`.
    """

    dataset: str
    kind: str
    min_rows: dict[str, int] = Field(default_factory=dict)
    max_shrink: float | None = Field(default=None, ge=0.0, le=1.0)


class PrimaryMetric(StrictModel):
    name: str
    greater_is_better: bool = True


class ReferenceResult(StrictModel):
    metric: str
    value: float
    tolerance: float
    provenance: str  # "paper Table N" or "our run <mlflow run id> on <hardware>"
    config: str = "default"


class MethodCard(StrictModel):
    name: str
    title: str
    paper: Paper
    papers: list[Paper] = Field(default_factory=list)  # further papers a config reproduces
    reference_implementation: ReferenceImplementation | None = None
    data: list[DataNeed]
    base_model: str
    primary_metric: PrimaryMetric
    reference_results: list[ReferenceResult] = Field(default_factory=list)
    deviations: list[str] = Field(default_factory=list)
    status: str = Field(pattern="^(experimental|stable)$")

    def kind_of(self, dataset: str) -> str | None:
        return next((need.kind for need in self.data if need.dataset == dataset), None)

    def min_rows(self) -> dict[str, dict[str, int]]:
        """Dataset -> split -> the smallest row count the data gate accepts."""
        return {need.dataset: dict(need.min_rows) for need in self.data if need.min_rows}

    def max_shrink(self) -> dict[str, float]:
        """Dataset -> the shrink fraction the card sets for it (others keep their data kind's)."""
        return {need.dataset: need.max_shrink for need in self.data if need.max_shrink is not None}
