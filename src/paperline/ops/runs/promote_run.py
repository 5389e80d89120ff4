"""Register a run's model and let the policy decide whether `champion` moves: the last step of a run."""

from __future__ import annotations

from paperline.ops.tracking import runs as tracking
from paperline.ops.registry.decisions import Lineage, promotion_decision, version_tags
from paperline.ops.registry.policy import Policy
from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.runs.summary import RunSummary
from paperline.project.card import MethodCard
from paperline.project.interface import TrainedModel
from paperline.ops.tracking import tags


def register_and_promote(registry: ModelRegistry, policy: Policy, card: MethodCard, model: TrainedModel,
                         cache_key: str, lineage: Lineage, summary: RunSummary) -> None:
    """Register `model` as a new version (or find the version an unchanged rerun already registered), apply the
    policy, and fill `summary` with the version, the decision and the aliases. Inside an active MLflow run."""
    import mlflow

    existing = registry.version_for_cache_key(summary.model_name, cache_key)
    if existing:  # an unchanged rerun: the same model is already registered
        summary.model_version = existing
    else:
        summary.model_version = registry.register(
            name=summary.model_name, model_uri=tracking.log_model(model, name=summary.project, metrics=summary.metrics),
            run_id=summary.mlflow_run_id,
            tags=version_tags(card, cache_key, summary.metrics, lineage.tags()), flow_run_id=summary.flow_run_id)
    # Under the model's lock from reading the champion to moving it: a promotion in between would make the
    # decision one against a champion that no longer is.
    with registry.model_lock(summary.model_name):
        champion = registry.champion(summary.model_name)
        already = champion is not None and str(champion.version) == summary.model_version
        decision = promotion_decision(policy, card, summary.config, summary.metrics, summary.model_version, champion)
        summary.decision = decision.reasons
        summary.champion_moved = registry.apply_decision(
            name=summary.model_name, version=summary.model_version, decision=decision, gate_passed=True,
            flow_run_id=summary.flow_run_id, mlflow_run_id=summary.mlflow_run_id)
    summary.is_champion = summary.champion_moved or already
    if summary.champion_moved:
        summary.budget_aliases = registry.budget_aliases(summary.model_name)
    mlflow.set_tags({tags.MODEL_VERSION: summary.model_version,
                     tags.CHAMPION_MOVED: str(summary.champion_moved)})
