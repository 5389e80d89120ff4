"""The promotion policy's view of a version someone promotes by hand (`paperline promote`, the dashboard flow).

A manual promotion answers to the same hard rules as the automatic one (a passed data gate where the policy
requires it, the primary metric's floor), so a person cannot put a broken model in production by a typo; `force`
overrides them, and the audit row says what was overridden. Being worse than the current champion is not a
refusal here: going back to an older or weaker model on purpose is what manual promotion is for. It is shown,
though, beside the other rules. Pure functions over tag values: the registry reads the tags.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from paperline.ops.registry.policy import Policy, decide


@dataclass(frozen=True)
class PolicyView:
    """The policy's lines on one version (gate, floor, champion) and the ones it refuses a promotion for."""

    version: str
    gate_passed: bool | None  # None: nothing records a gate for this version
    metric: str | None
    value: float | None
    floor: float | None
    champion_version: str | None
    champion_value: float | None
    lines: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def refusal_text(self) -> str:
        return "; ".join(self.refusals)


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None  # a hand-written tag that is not a number: no value to compare


def policy_view(policy: Policy | None, *, version: str, gate_passed: bool | None, metric: str | None,
                value: str | None, greater_is_better: bool, champion_version: str | None,
                champion_value: str | None, forced: bool = False) -> PolicyView:
    """What ``policy`` says of promoting ``version`` by hand; ``policy`` None (a registry without a policy file)
    refuses nothing. Tag values come as the strings MLflow keeps."""
    candidate, champion = _number(value), _number(champion_value)
    name = metric or "primary metric"
    lines: list[str] = []
    refusals: list[str] = []
    if policy is None:
        lines.append("policy: none configured for this registry; nothing checked")
    else:
        # decide() phrases the floor the way the automatic promotion's audit rows do; run without a champion,
        # with the gate and the reference rule met, its verdict is the floor's alone.
        checked = decide(policy, gate_passed=True, metric_name=name,
                         candidate=math.nan if candidate is None else candidate, champion=None,
                         greater_is_better=greater_is_better, reference_reproduced=True)
        floor_line = checked.reasons[1] if candidate is not None else f"floor: failed (v{version} has no {name} value)"
        if gate_passed is True:
            gate_line = "data gate: passed"
        elif not policy.require_gate_passed:
            gate_line = f"data gate: {'failed' if gate_passed is False else 'unknown'} (not required by the policy)"
        elif gate_passed is False:
            gate_line = "data gate: failed (the policy requires a passed data gate)"
        else:
            gate_line = (f"data gate: unknown (neither v{version} nor its MLflow run has a paperline.gate_passed "
                         "tag; the policy requires a passed data gate)")
        lines += [gate_line, floor_line]
        if gate_passed is not True and policy.require_gate_passed:
            refusals.append(gate_line)
        if not checked.promote or candidate is None:
            refusals.append(floor_line)
    lines.append(_champion_line(version, name, candidate, greater_is_better, champion_version, champion))
    return PolicyView(version=version, gate_passed=gate_passed, metric=metric, value=candidate,
                      floor=None if policy is None else policy.min_primary_metric,
                      champion_version=champion_version, champion_value=champion, lines=lines,
                      refusals=refusals, forced=forced and bool(refusals))


def _champion_line(version: str, metric: str, candidate: float | None, greater_is_better: bool,
                   champion_version: str | None, champion: float | None) -> str:
    if champion_version is None:
        return "champion: none yet"
    if champion_version == version:
        return f"champion: v{version} already"
    if candidate is None or champion is None or math.isnan(candidate) or math.isnan(champion):
        return f"champion: v{champion_version} (no {metric} to compare)"
    diff = candidate - champion
    better = diff > 0 if greater_is_better else diff < 0
    verdict = "better than" if better else "the same as" if diff == 0 else "WORSE than"
    return (f"champion: v{champion_version} has {metric} {champion:g}; v{version} ({candidate:g}, {diff:+g}) is "
            f"{verdict} the champion (not a refusal for a manual promotion)")
