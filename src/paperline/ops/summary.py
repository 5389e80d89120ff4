"""What `paperline run` prints at the end of a run, and what the flow returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunSummary:
    """What `paperline run` prints at the end, and what the flow returns."""

    project: str
    config: str
    status: str  # registered | cached | gate-failed | failed
    metrics: dict[str, float] = field(default_factory=dict)
    model_name: str | None = None
    model_version: str | None = None
    champion_moved: bool = False
    is_champion: bool = False  # after the run: whether this run's version holds `champion`
    budget_aliases: dict[str, str] = field(default_factory=dict)  # alias -> the (layers x dims) cell it serves
    decision: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    dataset_md5: str | None = None
    cache_hit: bool = False
    message: str = ""

    def lines(self, primary_metric: str | None = None) -> list[str]:
        out = [f"{self.project} [{self.config}]: {self.status}" + (f": {self.message}" if self.message else "")]
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
        out.extend(f"  policy: {reason}" for reason in self.decision)
        if self.cache_hit:
            out.append("  training and evaluation: cached (unchanged code, config and data)")
        out.append(f"  data: {self.dataset_md5}")
        out.append(f"  MLflow run: {self.mlflow_run_id} (experiment {self.mlflow_experiment_id}); `paperline ui` to open")
        if self.flow_run_url:
            out.append(f"  Prefect flow run: {self.flow_run_url}")
        return out
