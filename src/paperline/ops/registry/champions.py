"""One table across projects: every registered model's champion on one task, from the registry, no retraining.

`build_leaderboard(client, task)` reads, for each registered model whose `champion` alias exists, the version's
tags (`paperline.metric.*` as written at registration by `paperline.ops.registry.decisions.version_tags`, the project,
the dataset md5) and its MLflow run's params (the resolved config, flattened: `train.stages.0.loss`), and
keeps the champions that report the task's test metric. The comparison a user otherwise assembles by hand in
the MLflow UI. `log_leaderboard` writes the table to MLflow (experiment `paperline-leaderboard`, one run per
call); the Prefect artifact is written by `paperline_flows.leaderboard` (the library never imports Prefect).

The task -> metric names mapping is `TASKS`, the one place a project's task metrics are named.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from paperline.core.errors import PaperlineError
from paperline.ops.tracking import tags

EXPERIMENT = "paperline-leaderboard"
CHAMPION = "champion"
COST_METRIC = "encode_ms_per_1k"  # a project's served model's encode latency per 1,000 sentences, in ms


@dataclass(frozen=True)
class Task:
    """The metric names of one task: `test` ranks the table; `dev` and `extra` are shown beside it."""

    test: str
    dev: str | None = None
    extra: tuple[str, ...] = ()
    label: str = ""


TASKS: dict[str, Task] = {
    "stsb": Task(test="stsb_test_spearman", dev="stsb_dev_spearman", label="STS-B Spearman x100"),
    "reverse-dictionary": Task(test="revdict_test_mrr", dev="revdict_dev_mrr", extra=("revdict_test_top10",),
                               label="reverse dictionary on WordNet definitions/test: MRR, top-10 accuracy"),
    "response-selection": Task(test="test_r10_at_1", dev="dev_r10_at_1", extra=("test_r10_at_2", "test_mrr"),
                               label="response selection on dialogues, 10 candidates: R10@1, R10@2, MRR"),
    "image-text-retrieval": Task(test="test_mean_recall", dev="dev_mean_recall",
                                 extra=("test_caption_to_image_recall_at_5", "test_image_to_caption_recall_at_5",
                                        "stsb_test_spearman"),
                                 label="caption <-> picture retrieval on captioned_images/test: mean of recall@1/5/10 "
                                       "both ways x100, recall@5 each way, STS-B Spearman of the caption side"),
}

# Config keys worth a column, by their last dotted part; the first found of each is shown.
KEY_PARAMS = ("base_model", "loss", "objective", "epochs", "max_steps", "batch_size", "learning_rate")


class UnknownTaskError(PaperlineError):
    exit_code = 2  # the user typed a task that is not in TASKS


@dataclass
class Row:
    project: str
    model: str
    version: str
    test: float
    dev: float | None
    extra: dict[str, float | None]
    params: str
    data_version: str
    cost_ms_per_1k: float | None


@dataclass
class Leaderboard:
    task: str
    rows: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # champions without the task's metric: `name (why)`

    @property
    def spec(self) -> Task:
        return TASKS[self.task]

    def header(self) -> list[str]:
        spec = self.spec
        return ["project", "model", "version", spec.test, *([spec.dev] if spec.dev else []), *spec.extra,
                "key params", "data version", "encode ms/1k"]

    def records(self) -> list[dict[str, Any]]:
        """One dict per row, the header's names as keys: numbers stay numbers, a missing value is None."""
        out = []
        for r in self.rows:
            values = [r.project, r.model, r.version, r.test, *([r.dev] if self.spec.dev else []),
                      *(r.extra.get(m) for m in self.spec.extra), r.params, r.data_version, r.cost_ms_per_1k]
            out.append(dict(zip(self.header(), values)))
        return out

    def columns(self) -> dict[str, list]:
        """Column -> values, what `mlflow.log_table` takes (missing values as '-', so a column has one type
        per row set only where every row has it)."""
        return {name: [("-" if rec[name] is None else rec[name]) for rec in self.records()] for name in self.header()}

    def text_rows(self) -> list[tuple[str, ...]]:
        return [tuple(_cell(v) for v in rec.values()) for rec in self.records()]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"
    return str(value)


def task_spec(task: str) -> Task:
    if task not in TASKS:
        raise UnknownTaskError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def _pages(search: Callable[..., Any]) -> Iterator[Any]:
    token = None
    while True:
        page = search(page_token=token) if token else search()
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def key_params(params: dict[str, str]) -> str:
    """`base_model=all-MiniLM-L6-v2 loss=cosent epochs=1 batch_size=16`: the KEY_PARAMS a run's config has,
    by the last part of their dotted key (a multi-stage config shows each distinct value once, joined by /);
    the `evaluate.` section's keys (its encode batch size) say nothing about how the model was made."""
    found: dict[str, list[str]] = {}
    for key in sorted(params, key=_natural):
        short = key.rsplit(".", 1)[-1]
        if key.startswith("evaluate."):
            continue
        value = str(params[key])
        if short in KEY_PARAMS and value not in ("None", "") and value not in found.setdefault(short, []):
            found[short].append(value.rstrip("/").rsplit("/", 1)[-1] if short == "base_model" else value)
    return " ".join(f"{k}={'/'.join(found[k])}" for k in KEY_PARAMS if found.get(k)) or "-"


def row_cap(params: dict[str, str]) -> str | None:
    """`the first 40 rows` when the run's config capped its evaluation rows (`evaluate.max_rows`, as smoke configs
    do), else None: such a score is not on the task's split and would top the table on easy rows."""
    for key, value in params.items():
        if key.startswith("evaluate.") and key.endswith("max_rows") and str(value) not in ("None", "", "0"):
            return f"the first {value} rows"
    return None


def _natural(key: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def cost_of(metrics: dict[str, float]) -> float | None:
    """The served model's encode latency: `encode_ms_per_1k` if reported, else the one `*_encode_ms_per_1k`
    metric when there is exactly one (several arms and no served one named: no single cost to show)."""
    if COST_METRIC in metrics:
        return metrics[COST_METRIC]
    candidates = [v for k, v in metrics.items() if k.endswith(f"_{COST_METRIC}")]
    return candidates[0] if len(candidates) == 1 else None


def build_leaderboard(client: Any, task: str = "stsb", include_capped: bool = False) -> Leaderboard:
    """Every registered model's champion that reports `task`'s test metric, best first. `client` is an
    `MlflowClient` (or anything with search_registered_models, get_model_version_by_alias and get_run). A champion
    scored on capped evaluation rows (a smoke config) is left out with a note, or, with `include_capped`, listed
    with the cap in its key params."""
    spec = task_spec(task)
    board = Leaderboard(task=task)
    for model in _pages(client.search_registered_models):
        if CHAMPION not in (model.aliases or {}):
            continue
        version = client.get_model_version_by_alias(model.name, CHAMPION)
        version_tags = dict(version.tags or {})
        run_tags, run_metrics, params = {}, {}, {}
        if version.run_id:
            try:
                run = client.get_run(version.run_id)
                run_tags, run_metrics, params = dict(run.data.tags), dict(run.data.metrics), dict(run.data.params)
            except Exception as error:  # noqa: BLE001  a deleted run (any store's error): the version's tags remain
                board.skipped.append(f"{model.name} v{version.version} (its run: {str(error).splitlines()[0]})")
        # The metrics registered with the version, else the run's (a version registered by hand has no tags).
        metrics = {**run_metrics, **{k.removeprefix(tags.METRIC_PREFIX): v for k, v in version_tags.items()
                                     if k.startswith(tags.METRIC_PREFIX) and _number(v) is not None}}
        metrics = {k: float(v) for k, v in metrics.items()}
        if spec.test not in metrics:
            continue
        capped = row_cap(params)  # a smoke config scores a few rows: not the task's split, not comparable
        if capped and not include_capped:
            board.skipped.append(f"{model.name} v{version.version} (evaluated on {capped}, not the whole split; "
                                 "--include-capped lists it)")
            continue
        lineage = {**run_tags, **version_tags}  # the version's own tags first
        board.rows.append(Row(
            project=lineage.get(tags.PROJECT) or "-", model=model.name, version=str(version.version),
            test=metrics[spec.test], dev=metrics.get(spec.dev) if spec.dev else None,
            extra={m: metrics.get(m) for m in spec.extra},
            params=key_params(params) + (f" (scored on {capped})" if capped else ""),
            data_version=lineage.get(tags.DATASET_MD5) or "-", cost_ms_per_1k=cost_of(metrics)))
    board.rows.sort(key=lambda r: r.test, reverse=True)  # every task's test metric is greater-is-better
    return board


def log_leaderboard(board: Leaderboard, client, artifact_root: str | None) -> str:
    """One MLflow run in the `paperline-leaderboard` experiment holding the table; returns its run id. The
    experiment is made as every project's is (`paperline.ops.tracking.client.experiment_id`): its artifacts go
    under the workspace's artifact root, never a ./mlruns of the current folder."""
    from paperline.ops.tracking import runs
    from paperline.ops.tracking.client import experiment_id

    experiment = experiment_id(client, EXPERIMENT, artifact_root)
    with runs.start_run(experiment, f"leaderboard-{board.task}", {tags.LEADERBOARD_TASK: board.task}) as run:
        runs.log_params({"task": board.task, "metric": board.spec.test})
        runs.log_metrics({"models": len(board.rows)})
        if board.rows:
            runs.log_tables({f"leaderboard_{board.task}": board.columns()})
    return run.info.run_id
