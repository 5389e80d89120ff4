"""The decisions a run makes, as plain functions the flow calls: is the card's reference result reproduced,
does the policy move `champion`, and what the run's lineage says. No Prefect here: each is unit-tested, and
another orchestrator could call them the same way."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperline.ops.compare.champion import Comparison
from paperline.ops.registry.policy import Decision, Policy, decide
from paperline.project.card import MethodCard
from paperline.project.interface import UpstreamModel
from paperline.ops.tracking import tags


def git_commit(root: Path) -> str:
    """The commit of the repository, with `-dirty` when tracked files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def reference_reproduced(card: MethodCard, config_name: str, metrics: dict[str, float]) -> bool | None:
    """Whether every reference result of the card for this config is within its tolerance; None if it has none."""
    # a paper's number under another setup (`checked: false`) is shown beside ours, never reproduced
    references = [r for r in card.reference_results
                  if r.config == config_name and r.metric in metrics and r.checked]
    if not references:
        return None
    return all(abs(metrics[r.metric] - r.value) <= r.tolerance for r in references)


def champion_value(champion: Any | None, metric_name: str) -> float | None:
    """The champion version's recorded value of the primary metric (a `paperline.metric.<name>` tag)."""
    if champion is None:
        return None
    return float(champion.tags.get(tags.METRIC_PREFIX + metric_name, "nan"))


def promotion_decision(policy: Policy, card: MethodCard, config_name: str, metrics: dict[str, float],
                       version: str, champion: Any | None, comparison: Comparison | None = None) -> Decision:
    """The policy's verdict on a newly registered `version` against the current `champion` (a ModelVersion), on
    the numbers `comparison` measured of both in this run (None: a project the platform cannot re-score)."""
    metric = card.primary_metric
    measured = {**(comparison.candidate if comparison is not None else {}), **metrics}  # and the suite's numbers
    reproduced = reference_reproduced(card, config_name, measured)
    if champion is not None and str(champion.version) == str(version):
        # An unchanged rerun found its own version already champion: there is nothing to move.
        decision = decide(policy, gate_passed=True, metric_name=metric.name, candidate=metrics[metric.name],
                          champion=None, greater_is_better=metric.greater_is_better,
                          reference_reproduced=reproduced)
        decision.promote = False
        decision.reasons.append(f"v{version} is already champion")
        return decision
    return decide(policy, gate_passed=True, metric_name=metric.name, candidate=metrics[metric.name],
                  champion=champion_value(champion, metric.name), greater_is_better=metric.greater_is_better,
                  reference_reproduced=reproduced, comparison=comparison)


def version_tags(card: MethodCard, cache_key: str, metrics: dict[str, float], lineage: dict[str, str]) -> dict:
    """The tags of a registered model version: what produced it, its metrics, and its primary metric."""
    metric = card.primary_metric
    return {tags.CACHE_KEY: cache_key, tags.PRIMARY_METRIC: metric.name,
            **({} if metric.greater_is_better else {tags.LOWER_IS_BETTER: "true"}),
            **{tags.METRIC_PREFIX + k: f"{v:.4f}" for k, v in metrics.items()}, **lineage}


@dataclass
class Lineage:
    """Who a run is (project, config, commit, data, flow run) and what it consumed: the MLflow run's tags and the
    lineage store's record come from here, so the two always agree."""

    project: str
    config: str
    git_commit: str
    dataset_md5: str
    flow_run_id: str
    flow_run_url: str
    model_name: str
    upstream: dict[str, UpstreamModel] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        named = {tags.PROJECT: self.project, tags.CONFIG: self.config,
                 tags.GIT_COMMIT: self.git_commit, tags.DATASET_MD5: self.dataset_md5,
                 tags.FLOW_RUN_ID: self.flow_run_id, tags.FLOW_RUN_URL: self.flow_run_url}
        for model in self.upstream.values():
            named.update(model.tags())
        return named

    def record(self, *, status: str, mlflow_run_id: str | None, gate_passed: bool | None, cache_key: str,
               model_version: str | None = None, details: dict | None = None) -> dict[str, Any]:
        """The keyword arguments of `AuditStore.record_lineage` for how this run ended."""
        details = dict(details or {})
        if self.upstream:
            details["upstream"] = {role: m.record() for role, m in self.upstream.items()}
        return dict(project=self.project, config_name=self.config, flow_run_id=self.flow_run_id,
                    flow_run_url=self.flow_run_url, mlflow_run_id=mlflow_run_id, git_commit=self.git_commit,
                    dataset_md5=self.dataset_md5, gate_passed=gate_passed, cache_key=cache_key,
                    model_name=self.model_name, model_version=model_version, status=status,
                    details=details or None)
