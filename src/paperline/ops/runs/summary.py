"""What a flow returns, typed: a run's summary, or the gate that stopped it.

The CLI's exit code follows the type (`exit_code`), never the text of a message: a run and a sweep stopped by a
data gate both return a `GateFailure`, so both exit 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from paperline.core.errors import BAD_DATA, FAILURE


@dataclass
class GateFailure:
    """A run or a sweep that a gate stopped before any training: nothing trained, nothing registered."""

    gate: str  # which gate: "data gate", or "the gate over the generated data"
    findings: list[str]  # the gate's summary lines, one per failed expectation
    exit_code: ClassVar[int] = BAD_DATA

    @property
    def message(self) -> str:
        return f"{self.gate} failed: {'; '.join(self.findings)}"


def exit_code(failed: bool, outcome: object) -> int:
    """The CLI's exit code for a flow's end: 0 when it did not fail, a gate's exit code when a gate stopped it,
    1 for any other failure."""
    if not failed:
        return 0
    return outcome.exit_code if isinstance(outcome, GateFailure) else FAILURE


@dataclass
class RunSummary:
    """What `paperline run` prints at the end, and what the flow returns."""

    project: str
    config: str
    status: str  # registered | cached | failed (a gate that stops a run returns a GateFailure instead)
    metrics: dict[str, float] = field(default_factory=dict)
    model_name: str | None = None
    model_version: str | None = None
    champion_moved: bool = False
    is_champion: bool = False  # after the run: whether this run's version holds `champion`
    budget_aliases: dict[str, str] = field(default_factory=dict)  # alias -> the (layers x dims) cell it serves
    decision: list[str] = field(default_factory=list)
    comparison: list[str] = field(default_factory=list)  # the champion on the same rows: interval, guards, suite
    # with the policy's require_approval: pending (the run waits), approved by ..., rejected by ..., expired ...
    approval: str | None = None
    model_card: str = ""  # the version's markdown card (paperline.ops.runs.model_card), once registered
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    dataset_md5: str | None = None
    cache_hit: bool = False
    message: str = ""
    mlflow_run_url: str | None = None  # the run's page in the MLflow UI (a local store: once `mlflow ui` runs)
    elapsed_s: float | None = None  # wall time of the flow run, from its start to this summary

    def model_uris(self) -> list[str]:
        """What loads this run's model: its version, and the champion alias when the version holds it."""
        if not self.model_version:
            return []
        uris = [f"models:/{self.model_name}/{self.model_version}"]
        if self.champion_moved or self.is_champion:
            uris.append(f"models:/{self.model_name}@champion")
        return uris

    def lines(self, primary_metric: str | None = None) -> list[str]:
        elapsed = f" in {_duration(self.elapsed_s)}" if self.elapsed_s is not None else ""
        message = f": {self.message}" if self.message else ""
        out = [f"{self.project} [{self.config}]: {self.status}{elapsed}{message}"]
        shown = sorted(self.metrics.items())
        if len(shown) > 12:  # a grid of metrics belongs in MLflow; the summary keeps the headline numbers
            shown = [(k, v) for k, v in shown if k.endswith(str(primary_metric))] or shown[:12]
            out.append(f"  ({len(self.metrics) - len(shown)} more metrics in the MLflow run)")
        for name, value in shown:
            mark = "  <- primary" if name == primary_metric else ""
            out.append(f"  {name:<40} {value:8.2f}{mark}")
        if self.model_version:
            alias = ("champion (promoted)" if self.champion_moved else "champion (unchanged)" if self.is_champion
                     else "challenger (champion unchanged)")
            out.append(f"  model: {self.model_name} v{self.model_version}, alias {alias}")
            out.extend(f"  budget alias: {a} -> {cell}" for a, cell in sorted(self.budget_aliases.items()))
            out.append(f"  load it: {' or '.join(self.model_uris())}")
        out.extend(f"  compared: {line}" for line in self.comparison)
        out.extend(f"  policy: {reason}" for reason in self.decision)
        if self.approval:
            out.append(f"  approval: {self.approval}")
        if self.cache_hit:
            out.append("  training and evaluation: cached (unchanged code, config and data)")
        out.append(f"  data: {self.dataset_md5}")
        out.append(f"  MLflow run: {self.mlflow_run_url or self.mlflow_run_id} (`paperline ui` says how to open it)")
        if self.flow_run_url:
            out.append(f"  Prefect flow run: {self.flow_run_url}")
        return out


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{seconds:.1f} s"
