"""Sweeps as data: the `key=a,b,c` grid, its trials, the runner spec, the best trial and the sweep table.

Pure functions (no Prefect, no MLflow), so the CLI checks what a user typed in a millisecond and the flow in
`paperline_flows.sweep` only orchestrates. A sweep is the cartesian product of its axes: `seed=0,1
train.stages.0.loss=cosent,cosine` is four trials; an axis with one value (`seed=3`) is an override every trial
gets. A value cannot hold a comma (the separator); a list value is set item by item (`splits.0=dev`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from paperline.core.config import ConfigError

RUNNERS = ("thread", "dask", "ray")


class SweepError(ConfigError):
    """A sweep that cannot run as typed (a malformed axis, an unknown runner); exit code 2, like a config error."""


def parse_grid(args: list[str]) -> dict[str, list[str]]:
    """`["seed=0,1", "train.stages.0.loss=cosent"]` -> `{"seed": ["0", "1"], "train.stages.0.loss": ["cosent"]}`."""
    grid: dict[str, list[str]] = {}
    for text in args:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError(f"sweep axis '{text}' is not key=a,b,c; write it like seed=0,1,2")
        if key in grid:
            raise SweepError(f"sweep axis '{key}' is given twice; put every value in one: {key}=a,b,c")
        values = [v.strip() for v in raw.split(",")]
        if any(not v for v in values):
            raise SweepError(f"sweep axis '{text}' has an empty value; write it like {key}=a,b,c")
        if len(set(values)) != len(values):
            raise SweepError(f"sweep axis '{text}' repeats a value; each trial must differ")
        grid[key] = values
    if not grid:
        raise SweepError("a sweep needs at least one axis, e.g. seed=0,1")
    return grid


def trials(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the axes' values, the first axis varying slowest; each trial is {key: value}."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def overrides(trial: dict[str, str]) -> list[str]:
    """A trial as the `key=value` overrides `paperline run` takes."""
    return [f"{key}={value}" for key, value in trial.items()]


def varying(grid: dict[str, list[str]]) -> list[str]:
    """The axes with more than one value: what tells the trials apart (their names, the table's columns)."""
    return [key for key, values in grid.items() if len(values) > 1] or list(grid)


def trial_name(index: int, trial: dict[str, str], keys: list[str]) -> str:
    return f"trial-{index}: " + " ".join(f"{k}={trial[k]}" for k in keys)


@dataclass(frozen=True)
class RunnerSpec:
    """`thread`, `dask`, `dask:tcp://10.0.0.5:8786`, `ray`, `ray:ray://head:10001`: the task runner and, for Dask
    and Ray, the address of a running cluster (none: a local one for the sweep's lifetime)."""

    kind: str
    address: str | None = None

    def __str__(self) -> str:
        return self.kind + (f":{self.address}" if self.address else "")


def parse_runner(text: str) -> RunnerSpec:
    kind, sep, address = text.partition(":")
    if kind not in RUNNERS:
        raise SweepError(f"unknown runner '{text}'; use one of {', '.join(RUNNERS)} (dask and ray take :ADDRESS)")
    if sep and not address:
        raise SweepError(f"runner '{text}' has an empty address; write {kind}:ADDRESS or just {kind}")
    if kind == "thread" and address:
        raise SweepError("the thread runner runs in this process and takes no address")
    return RunnerSpec(kind, address or None)


@dataclass
class TrialResult:
    """How one trial ended: its MLflow run, its status (finished | failed), its metrics or its error."""

    index: int
    params: dict[str, str]
    run_id: str
    status: str = "finished"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    cache_hit: bool = False


def best_trial(results: list[TrialResult], metric: str, greater_is_better: bool) -> TrialResult | None:
    """The finished trial with the best value of the primary metric; the first one on a tie; None if no
    finished trial reports the metric (a NaN counts as not reported)."""
    scored = [r for r in results if r.status == "finished" and metric in r.metrics
              and not math.isnan(r.metrics[metric])]
    if not scored:
        return None
    sign = 1 if greater_is_better else -1
    return max(scored, key=lambda r: (sign * r.metrics[metric], -r.index))


def sweep_table(results: list[TrialResult], keys: list[str], metric: str) -> dict[str, list]:
    """Columns for `mlflow.log_table` (the MLflow UI compares them) and for Prefect's table artifact."""
    table: dict[str, list] = {"trial": [], "run_id": [], "status": [], **{k: [] for k in keys}, metric: [],
                              "error": []}
    for r in sorted(results, key=lambda r: r.index):
        table["trial"].append(r.index)
        table["run_id"].append(r.run_id)
        table["status"].append(r.status)
        for k in keys:
            table[k].append(r.params.get(k, ""))
        table[metric].append(r.metrics.get(metric))
        table["error"].append(r.error)
    return table


def decision_reason(best: TrialResult | None, results: list[TrialResult], metric: str,
                    greater_is_better: bool) -> str:
    """One sentence: which trial goes to registration and why (or why none does)."""
    finished = [r for r in results if r.status == "finished"]
    failed = len(results) - len(finished)
    tail = f"; {failed} failed" if failed else ""
    if best is None:
        return f"no trial reported {metric} ({len(finished)} finished{tail}): nothing registered"
    order = "highest" if greater_is_better else "lowest"
    return (f"trial {best.index} has the {order} {metric} ({best.metrics[metric]:.4f}) of {len(finished)} "
            f"finished trials{tail}; only it goes through registration and the promotion policy")


def decision_markdown(results: list[TrialResult], keys: list[str], metric: str, greater_is_better: bool,
                      best: TrialResult | None) -> str:
    """The parent run's markdown artifact: the table, the best trial and why."""
    lines = ["# Sweep decision", "", decision_reason(best, results, metric, greater_is_better), "",
             "| trial | " + " | ".join(keys) + f" | {metric} | status | MLflow run |",
             "|---|" + "---|" * len(keys) + "---|---|---|"]
    for r in sorted(results, key=lambda r: r.index):
        value = f"{r.metrics[metric]:.4f}" if metric in r.metrics else "-"
        mark = " **best**" if best is not None and r.index == best.index else ""
        status = r.status + (f": {r.error.splitlines()[0][:200]}" if r.error else "")
        lines.append(f"| {r.index}{mark} | " + " | ".join(r.params.get(k, "") for k in keys)
                     + f" | {value} | {status} | {r.run_id} |")
    return "\n".join(lines) + "\n"


@dataclass
class SweepSummary:
    """What `paperline sweep` prints at the end, and what the sweep flow returns."""

    project: str
    config: str
    runner: str
    keys: list[str]
    metric: str
    results: list[TrialResult]
    best: TrialResult | None
    reason: str
    parent_run_id: str
    experiment_id: str
    model_name: str | None = None
    model_version: str | None = None
    decision: list[str] = field(default_factory=list)
    champion_moved: bool = False
    flow_run_url: str | None = None

    def lines(self) -> list[str]:
        failed = sum(r.status != "finished" for r in self.results)
        out = [f"{self.project} [{self.config}] sweep of {len(self.results)} trials on {self.runner}"
               + (f" ({failed} failed)" if failed else "")]
        width = max([len(", ".join(f"{k}={r.params[k]}" for k in self.keys)) for r in self.results] + [10])
        for r in sorted(self.results, key=lambda r: r.index):
            params = ", ".join(f"{k}={r.params[k]}" for k in self.keys)
            value = f"{r.metrics[self.metric]:8.2f}" if self.metric in r.metrics else "       -"
            mark = "  <- best" if self.best is not None and r.index == self.best.index else ""
            note = f"  failed: {r.error.splitlines()[0][:160]}" if r.status == "failed" and r.error else ""
            cached = "  (cached)" if r.cache_hit else ""
            out.append(f"  {r.index:>3}  {params:<{width}}  {self.metric} {value}{mark}{cached}{note}")
        out.append(f"  best: {self.reason}")
        if self.model_version:
            alias = "champion (promoted)" if self.champion_moved else "challenger"
            out.append(f"  model: {self.model_name} v{self.model_version}, alias {alias}")
        out.extend(f"  policy: {reason}" for reason in self.decision)
        out.append(f"  MLflow parent run: {self.parent_run_id} (experiment {self.experiment_id}); `paperline ui` to open")
        if self.flow_run_url:
            out.append(f"  Prefect flow run: {self.flow_run_url}")
        return out
