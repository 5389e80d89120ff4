"""The steps every paperline flow composes, each written once:

    open_run -> gate -> [generate -> gate the generated files] -> plan_training -> train_and_evaluate -> register

The run's lineage row, written `running` before the gate and closed however the run ends, is
`paperline_flows.lineage_row`.

`flows/run_project.py` wires them for one run; `flows/sweep.py` opens and gates once, then trains many trials and
registers the best. The Prefect tasks they call are `paperline_flows.tasks`, what the dashboards show of a flow
run `paperline_flows.dashboard`. Each step calls the library (paperline.ops, paperline.data) or the project's
method; every
MLflow write goes through `paperline.ops.tracking.runs`. What a step decides comes back typed (`RunPlan`,
`Training`, `Trained`, a `GateOutcome`, `paperline.ops.runs.summary.GateFailure`), never as a message to match.

Training and evaluation are cached by Prefect under `paperline.ops.cache.keys.cache_key` (the project's files, the
library layers that can change results, the resolved config, the dataset md5, the upstream models and the
generated files); results persist in the workspace (`Settings.results_dir`) for a run, a sweep's trial and a
deployment's run alike, so each finds the others' results. They are stored as checked JSON, never pickles, and
verified before use (`paperline_flows.results.verified`): a swapped or edited result, or a model folder whose
files changed, is logged in one line and recomputed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from prefect.utilities.urls import url_for

from paperline.core.errors import PaperlineError
from paperline.core.settings import Settings
from paperline.data.datasets import DataVersion, DatasetRef, dataset_ref, remote_url
from paperline.data.quality import gate_files
from paperline.data.quality_report import GateOutcome
from paperline.ops.cache.keys import cache_key, gate_cache_key
from paperline.ops.compare.suite import PRIMARY_SPLIT, ComparisonPlan, contamination_notes, trained_on
from paperline.ops.registry import upstream
from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.registry.decisions import Lineage, git_commit
from paperline.ops.registry.policy import Policy, load_policy
from paperline.ops.runs.preflight import preflight
from paperline.ops.runs.reconcile import close_abandoned_runs
from paperline.ops.runs.summary import RunSummary
from paperline.ops.services import outages
from paperline.ops.store.audit import AuditStore
from paperline.ops.tracking import client as tracking_client
from paperline.ops.tracking import runs as tracking
from paperline.ops.tracking import tags
from paperline.project.contract import check_evaluation
from paperline.project.discovery import Project
from paperline.project.distributed_job import JobSpec, check_rank_safe, requested_processes
from paperline.project.interface import (
    Evaluation,
    GeneratedData,
    ProjectData,
    RunContext,
    TrainedModel,
    UpstreamModel,
)
from paperline_flows import dashboard
from paperline_flows.results import verified
from paperline_flows.tasks import data_gate, evaluate, generate_data, register, resolve_data, train


# ---- the plan: what a run decided before it trains ------------------------------------------------------------


@dataclass
class Services:
    """The tracking client, the audit store, the registry over both, and the project's promotion policy."""

    client: Any
    store: AuditStore
    registry: ModelRegistry
    policy: Policy

    @classmethod
    def connect(cls, settings: Settings, project: Project) -> Services:
        client = tracking_client.connect(settings)
        store = AuditStore(settings.store_url)
        return cls(client, store, ModelRegistry(client, store, policy_path=settings.policy_path),
                   load_policy(settings.policy_path, project.name))


@dataclass
class RunPlan:
    """A run once it is opened: the checked project and config, the data version, the upstream models, who the
    run is (its lineage) and the services it writes to. A sweep has one, shared by its trials."""

    settings: Settings
    project: Project
    cfg: Any  # the project's resolved ProjectConfig
    config_name: str
    overrides: list[str]
    version: DataVersion
    refs: dict[str, DatasetRef]
    models: dict[str, UpstreamModel]
    lineage: Lineage
    services: Services
    experiment_id: str = ""

    @property
    def data(self) -> ProjectData:
        return ProjectData(self.refs)

    def comparison_plan(self) -> ComparisonPlan | None:
        """How the register step scores the candidate and the champion on the same rows: the primary split capped
        as the run's own evaluation is, and what this config trains on; None where the card names no comparison."""
        if self.project.card.compare != "sts":
            return None
        evaluated = PRIMARY_SPLIT
        reads = {name: (use.kind, list(use.splits)) for name, use in self.cfg.data.items()}
        return ComparisonPlan(
            data_dir=self.version.path, dataset=evaluated[0], split=evaluated[1],
            max_rows=getattr(getattr(self.cfg, "evaluate", None), "max_rows", None),
            trained_on=trained_on(reads, evaluated), kinds={name: kind for name, (kind, _) in reads.items()},
            cache_dir=self.settings.workspace / "cache" / "scores")


@dataclass
class Training:
    """One train-and-evaluate: the project, its resolved config, the data, the cache key and the working folder.

    Built the same way for a run and for each trial of a sweep (`plan_training`), so a trial with a run's
    overrides has the run's key and finds its cached results. Small and picklable: a trial's is built on the
    Dask or Ray worker that trains it."""

    settings: Settings
    project: Project
    cfg: Any
    config_name: str
    overrides: list[str]
    data: ProjectData
    key: str
    ctx: RunContext
    nproc: int = 1
    job: JobSpec | None = None


@dataclass
class Trained:
    """What `train_and_evaluate` hands back: the model, its evaluation, and whether both came from the cache."""

    model: TrainedModel
    evaluation: Evaluation
    cache_hit: bool
    key: str

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.metrics


def open_run(project_name: str, config_name: str, overrides: list[str] | None,
             produce_upstream: Callable[..., Any]) -> RunPlan:
    """Preflight, services, data version, upstream models, lineage and experiment; closes runs that died before.

    `produce_upstream` is the run flow, called for an upstream model whose alias names no version yet."""
    settings = Settings.from_env()
    checked = preflight(settings, project_name, config_name, overrides)  # the CLI's own result when it ran it
    project, cfg = checked.project, checked.cfg
    check_rank_safe(project, requested_processes(cfg))  # nproc_per_node > 1 refused before any work if unsafe
    dashboard.tag_flow_run(project.name, config_name)
    services = Services.connect(settings, project)
    version = resolve_data(settings)
    refs = {name: dataset_ref(version, name, use.kind) for name, use in cfg.data.items()}
    models = resolve_upstream(cfg, settings, services.client, produce_upstream)  # before this run's MLflow run
    lineage = Lineage(project=project.name, config=config_name, git_commit=git_commit(settings.root),
                      dataset_md5=version.md5, flow_run_id=str(flow_run.id),
                      flow_run_url=url_for("flow-run", obj_id=flow_run.id) or "",
                      model_name=cfg.model_name or project.name, upstream=models)
    for repair in close_abandoned_runs(services.store, services.client):  # nothing half-registered stays
        get_run_logger().warning(f"closed an abandoned run: {repair.line()}")
    try:  # the dashboard's record of runs that ended while the server was gone; not worth this run
        for repair in dashboard.close_flow_runs_left_running(services.store, PREFECT_API_URL.value(),
                                                             str(flow_run.id)):
            get_run_logger().warning(f"closed an abandoned run: {repair.line()}")
    except Exception as error:
        get_run_logger().warning(f"could not close the flow runs left running: {error}")
    experiment = tracking_client.experiment_id(services.client, project.name, settings.artifact_root)
    return RunPlan(settings, project, cfg, config_name, list(overrides or []), version, refs, models, lineage,
                   services, experiment)


def resolve_upstream(cfg, settings: Settings, client, produce: Callable[..., Any]) -> dict[str, UpstreamModel]:
    """Every upstream model of the config at the version its alias names now, produced first where missing."""
    models = {}
    for role, use in cfg.upstream.items():
        name = upstream.model_name(settings.projects_dir, use)
        version = upstream.find(client, name, use.alias)
        if version is None:
            get_run_logger().info(f"{name} has no '{use.alias}' version: running project {use.project} "
                                  f"[{use.config}] first")
            state = produce(use.project, use.config, use.overrides, return_state=True)
            outcome = state.result(raise_on_failure=False)
            if isinstance(outcome, PaperlineError):
                raise outcome
            if state.is_failed():
                raise upstream.UpstreamError(f"upstream project {use.project} [{use.config}] failed: {state.message}")
            version = upstream.find(client, name, use.alias)
            if version is None:
                raise upstream.missing_after_run(name, use.alias, use.project, use.config)
        models[role] = upstream.fetch(client, version, role, use, settings.runs_dir / "upstream")
        get_run_logger().info(f"upstream {role}: {name} v{models[role].version} (@{use.alias})")
    return models


@outages.step("the data gate")
def gate(plan: RunPlan) -> GateOutcome:
    """The data gate over every split the run reads, inside the active MLflow run: the datasets are logged as its
    inputs, the report as its artifact; a version that passes records its row counts (the next shrink check's
    reference). Cached in the workspace per data version and gate code (`paperline run`'s results, a sweep's, a
    deployment's run on a worker)."""
    settings, project, cfg, store = plan.settings, plan.project, plan.cfg, plan.services.store
    for name, ref in plan.refs.items():
        tracking.log_dataset(ref, cfg.data[name].splits, context="train+eval", remote=remote_url(settings.root))
    floors, limits = project.card.min_rows(), project.card.limits()
    # each split's rows in the last other version that passed the gate (the shrink check's reference)
    previous = store.gated_rows(list(cfg.data), excluding_md5=plan.version.md5)
    key = gate_cache_key(cfg, plan.version.md5, floors, previous, limits)
    outcome = verified(data_gate.with_options(result_storage=settings.results_dir), key)(
        plan.refs, cfg, floors, key, previous, limits)
    compared = plan.comparison_plan()
    # the evaluation suite against what this config trains on: reported, never failing; only over data that
    # passed (the notes read the splits again, and a split the gate refused may not even parse)
    if compared is not None and outcome.passed:
        outcome.notes = contamination_notes(compared)
        for note in outcome.notes:
            get_run_logger().info(note)
    tracking.log_gate(outcome)
    if outcome.passed:
        store.record_gated_rows(plan.version.md5, {result.dataset: result.split_rows for result in outcome.results})
    return outcome


@outages.step("data generation")
def generate_and_gate(plan: RunPlan) -> tuple[dict[str, GeneratedData], GateOutcome]:
    """Run the method's `generate` in its project's own folder (a killed generation resumes there), then gate
    every file it wrote under its data kind; a file that passes is an MLflow dataset input digested by its
    sha256. Returns the files by name, their sha256 filled, and the gate's outcome."""
    generated = generate_data(plan.project, plan.cfg, plan.data, plan.settings.runs_dir, plan.models)
    outcome = gate_files([(g.name, g.kind, Path(g.path), g.split) for g in generated.values()])
    create_markdown_artifact(key=dashboard.artifact_key("generated-data-gate"), markdown=outcome.to_markdown(),
                             description="data gate over the generated data")
    for line in outcome.summary_lines():
        get_run_logger().info(f"generated data: {line}")
    tracking.log_gate(outcome, "generated_data_gate")
    for g in generated.values() if outcome.passed else ():
        tracking.log_generated_dataset(g)
    return generated, outcome


def plan_training(settings: Settings, project_name: str, config_name: str, overrides: list[str],
                  refs: dict[str, DatasetRef], models: dict[str, UpstreamModel],
                  generated: dict[str, GeneratedData] | None = None) -> Training:
    """The cache key, working folder and (for `nproc_per_node` > 1) torchrun job of one training."""
    checked = preflight(settings, project_name, config_name, overrides)
    project, cfg = checked.project, checked.cfg
    md5 = next(iter(refs.values())).md5 if refs else ""
    key = cache_key(project, cfg, md5, {role: m.identity() for role, m in models.items()},
                    {name: g.sha256 for name, g in (generated or {}).items()})
    ctx = RunContext(workdir=settings.runs_dir / key[:16], upstream=models, generated=dict(generated or {}))
    nproc = requested_processes(cfg)
    job = None if nproc == 1 else JobSpec.build(settings.root, project.name, config_name, overrides, refs,
                                                ctx.workdir, models, ctx.progress)
    return Training(settings, project, cfg, config_name, list(overrides), ProjectData(refs), key, ctx, nproc, job)


@outages.step("training")
def train_and_evaluate(training: Training) -> Trained:
    """Train (or find the cached model), evaluate (or find the cached evaluation), check the evaluation against
    the card, and log both to the active MLflow run."""
    t = training
    # the workspace's result store, the same for `paperline run`, a sweep's trial and a deployment's worker
    train_, evaluate_ = (step.with_options(result_storage=t.settings.results_dir) for step in (train, evaluate))
    trained = verified(train_, f"{t.key}-train")(t.project, t.cfg, t.data, t.key, t.ctx, t.job, t.nproc,
                                                 return_state=True)
    model = trained.result()
    if not model.path.exists():  # the cached result outlived its files (workspace cleaned): recompute
        trained = train_.with_options(refresh_cache=True)(t.project, t.cfg, t.data, t.key, t.ctx, t.job, t.nproc,
                                                          return_state=True)
        model = trained.result()
    evaluated = verified(evaluate_, f"{t.key}-evaluate")(t.project, model, t.cfg, t.data, t.key, t.ctx,
                                                         return_state=True)
    evaluation = evaluated.result()
    check_evaluation(t.project, t.cfg, evaluation)
    cache_hit = trained.name == "Cached" and evaluated.name == "Cached"
    tracking.log_results(model, evaluation)
    tracking.set_tags({tags.CACHE_HIT: str(cache_hit), tags.CACHE_KEY: t.key})
    return Trained(model, evaluation, cache_hit, t.key)


# ---- a sweep's trials: planned and trained as a run is, each in its own nested MLflow run -------------------


@task(name="trial", cache_policy=NO_CACHE, persist_result=False)
def run_trial(settings: Settings, project_name: str, config_name: str, overrides: list[str], refs: dict,
              models: dict, run_id: str) -> Trained:
    """Train and evaluate one trial inside its own (nested) MLflow run; it may run on a Dask or Ray worker."""
    tracking_client.connect(settings)  # a worker process: point MLflow at the same store
    training = plan_training(settings, project_name, config_name, overrides, refs, models)
    with tracking.resume_run(run_id):
        try:
            tracking.log_config(training.cfg)
            trained = train_and_evaluate(training)
            tracking.set_status("finished")
        except BaseException as error:
            tracking.record_error(error)
            raise
    remove_checkpoints(training.ctx.workdir)
    return trained


def register_trial(plan: RunPlan, index: int, run_id: str, trained: Trained, summary: Any) -> None:
    """A sweep's best trial, registered from its own (nested) run; the policy decides about `champion`. Fills the
    sweep's `summary` (a paperline.ops.runs.sweep_grid.SweepSummary) with the version and the decision."""
    lineage = plan.lineage
    run_summary = RunSummary(project=plan.project.name, config=lineage.config, status="running",
                             metrics=trained.metrics, model_name=lineage.model_name, mlflow_run_id=run_id,
                             flow_run_id=lineage.flow_run_id, flow_run_url=lineage.flow_run_url,
                             dataset_md5=lineage.dataset_md5, cache_hit=trained.cache_hit)
    with tracking.resume_run(run_id, nested=True):
        register(plan.services.registry, plan.services.policy, plan.project, trained.model, trained.key, lineage,
                 run_summary, plan.comparison_plan())
        tracking.set_tags({tags.SWEEP_BEST: "true"})
    plan.services.store.record_lineage(**lineage.record(
        status="registered", mlflow_run_id=run_id, gate_passed=True, cache_key=trained.key,
        model_version=run_summary.model_version,
        details={"metrics": trained.metrics, "decision": run_summary.decision, "sweep_trial": index}))
    summary.model_version, summary.decision = run_summary.model_version, run_summary.decision
    summary.champion_moved = run_summary.champion_moved


def remove_checkpoints(workdir: Path) -> None:
    """Checkpoints exist to resume a killed job; once the model is registered they are only disk (~270 MB each)."""
    for folder in sorted(workdir.glob("**/checkpoint-*"), reverse=True):
        shutil.rmtree(folder, ignore_errors=True)
