"""Register a run's model and let the policy decide whether `champion` moves: the last step of a run.

Compare, then register, then decide: the candidate and the current champion are scored on the same rows first
(minutes for the STS suite, so outside the model's lock), the version is registered with the comparison in its
tags, and the decision is taken under the lock against the champion that was compared (one that moved meanwhile
is not compared with a stale number: the run says so and the candidate stays challenger).
"""

from __future__ import annotations

import json
import logging

from paperline.ops.compare.champion import Comparison, compare
from paperline.ops.compare.suite import ComparisonPlan
from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.registry.decisions import Lineage, promotion_decision, version_tags
from paperline.ops.registry.policy import Policy
from paperline.ops.registry.versions import CHAMPION
from paperline.ops.runs.model_card import model_card
from paperline.ops.runs.summary import RunSummary
from paperline.ops.tracking import runs as tracking
from paperline.ops.tracking import tags
from paperline.project.card import MethodCard
from paperline.project.interface import TrainedModel

log = logging.getLogger("paperline")


def compare_with_champion(registry: ModelRegistry, policy: Policy, card: MethodCard, plan: ComparisonPlan,
                          model_uri: str, cache_key: str, name: str) -> Comparison:
    """The candidate at `model_uri` and `name`'s champion (if any), scored on the same rows."""
    champion = registry.champion(name) if CHAMPION in registry.aliases(name) else None  # {}: no model yet
    champion_trained_on = None
    if champion is not None and champion.tags.get(tags.TRAINED_ON) is not None:
        champion_trained_on = [s for s in champion.tags[tags.TRAINED_ON].split(",") if s]
    rows = plan.rows(card.primary_metric.name, champion_trained_on)
    log.info("scoring the candidate%s on the same %d rows (the primary split and the STS 2012-2016 suite)",
             "" if champion is None else f" and the champion v{champion.version}", len(rows.rows))
    comparison = compare(
        rows, candidate_uri=model_uri, candidate_id=cache_key,
        champion_uri=None if champion is None else f"models:/{name}/{champion.version}",
        champion_version=None if champion is None else str(champion.version),
        # a model is its training cache key: the champion's scores from the run that registered it are reused
        champion_id=None if champion is None else champion.tags.get(tags.CACHE_KEY) or f"{name}/v{champion.version}",
        resamples=policy.bootstrap_resamples, confidence=policy.confidence, cache_dir=plan.cache_dir)
    if comparison.unscored:
        log.warning("the champion v%s was not scored in this run: %s", comparison.champion_version,
                    comparison.unscored)
    return comparison


def comparison_tags(comparison: Comparison | None, plan: ComparisonPlan | None) -> dict[str, str]:
    """What a version (and its run) records of the comparison: the champion it was compared with, the interval
    of the primary metric, and what the model trained on (the next comparison's contamination check)."""
    out = {tags.TRAINED_ON: ",".join(plan.trained_on)} if plan is not None else {}
    if comparison is None:
        return out
    out[tags.COMPARED_WITH] = comparison.champion_version or "none"
    interval = comparison.intervals.get(comparison.primary_metric)
    if interval is not None:
        out[tags.COMPARE_INTERVAL] = interval.text()
    return out


def suite_metrics(comparison: Comparison | None) -> dict[str, float]:
    """The candidate's STS 2012-2016 numbers, recorded on its version beside its evaluation's (the trend of
    `paperline models history`)."""
    if comparison is None:
        return {}
    return {k: v for k, v in comparison.candidate.items() if k.startswith("sts1") and k.endswith("_spearman")}


def register_and_promote(registry: ModelRegistry, policy: Policy, card: MethodCard, model: TrainedModel,
                         cache_key: str, lineage: Lineage, summary: RunSummary,
                         plan: ComparisonPlan | None = None) -> Comparison | None:
    """Register `model` as a new version (or find the version an unchanged rerun already registered), compare it
    with the champion on the same rows (`plan`; None for a project the platform cannot re-score), apply the
    policy, and fill `summary` with the version, the comparison, the decision and the aliases. Inside an active
    MLflow run. Returns the comparison."""
    name = summary.model_name
    existing = registry.version_for_cache_key(name, cache_key)
    model_uri = (f"models:/{name}/{existing}" if existing
                 else tracking.log_model(model, name=summary.project, metrics=summary.metrics))
    comparison = None
    if plan is not None:
        comparison = compare_with_champion(registry, policy, card, plan, model_uri, cache_key, name)
        tracking.log_run_metrics(comparison.run_metrics())
        tracking.log_text(json.dumps(comparison.to_dict(), indent=1, sort_keys=True), "comparison.json")
        summary.comparison = comparison.lines()
    compared_tags = comparison_tags(comparison, plan)
    if existing:  # an unchanged rerun: the same model is already registered; its comparison is this run's
        summary.model_version = existing
        registry.set_version_tags(name, existing, compared_tags)
    else:
        summary.model_version = registry.register(
            name=name, model_uri=model_uri, run_id=summary.mlflow_run_id,
            tags={**version_tags(card, cache_key, {**summary.metrics, **suite_metrics(comparison)}, lineage.tags()),
                  **compared_tags},
            flow_run_id=summary.flow_run_id)
    # Under the model's lock from reading the champion to moving it: a promotion in between would make the
    # decision one against a champion that no longer is.
    with registry.model_lock(name):
        champion = registry.champion(name)
        already = champion is not None and str(champion.version) == summary.model_version
        decision = promotion_decision(policy, card, summary.config, summary.metrics, summary.model_version,
                                      champion, comparison)
        if comparison is not None and not already and comparison.champion_version != (
                None if champion is None else str(champion.version)):
            decision.promote = False
            decision.reasons.append(f"champion moved from v{comparison.champion_version} to "
                                    f"v{None if champion is None else champion.version} while this run compared; "
                                    "rerun to compare with it")
        if decision.promote and policy.require_approval:
            decision.promote = False
            registry.mark_pending(name, summary.model_version, summary.flow_run_id)
            summary.approval = "pending"
            decision.reasons.append(
                f"approval: pending (the policy requires a person's approval, within {policy.approval_timeout_s:g} "
                f"s: `paperline approve {name} --version {summary.model_version} --reason ...`, or the paused flow "
                "run's form in the Prefect dashboard)")
        elif not policy.require_approval:
            decision.reasons.append("approval: not required (the policy's require_approval is off)")
        elif not already:
            decision.reasons.append("approval: not asked (a rule above failed)")
        summary.decision = decision.reasons
        tracking.log_text("\n".join(decision.reasons), "policy_decision.txt")
        summary.champion_moved = registry.apply_decision(
            name=name, version=summary.model_version, decision=decision, gate_passed=True,
            flow_run_id=summary.flow_run_id, mlflow_run_id=summary.mlflow_run_id)
    summary.is_champion = summary.champion_moved or already
    if summary.champion_moved:
        summary.budget_aliases = registry.budget_aliases(name)
    summary.model_card = model_card(summary, lineage, policy, comparison, list(plan.trained_on) if plan else None)
    registry.describe_version(name, summary.model_version, summary.model_card)
    tracking.log_text(summary.model_card, "model_card.md")
    tracking.set_tags({tags.MODEL_VERSION: summary.model_version, tags.CHAMPION_MOVED: str(summary.champion_moved),
                       **compared_tags})
    return comparison
