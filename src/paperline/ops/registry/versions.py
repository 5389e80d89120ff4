"""Model versions as paperline names them: aliases, tags, the registry's errors, and small readers of both.

Shared by `paperline.ops.registry.aliases` (alias moves) and `paperline.ops.registry.registration` (new versions).
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from paperline.core.errors import PaperlineError
from paperline.ops.registry.manual_policy import PolicyView
from paperline.ops.registry.policy import Budget, GridCell, choose_cell
from paperline.ops.tracking import tags

CHALLENGER = "challenger"
CHAMPION = "champion"
BUDGET_ALIAS = re.compile(r"champion-l(\d+)-d(\d+)")
# MLflow's own default: registries that copy artifacts (Databricks, Unity Catalog) can take minutes.
READY_TIMEOUT_S = 300.0
# An alias move holds its model's lock for a few registry calls; minutes of waiting means a stuck holder.
MODEL_LOCK_TIMEOUT_S = 300.0
_MODELS_HINT = "`paperline models ls` lists the registered models and their versions"


class RegistryError(PaperlineError):
    """Something a user can fix: an unknown model or version, an empty reason, nothing to roll back to."""

    exit_code = 2  # the user named something that does not exist (paperline.core.errors.USAGE)


class PolicyRefusal(RegistryError):
    """The promotion policy refuses a manual promotion (failed gate, below the floor); ``force`` overrides it."""

    def __init__(self, message: str, view: PolicyView):
        super().__init__(message)
        self.view = view


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers; the audit row still needs an actor
        return "unknown"


def _is(error: MlflowException, *codes: str) -> bool:
    return error.error_code in codes


def _alias(model: RegisteredModel, alias: str) -> str | None:
    # MLflow 3 gives alias targets as int; the rest of paperline (and the audit log) uses version strings.
    version = model.aliases.get(alias)
    return None if version is None else str(version)


def _pages(search: Callable[..., Any], **kwargs: Any) -> Iterator[Any]:
    token = None
    while True:
        page = search(page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


@dataclass
class AliasMove:
    """One alias to point at ``version`` (None: remove it); ``audit`` overrides the shared audit fields."""

    alias: str
    version: str | None
    previous: str | None
    audit: dict[str, Any] = field(default_factory=dict)


def version_metrics(version: ModelVersion) -> dict[str, float]:
    """The metrics a version was registered with (its ``paperline.metric.*`` tags)."""
    metrics = {}
    for key, value in version.tags.items():
        if key.startswith(tags.METRIC_PREFIX):
            try:
                metrics[key.removeprefix(tags.METRIC_PREFIX)] = float(value)
            except ValueError:
                pass  # someone's hand-written tag, not a number: not part of the grid
    return metrics


def budget_cell(version: ModelVersion, budget: Budget) -> GridCell | None:
    """The grid cell of ``version`` that ``budget``'s alias serves: the best on its primary metric within it."""
    metric = version.tags.get(tags.PRIMARY_METRIC)
    if not metric:
        return None
    return choose_cell(version_metrics(version), metric, budget,
                       greater_is_better=version.tags.get(tags.LOWER_IS_BETTER) != "true")


def _required_reason(reason: str | None, what: str) -> str:
    if not reason or not reason.strip():
        raise RegistryError(f"a reason is required to {what}; say why in a few words (it goes into the audit log)")
    return reason.strip()




# The trend's bar: eight heights, so a column of versions reads as a chart in a terminal.
_BARS = "▁▂▃▄▅▆▇█"


@dataclass
class TrendRow:
    """One version in `paperline models history`'s trend: its numbers as registered and how it compared."""

    version: str
    created: str
    dataset: str
    primary: float | None
    suite_average: float | None
    compared: str
    aliases: str
    approval: str
    bar: str = ""


def metric_trend(versions: list[ModelVersion], aliases: dict[str, str]) -> tuple[str | None, list[TrendRow]]:
    """(primary metric, one row per version, oldest first): the primary metric each version was registered with,
    its STS 2012-2016 average, the interval of its comparison with the champion of its day, and a bar scaled from
    the lowest to the highest value, the history MLflow's registry page does not chart."""
    import datetime

    ordered = sorted(versions, key=lambda v: int(v.version))
    metric = next((v.tags.get(tags.PRIMARY_METRIC) for v in reversed(ordered) if v.tags.get(tags.PRIMARY_METRIC)), None)
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for v in ordered:
        values = version_metrics(v)
        compared = v.tags.get(tags.COMPARED_WITH)
        interval = v.tags.get(tags.COMPARE_INTERVAL, "")
        rows.append(TrendRow(
            version=str(v.version),
            created=datetime.datetime.fromtimestamp(v.creation_timestamp / 1000, datetime.UTC).strftime(
                "%Y-%m-%d %H:%M"),
            dataset=(v.tags.get(tags.DATASET_MD5) or "-")[:8],
            primary=values.get(metric) if metric else None,
            suite_average=values.get("sts12_16_avg_spearman"),
            compared=("-" if compared is None else "no champion" if compared == "none" else
                      f"vs v{compared}: {interval.split(' (')[0]}" if interval else f"vs v{compared}"),
            aliases=", ".join(sorted(by_version.get(str(v.version), []))) or "-",
            approval=v.tags.get(tags.APPROVAL, "-")))
    known = [r.primary for r in rows if r.primary is not None]
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    for row in rows:
        if row.primary is not None:
            step = 0 if high == low else round((row.primary - low) / (high - low) * (len(_BARS) - 1))
            row.bar = _BARS[step]
    return metric, rows
