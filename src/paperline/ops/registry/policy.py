"""The promotion policy as data: does a freshly registered version (alias ``challenger``) become ``champion``?

The rules live in ``registry/policy.yaml`` (a ``default`` block, and per-project overrides merged over it), so
changing a threshold is a reviewed one-line diff, not a code change. ``decide`` is pure: it takes numbers and
returns a ``Decision`` whose reasons, one line per rule, go verbatim into the audit log. No MLflow here; the
registry module applies decisions.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paperline.core.errors import UsageError, yaml_problem
from paperline.ops.compare.champion import Comparison


class PolicyError(UsageError):
    """The policy file is missing, malformed, or names a key the policy does not have."""


@dataclass(frozen=True)
class Budget:
    """A deployment budget of an elastic model: at most ``max_layers`` layers and ``max_dims`` dimensions.

    Promotion points the alias ``champion-l{max_layers}-d{max_dims}`` at the champion version, and the grid of
    the version's metrics picks the best (layers, dims) cell within the budget for it (see ``choose_cell``).
    """

    max_layers: int
    max_dims: int

    @property
    def alias(self) -> str:
        return f"champion-l{self.max_layers}-d{self.max_dims}"


@dataclass(frozen=True)
class GridCell:
    """The (layers, dims) sub-model a budget alias serves, and its score on the primary metric."""

    layers: int
    dims: int
    value: float


@dataclass(frozen=True)
class Guard:
    """A metric or slice that must not drop below the champion's, on the same rows, by more than ``max_drop``.

    ``metric`` is a name of the comparison (`paperline.ops.compare`) or a shell-style pattern over them:
    ``stsb_test_spearman.genre.*`` is a guard per STS-B genre, ``sts1?_spearman`` one per STS year.
    """

    metric: str
    max_drop: float


UNSCORED_CHAMPION = ("refuse", "recorded")


@dataclass(frozen=True)
class Policy:
    """One project's promotion rules; the defaults are the most permissive sane values."""

    require_gate_passed: bool = True
    min_primary_metric: float | None = None  # None: no floor
    # The lower bound of the paired bootstrap interval of (candidate - champion), both scored in this run on the
    # same rows, must reach this margin, in the metric's own units.
    min_improvement: float = 0.0
    confidence: float = 0.95  # of that interval
    bootstrap_resamples: int = 1000
    guards: tuple[Guard, ...] = ()
    # When the champion cannot be scored in this run: "refuse" keeps it, "recorded" compares with the number it
    # was registered with (measured on other rows, perhaps another data version).
    unscored_champion: str = "refuse"
    require_approval: bool = False  # a passing candidate waits as challenger for a person's approve or reject
    approval_timeout_s: float = 86400.0  # a pending approval nobody answers expires after this (champion stays)
    require_reference_reproduced: bool = False
    budgets: tuple[Budget, ...] = ()  # deployment budgets of elastic (layers x dims) models


_FIELDS = {f.name: f for f in dataclasses.fields(Policy)}
_BOOL_FIELDS = {"require_gate_passed", "require_reference_reproduced", "require_approval"}


def _check_guards(value: Any, where: str, path: Path) -> tuple[Guard, ...]:
    example = "e.g. guards: [{metric: sts12_16_avg_spearman, max_drop: 0.5}]"
    if not isinstance(value, list):
        raise PolicyError(f"policy key 'guards' in {where} of {path} must be a list; {example}")
    guards = []
    for item in value:
        drop = item.get("max_drop") if isinstance(item, dict) else None
        if (not isinstance(item, dict) or set(item) != {"metric", "max_drop"} or not isinstance(item["metric"], str)
                or not item["metric"] or isinstance(drop, bool) or not isinstance(drop, (int, float)) or drop < 0):
            raise PolicyError(f"guard {item!r} in {where} of {path} must have exactly a metric (a name or pattern) "
                              f"and max_drop (a number >= 0); {example}")
        guards.append(Guard(item["metric"], float(drop)))
    return tuple(guards)


def _check_budgets(value: Any, where: str, path: Path) -> tuple[Budget, ...]:
    example = "e.g. budgets: [{max_layers: 3, max_dims: 128}]"
    if not isinstance(value, list):
        raise PolicyError(f"policy key 'budgets' in {where} of {path} must be a list; {example}")
    budgets = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"max_layers", "max_dims"} or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in item.values()
        ):
            raise PolicyError(f"budget {item!r} in {where} of {path} must have exactly max_layers and max_dims, "
                              f"positive integers; {example}")
        budgets.append(Budget(item["max_layers"], item["max_dims"]))
    aliases = [b.alias for b in budgets]
    if len(set(aliases)) != len(aliases):
        raise PolicyError(f"'budgets' in {where} of {path} lists a budget twice: {', '.join(aliases)}")
    return tuple(budgets)


def choose_cell(metrics: dict[str, float], metric_name: str, budget: Budget,
                greater_is_better: bool = True) -> GridCell | None:
    """The best cell of the grid ``{metric_name}_l{L}_d{D}`` within ``budget``, or None if no cell fits.

    Ties go to the cheaper cell (fewer layers, then fewer dims): the same score for less compute.
    """
    pattern = re.compile(rf"{re.escape(metric_name)}_l(\d+)_d(\d+)")
    cells = []
    for key, value in metrics.items():
        match = pattern.fullmatch(key)
        if match and not math.isnan(value):
            layers, dims = int(match[1]), int(match[2])
            if layers <= budget.max_layers and dims <= budget.max_dims:
                cells.append(GridCell(layers, dims, value))
    sign = 1.0 if greater_is_better else -1.0
    return max(cells, key=lambda c: (sign * c.value, -c.layers, -c.dims), default=None)


@dataclass
class Decision:
    """Whether ``champion`` should move, and why: one human line per rule, with the numbers compared."""

    promote: bool
    reasons: list[str]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reasons": list(self.reasons), **self.details}


def _check_values(values: Any, where: str, path: Path) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise PolicyError(f"{where} in {path} must be a mapping of policy keys, got {type(values).__name__}")
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise PolicyError(
                f"unknown policy key {key!r} in {where} of {path}; known keys: {', '.join(_FIELDS)}"
            )
        if key in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise PolicyError(f"policy key {key!r} in {where} of {path} must be true or false, got {value!r}")
        elif value is None and key == "min_primary_metric":
            pass  # null: no floor
        elif key == "budgets":
            value = _check_budgets(value, where, path)
        elif key == "guards":
            value = _check_guards(value, where, path)
        elif key == "unscored_champion":
            if value not in UNSCORED_CHAMPION:
                raise PolicyError(f"policy key 'unscored_champion' in {where} of {path} must be one of "
                                  f"{', '.join(UNSCORED_CHAMPION)}, got {value!r}")
        elif key == "bootstrap_resamples":
            if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 100_000:
                raise PolicyError(f"policy key 'bootstrap_resamples' in {where} of {path} must be an integer "
                                  f"from 100 to 100000, got {value!r}")
        else:
            # bool is an int in Python: `min_improvement: yes` is a typo, not the number 1.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise PolicyError(f"policy key {key!r} in {where} of {path} must be a number, got {value!r}")
            value = float(value)
            if key == "min_improvement" and value < 0:
                raise PolicyError(f"policy key 'min_improvement' in {where} of {path} must be >= 0, got {value}")
            if key == "confidence" and not 0.5 <= value < 1:
                raise PolicyError(f"policy key 'confidence' in {where} of {path} must be in [0.5, 1), got {value}")
            if key == "approval_timeout_s" and value <= 0:
                raise PolicyError(f"policy key 'approval_timeout_s' in {where} of {path} must be > 0 seconds, "
                                  f"got {value}")
        checked[key] = value
    return checked


def load_policy(path: str | Path, project: str) -> Policy:
    """The policy for ``project``: its overrides in ``projects:`` merged over ``default:``.

    Every block is validated, not only ``project``'s, so a typo anywhere in the file fails every run that reads it.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"no promotion policy at {path}; create it (see registry/README.md)") from None
    except yaml.YAMLError as error:
        raise PolicyError(f"{path} is not valid YAML: {yaml_problem(error)}; the policy holds plain data") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise PolicyError(f"{path} must be a mapping with 'default' and 'projects', got {type(raw).__name__}")
    for key in raw:
        if key not in ("default", "projects"):
            raise PolicyError(f"unknown top-level key {key!r} in {path}; expected 'default' and 'projects'")
    merged = _check_values(raw.get("default"), "'default'", path)
    projects = raw.get("projects") or {}
    if not isinstance(projects, dict):
        raise PolicyError(f"'projects' in {path} must map project names to overrides")
    overrides = {name: _check_values(values, f"project {name!r}", path) for name, values in projects.items()}
    merged.update(overrides.get(project, {}))
    return Policy(**merged)


def decide(
    policy: Policy,
    *,
    gate_passed: bool,
    metric_name: str,
    candidate: float,
    champion: float | None,
    greater_is_better: bool = True,
    reference_reproduced: bool | None = None,
    comparison: Comparison | None = None,
) -> Decision:
    """Apply each rule of ``policy``; promote only if every rule passes.

    ``comparison`` holds both models scored in this run on the same rows: the margin reads its interval and the
    guards its metrics. Without one (a project the platform cannot re-score), or when it could not score the
    champion, ``champion`` (the number the champion was registered with) is used only if the policy says
    ``unscored_champion: recorded``.
    """
    sign = 1.0 if greater_is_better else -1.0
    results: list[tuple[bool, str]] = []

    if gate_passed:
        results.append((True, "data gate: passed"))
    elif policy.require_gate_passed:
        results.append((False, "data gate: failed (the policy requires a passed data gate)"))
    else:
        results.append((True, "data gate: passed (not required; the gate failed)"))

    floor = policy.min_primary_metric
    if math.isnan(candidate):
        results.append((False, f"floor: failed ({metric_name} is NaN)"))
    elif floor is None:
        results.append((True, f"floor: passed (no floor set; {metric_name} {candidate:g})"))
    else:
        ok = sign * candidate >= sign * floor
        # Written the way the rule reads in this direction: a floor for greater-is-better, a ceiling otherwise.
        relation = (">=" if ok else "<") if greater_is_better else ("<=" if ok else ">")
        verdict = "passed" if ok else "failed"
        results.append((ok, f"floor: {verdict} ({metric_name} {candidate:g} {relation} {floor:g})"))

    results.append(_margin(policy, metric_name, candidate, champion, sign, comparison))
    results.extend(_guards(policy, sign, comparison))

    seen = {True: "reproduced", False: "not reproduced", None: "not checked"}[reference_reproduced]
    if reference_reproduced:
        results.append((True, "reference result: passed (reproduced within tolerance)"))
    elif policy.require_reference_reproduced:
        results.append((False, f"reference result: failed ({seen}; the policy requires it reproduced)"))
    else:
        results.append((True, f"reference result: passed (not required; {seen})"))

    interval = comparison.intervals.get(metric_name) if comparison is not None else None
    return Decision(
        promote=all(ok for ok, _ in results),
        reasons=[line for _, line in results],
        details={
            "metric_name": metric_name,
            "candidate": candidate,
            "champion": champion,
            "greater_is_better": greater_is_better,
            "gate_passed": gate_passed,
            "reference_reproduced": reference_reproduced,
            "interval": interval.to_dict() if interval else None,
            "champion_version": comparison.champion_version if comparison is not None else None,
            "policy": {**dataclasses.asdict(policy), "budgets": [dataclasses.asdict(b) for b in policy.budgets],
                       "guards": [dataclasses.asdict(g) for g in policy.guards]},
        },
    )


def _margin(policy: Policy, metric_name: str, candidate: float, champion: float | None, sign: float,
            comparison: Comparison | None) -> tuple[bool, str]:
    margin = policy.min_improvement
    better = "higher" if sign > 0 else "lower"
    if comparison is not None and comparison.champion_version is None:
        return True, "margin: passed (no champion yet)"
    if comparison is not None and comparison.scored:
        interval = comparison.intervals[metric_name]
        # The bound on the side that must clear the margin: the low end when higher is better.
        bound = interval.low if sign > 0 else -interval.high
        ok = bound >= margin or math.isclose(bound, margin, rel_tol=1e-9, abs_tol=1e-12)
        said = (f"{metric_name} {comparison.candidate[metric_name]:.2f} vs champion v{comparison.champion_version} "
                f"{comparison.champion[metric_name]:.2f} on the same rows: {interval.text()}")
        if ok:
            return True, f"margin: passed ({said}; the interval clears the margin {margin:g}, {better} is better)"
        noise = " within noise" if interval.low <= 0 <= interval.high else " below the margin"
        return False, (f"margin: failed ({said}; the interval does not clear the margin {margin:g},{noise}; "
                       f"{better} is better)")
    if comparison is None and champion is None:
        return True, "margin: passed (no champion yet)"
    why = comparison.unscored if comparison is not None else "this project has no comparison on the same rows"
    if policy.unscored_champion == "refuse":
        return False, (f"margin: failed (the champion was not scored in this run: {why}; the policy "
                       "(unscored_champion: refuse) does not compare with a number measured on other rows)")
    if champion is None or math.isnan(champion):
        return True, f"margin: passed (the champion has no recorded {metric_name}; {why})"
    improvement = sign * (candidate - champion)
    # isclose: 80.1 - 80.0 is 0.0999999..., which must count as a 0.1 improvement.
    ok = improvement >= margin or math.isclose(improvement, margin, rel_tol=1e-9, abs_tol=1e-12)
    return ok, (f"margin: {'passed' if ok else 'failed'} ({metric_name} {candidate:g} vs the champion's recorded "
                f"{champion:g} (unscored_champion: recorded; {why}): {improvement:+g} {'>=' if ok else '<'} "
                f"{margin:+g}, {better} is better)")


def _guards(policy: Policy, sign: float, comparison: Comparison | None) -> list[tuple[bool, str]]:
    """One line per guard with its verdict: the metrics it matched that dropped too far (failed), else how many it
    matched and the closest call (passed), or that it matched nothing this run measured."""
    if not policy.guards:
        return []
    if comparison is None or not comparison.scored:
        return [(True, "guards: not checked (no champion scored on the same rows)")]
    out = []
    for guard in policy.guards:
        names = [n for n in sorted(comparison.champion) if fnmatch.fnmatchcase(n, guard.metric)
                 and n in comparison.candidate and n != comparison.primary_metric]
        if not names:
            out.append((True, f"guard {guard.metric}: not measured for this model"))
            continue
        changes = {n: sign * (comparison.candidate[n] - comparison.champion[n]) for n in names}
        said = {n: f"{n} {comparison.candidate[n]:.2f} vs champion {comparison.champion[n]:.2f} ({changes[n]:+.2f})"
                for n in names}
        dropped = [n for n in names if changes[n] < -guard.max_drop]
        if dropped:
            out.append((False, f"guard {guard.metric}: failed, max drop {guard.max_drop:g} "
                               f"({'; '.join(said[n] for n in dropped)})"))
        else:
            closest = min(names, key=changes.get)
            out.append((True, f"guard {guard.metric}: passed, max drop {guard.max_drop:g} ({len(names)} "
                              f"measured; closest {said[closest]})"))
    return out
