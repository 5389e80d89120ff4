"""The method card (`projects/<name>/project.yaml`): the paper, the data kinds it reads, the primary metric and
the reference results a run is checked against.

The card is the one place that names a project's datasets and its base model: a config that does not set
`data` or `base_model` gets them from the card (`MethodCard.fill_config`, applied by the config loader).
"""

from __future__ import annotations

from typing import Any

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
    needs another bound than its data kind's `max_shrink_fraction`.
    """

    dataset: str
    kind: str
    splits: list[str] = Field(default_factory=lambda: ["train", "dev", "test"], min_length=1)  # the splits a run reads
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
        need = self.need(dataset)
        return need.kind if need else None

    def min_rows(self) -> dict[str, dict[str, int]]:
        """Dataset -> split -> the smallest row count the data gate accepts."""
        return {need.dataset: dict(need.min_rows) for need in self.data if need.min_rows}

    def max_shrink(self) -> dict[str, float]:
        """Dataset -> the shrink fraction the card sets for it (others keep their data kind's)."""
        return {need.dataset: need.max_shrink for need in self.data if need.max_shrink is not None}

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
        raw["data"] = data
        return raw

    def need(self, dataset: str) -> DataNeed | None:
        return next((need for need in self.data if need.dataset == dataset), None)

    def _use(self, name: str, use: Any) -> Any:
        need = self.need(name)
        if need is None or not isinstance(use, dict | None):
            return use  # not the card's: validation or the contract check says what is wrong
        return {"kind": need.kind, "splits": list(need.splits), **(use or {})}
