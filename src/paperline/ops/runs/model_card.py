"""A model card per registered version: what a reviewer needs to approve it, in one markdown page.

Written at the end of a run (`paperline.ops.runs.promote_run`) as the version's description in the MLflow registry
(the model version page renders it), as the run's `model_card.md` and as a Prefect markdown artifact
(`<project>-model-card`): the data version, the candidate's and the champion's numbers on the same rows with their
intervals, every guard and slice, the suite with its contamination counts, the policy's lines, the lineage, and
how to load the model. Pure text from the run's summary and comparison: no MLflow here.
"""

from __future__ import annotations

import fnmatch

from paperline.ops.compare.champion import Comparison
from paperline.ops.compare.suite import SUITE_AVERAGE, SUITE_YEARS
from paperline.ops.registry.decisions import Lineage
from paperline.ops.registry.policy import Policy
from paperline.ops.runs.summary import RunSummary

__all__ = ["model_card"]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _guard_of(policy: Policy, name: str) -> str:
    for guard in policy.guards:
        if fnmatch.fnmatchcase(name, guard.metric):
            return f"max drop {guard.max_drop:g}"
    return "-"


def _comparison_table(comparison: Comparison, policy: Policy) -> list[str]:
    champion = f"champion v{comparison.champion_version}" if comparison.champion_version else "champion"
    out = [f"| metric | rows | this version | {champion} | difference [interval] | guard |",
           "|---|---|---|---|---|---|"]
    suite = {f"{year}_spearman" for year in SUITE_YEARS} | {SUITE_AVERAGE}
    names = [comparison.primary_metric, *sorted(n for n in comparison.candidate
                                                if n != comparison.primary_metric and n not in suite)]
    for name in names:
        interval = comparison.intervals.get(name)
        difference = (f"{interval.point:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]" if interval else "-")
        guard = "margin" if name == comparison.primary_metric else _guard_of(policy, name)
        out.append(f"| {name} | {comparison.rows.get(name, '-')} | {_number(comparison.candidate.get(name))} | "
                   f"{_number(comparison.champion.get(name))} | {difference} | {guard} |")
    return out


def _suite_table(comparison: Comparison, policy: Policy) -> list[str]:
    out = ["| year | rows kept | pairs trained on, left out | this version | champion | difference [interval] "
           "| guard |",
           "|---|---|---|---|---|---|---|"]
    for name in [*(f"{year}_spearman" for year in SUITE_YEARS), SUITE_AVERAGE]:
        if name not in comparison.candidate:
            continue
        year = name.removesuffix("_spearman")
        interval = comparison.intervals.get(name)
        difference = f"{interval.point:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]" if interval else (
            f"{comparison.candidate[name] - comparison.champion[name]:+.2f}" if name in comparison.champion else "-")
        removed = comparison.removed.get(year, "-") if name != SUITE_AVERAGE else sum(comparison.removed.values())
        out.append(f"| {year} | {comparison.rows.get(name, '-')} | {removed} | "
                   f"{_number(comparison.candidate.get(name))} | {_number(comparison.champion.get(name))} | "
                   f"{difference} | {_guard_of(policy, name)} |")
    return out


def model_card(summary: RunSummary, lineage: Lineage, policy: Policy, comparison: Comparison | None,
               trained_on: list[str] | None = None) -> str:
    """The markdown card of `summary`'s version."""
    name, version = summary.model_name, summary.model_version
    status = ("champion (promoted by this run)" if summary.champion_moved else
              "champion (already)" if summary.is_champion else
              f"challenger, approval {summary.approval}" if summary.approval else "challenger (champion unchanged)")
    lines = [f"# {name} v{version}", "", f"**{status}** · project `{summary.project}`, config `{summary.config}`", "",
             "## Data", "", f"- data version (DVC md5): `{summary.dataset_md5}`",
             f"- trained on: {', '.join(trained_on) if trained_on else 'not recorded'}"]
    if comparison is not None:
        lines += ["", "## On the same rows as the champion", ""]
        lines += [f"- {line}" for line in comparison.lines()[:1]]
        lines += ["", *_comparison_table(comparison, policy), "", "## STS 2012-2016 suite (pairs trained on left out)",
                  "", *_suite_table(comparison, policy)]
    lines += ["", "## The policy", "", *[f"- {reason}" for reason in summary.decision]]
    if summary.approval:
        lines.append(f"- approval: {summary.approval}")
    lines += ["", "## Evaluation metrics of the run", "", "| metric | value |", "|---|---|",
              *[f"| {k} | {v:.4f} |" for k, v in sorted(summary.metrics.items())][:40]]
    lines += ["", "## Lineage", "", *[f"- `{key}`: {value}" for key, value in sorted(lineage.tags().items())],
              f"- MLflow run: {summary.mlflow_run_url or summary.mlflow_run_id}"]
    lines += ["", "## Load it", "", "```python", "import mlflow",
              f'model = mlflow.pyfunc.load_model("models:/{name}/{version}")', "```",
              "", f"Serve it: `mlflow models serve -m models:/{name}/{version} --env-manager local`"]
    return "\n".join(lines) + "\n"
