"""The parent flow: resolve data -> upstream models -> data gate -> train -> evaluate -> track -> register -> promote.

A generating method (`GeneratingMethod.generate`: multicsr's LM triplets) adds two steps after the data gate:
generate, then the gate over what it wrote; the files' sha256 enter the training cache key.

Orchestration only: every step is a library function (paperline.ops, paperline.data) or the project's method,
wired here as Prefect tasks. Run it as `paperline run <project>` (the CLI loads it through the `paperline.flows`
entry point), from a deployment, or as a script: `python -m paperline_flows.run_project sbert_sts --config smoke`.

A config that asks for `nproc_per_node` > 1 trains under `torchrun --standalone` (a subprocess running
`paperline.project.distributed_job` on every rank); rank 0's result comes back as the same TrainedModel, so the
steps after training do not change.

Training and evaluation are cached by Prefect under `paperline.ops.cache.cache_key` (the project's files, the
library layers that can change results, the resolved config, the dataset md5 and the upstream models); results
persist in the workspace, so an unchanged rerun in a new process skips both and records a run that says so.
They are stored as checked JSON, never pickles, and verified before use (`paperline_flows.results.verified`): a
swapped or edited result, or a model folder whose files changed, is logged in one line and recomputed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.utilities.urls import url_for

from paperline.core.config import flatten
from paperline.core.errors import PaperlineError
from paperline.core.settings import Settings
from paperline.data.datasets import dataset_ref, remote_url, resolve_data_version
from paperline.data.quality import gate_datasets, gate_files
from paperline.data.quality_report import GateOutcome
from paperline.ops import run_views, tracking, upstream
from paperline.ops.cache import cache_key, gate_cache_key
from paperline.ops.decisions import Lineage, git_commit
from paperline.ops.policy import load_policy
from paperline.ops.preflight import preflight
from paperline.ops.promotion import register_and_promote
from paperline.ops.reconcile import close_abandoned_runs
from paperline.ops.registry import ModelRegistry
from paperline.ops.store import AuditStore
from paperline.ops.summary import RunSummary
from paperline.project.contract import check_evaluation
from paperline.project.discovery import Project
from paperline.project.distributed_job import JobSpec, check_rank_safe, launch, requested_processes
from paperline.project.interface import Evaluation, GeneratedData, ProjectData, RunContext, TrainedModel
from paperline_flows.results import RESULTS, verified


class _OneLineUserErrors(logging.Filter):
    """Prefect logs a task's exception with its traceback; for errors a user caused, the message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PaperlineError):
            record.exc_info = None
            record.exc_text = None
        return True


# ---- tasks: each calls one library function or one method function ------------------------------------------


@task(name="resolve data", cache_policy=NO_CACHE, persist_result=False)  # DVC decides each time
def resolve_data(settings: Settings):
    version = resolve_data_version(settings.root)
    if version.pulled:
        get_run_logger().info(f"pulled data {version.md5} from the DVC remote")
    return version


@task(name="data gate", cache_key_fn=lambda context, parameters: parameters["key"], persist_result=True,
      result_serializer=RESULTS)
def data_gate(refs, cfg, min_rows: dict, key: str, previous_rows: dict | None = None,
              max_shrink: dict | None = None) -> GateOutcome:
    """GX validation of every split the run reads, with the card's row floors and, against the row counts of the
    last version that passed (`previous_rows`), its shrink fractions; cached per data version, those inputs and
    gate code."""
    outcome = gate_datasets(refs, cfg, min_rows=min_rows, previous_rows=previous_rows, max_shrink=max_shrink)
    create_markdown_artifact(key=_artifact_key("data-gate"), markdown=outcome.to_markdown(),
                             description="data gate report")
    for line in outcome.summary_lines():
        get_run_logger().info(line)
    return outcome


def _step_key(step: str):
    return lambda context, parameters: f"{parameters['key']}-{step}"


@task(name="train", cache_key_fn=_step_key("train"), persist_result=True, result_serializer=RESULTS)
def train(project: Project, cfg, data: ProjectData, key: str, ctx: RunContext, job: JobSpec | None = None,
          nproc: int = 1) -> TrainedModel:
    if job is not None and nproc > 1:  # the same train, on every rank of a torchrun; rank 0's result comes back
        import torch

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        get_run_logger().info(f"training under torchrun --standalone: {nproc} processes ({backend})")
        return launch(job, nproc)
    # a training-free method builds its servable model instead (TrainingFreeMethod.prepare)
    return project.build_model(cfg, data, ctx)


@task(name="evaluate", cache_key_fn=_step_key("evaluate"), persist_result=True, result_serializer=RESULTS)
def evaluate(project: Project, model: TrainedModel, cfg, data: ProjectData, key: str, ctx: RunContext) -> Evaluation:
    return project.method().evaluate(model, cfg, data, ctx)


@task(name="generate data", cache_policy=NO_CACHE, persist_result=False)
def generate_data(project: Project, cfg, data: ProjectData, runs_dir: Path, models: dict) -> dict[str, GeneratedData]:
    """A generating method's first stage (an LM writing triplets). Not cached by Prefect: the method resumes and
    reuses its own files, and the files' sha256, known only once they exist, keys the training cache."""
    return project.generate(cfg, data, runs_dir, models)


# Never cached: registration and the policy run every time (and a registry cannot be hashed into a key).
@task(name="register and promote", cache_policy=NO_CACHE, persist_result=False)
def register(registry, policy, project: Project, model: TrainedModel, key: str, lineage: Lineage,
             summary: RunSummary) -> None:
    register_and_promote(registry, policy, project.card, model, key, lineage, summary)


def resolve_upstream(cfg, settings: Settings, client) -> dict:
    """Every upstream model of the config at the version its alias names now, produced first where missing."""
    models = {}
    for role, use in cfg.upstream.items():
        name = upstream.model_name(settings.projects_dir, use)
        version = upstream.find(client, name, use.alias)
        if version is None:
            get_run_logger().info(f"{name} has no '{use.alias}' version: running project {use.project} "
                                  f"[{use.config}] first")
            state = run_project(use.project, use.config, use.overrides, return_state=True)
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


def generate_and_gate(project: Project, cfg, data: ProjectData, settings: Settings,
                      models: dict) -> tuple[dict[str, GeneratedData], GateOutcome]:
    """Run the method's `generate` in its project's own folder (a killed generation resumes there), then gate
    every file it wrote under its data kind; a file that passes is an MLflow dataset input digested by its
    sha256. Returns the files by name, their sha256 filled, and the gate's outcome."""
    generated = generate_data(project, cfg, data, settings.runs_dir, models)
    gate = gate_files([(g.name, g.kind, Path(g.path), g.split) for g in generated.values()])
    create_markdown_artifact(key=_artifact_key("generated-data-gate"), markdown=gate.to_markdown(),
                             description="data gate over the generated data")
    for line in gate.summary_lines():
        get_run_logger().info(f"generated data: {line}")
    tracking.log_gate(gate, "generated_data_gate")
    for g in generated.values() if gate.passed else ():
        tracking.log_generated_dataset(g)
    return generated, gate


def connect_services(settings: Settings, project: Project):
    """The tracking client, the audit store, the registry over both, and the project's promotion policy."""
    client = tracking.connect(settings)
    store = AuditStore(settings.store_url)
    return client, store, ModelRegistry(client, store, policy_path=settings.policy_path), \
        load_policy(settings.policy_path, project.name)


# ---- the flow -------------------------------------------------------------------------------------------------


def _artifact_key(what: str) -> str:
    """`<project-dashed>-<what>`: one artifact history per project (both flows take `project_name`)."""
    return run_views.artifact_key(flow_run.parameters.get("project_name") or "paperline", what)


def _flow_run_name() -> str:
    """`<project>-<config>-<UTC stamp>` for the Prefect flow run; the MLflow run takes the same name."""
    parameters = flow_run.parameters
    return run_views.run_name(parameters["project_name"], parameters.get("config_name") or "default")


def _run_name(project: str, config: str) -> str:
    """The flow run's own name when it has that form, so that the MLflow run and the flow run share one stamp."""
    name = flow_run.name or ""
    return name if name.startswith(f"{project}-{config}-") else run_views.run_name(project, config)


def _tag_flow_run(project: str, config: str) -> None:
    """Tags `project:<p>` and `config:<c>` on this flow run, however it was started (the CLI, a deployment, an
    upstream run inside another flow): the dashboard filters runs by them."""
    import httpx
    from prefect.client.orchestration import get_client

    ours = [f"project:{project}", f"config:{config}"]
    kept = [t for t in flow_run.tags if not t.startswith(("project:", "config:"))]
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, tags=[*kept, *ours])
    except httpx.HTTPError as error:  # a label in the dashboard is not worth a run
        get_run_logger().warning(f"could not tag the flow run {' '.join(ours)}: {error}")


@flow(name="paperline-run", flow_run_name=_flow_run_name)
def run_project(project_name: str, config_name: str = "default", overrides: list[str] | None = None):
    """Run one project's pipeline; returns the RunSummary, or a Failed state when the data gate fails."""
    import mlflow

    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_OneLineUserErrors())
    started_at = time.monotonic()
    settings = Settings.from_env()
    checked = preflight(settings, project_name, config_name, overrides)  # the CLI's own result when it ran it
    project, cfg = checked.project, checked.cfg
    nproc = requested_processes(cfg)
    check_rank_safe(project, nproc)  # a method that is not rank-safe refuses nproc_per_node > 1 before any work
    _tag_flow_run(project.name, config_name)
    client, store, registry, policy = connect_services(settings, project)

    version = resolve_data(settings)
    refs = {name: dataset_ref(version, name, use.kind) for name, use in cfg.data.items()}
    data = ProjectData(refs)
    models = resolve_upstream(cfg, settings, client)  # before this run's MLflow run: it may run a flow
    upstream_ids = {role: m.identity() for role, m in models.items()}
    key = cache_key(project, cfg, version.md5, upstream_ids)  # a generating method's adds its files' sha256 below
    ctx = RunContext(workdir=settings.runs_dir / key[:16], upstream=models)
    lineage = Lineage(project=project.name, config=config_name, git_commit=git_commit(settings.root),
                      dataset_md5=version.md5, flow_run_id=str(flow_run.id),
                      flow_run_url=url_for("flow-run", obj_id=flow_run.id) or "",
                      model_name=cfg.model_name or project.name, upstream=models)
    summary = RunSummary(project=project.name, config=config_name, status="running", dataset_md5=version.md5,
                         model_name=lineage.model_name, flow_run_id=lineage.flow_run_id,
                         flow_run_url=lineage.flow_run_url)
    for repair in close_abandoned_runs(store, client):  # runs that died before: closed, nothing half-registered
        get_run_logger().warning(f"closed an abandoned run: {repair.line()}")
    experiment = tracking.experiment_id(client, project.name, settings.artifact_root)
    run_tags = {**lineage.tags(), **run_views.source_tags(lineage.git_commit)}  # MLflow's Source, Git commit
    with mlflow.start_run(experiment_id=experiment, run_name=_run_name(project.name, config_name),
                          tags=run_tags) as run, ExitStack() as held:
        summary.mlflow_run_id, summary.mlflow_experiment_id = run.info.run_id, experiment
        summary.mlflow_run_url = tracking.run_url(settings.tracking_uri, experiment, run.info.run_id)
        # The run's lock lives as long as this process: the next start tells a dead run from a live one by it.
        held.enter_context(store.hold(f"run:{run.info.run_id}"))
        started = store.record_lineage(**lineage.record(status="running", mlflow_run_id=run.info.run_id,
                                                        gate_passed=None, cache_key=key))
        mlflow.log_params(flatten(cfg))
        mlflow.log_params({f"upstream.{role}.version": m.version for role, m in models.items()})
        for name, ref in refs.items():
            tracking.log_dataset(ref, cfg.data[name].splits, context="train+eval", remote=remote_url(settings.root))

        floors, shrink = project.card.min_rows(), project.card.max_shrink()
        # each split's rows in the last other version that passed the gate (the shrink check's reference)
        previous = store.gated_rows(list(cfg.data), excluding_md5=version.md5)
        gate_key = gate_cache_key(cfg, version.md5, floors, previous, shrink)
        # `paperline run`'s result cache, in a deployment's run on a worker too (Settings.results_dir)
        gate = verified(data_gate.with_options(result_storage=settings.results_dir), gate_key)(
            refs, cfg, floors, gate_key, previous, shrink)
        tracking.log_gate(gate)

        def record(status: str, **fields) -> None:  # `key` as it is when called: generated data changes it
            store.update_lineage(started.id, **lineage.record(status=status, mlflow_run_id=summary.mlflow_run_id,
                                                              gate_passed=gate.passed, cache_key=key, **fields))

        def gate_failed(what: str) -> Failed:
            summary.status, summary.message = "gate-failed", "; ".join(gate.summary_lines())
            record("gate-failed")
            mlflow.set_tag("paperline.status", "gate-failed")
            mlflow.end_run(status="FAILED")
            summary.elapsed_s = time.monotonic() - started_at
            return Failed(message=f"{what} failed: {summary.message}", data=summary)

        if not gate.passed:
            return gate_failed("data gate")
        store.record_gated_rows(version.md5, {result.dataset: result.split_rows for result in gate.results})
        if project.generates():  # the method writes its own training data: a dataset version of its own
            ctx.generated, gate = generate_and_gate(project, cfg, data, settings, models)
            if not gate.passed:
                return gate_failed("the gate over the generated data")
            key = cache_key(project, cfg, version.md5, upstream_ids,
                            {name: g.sha256 for name, g in ctx.generated.items()})
            ctx.workdir = settings.runs_dir / key[:16]

        # One registration per cache key: a concurrent run of the same unchanged project waits here, then finds
        # the first one's cached results and registered version instead of registering the same model twice.
        if not held.enter_context(store.hold(f"cache:{project.name}:{key}", wait=False)):
            get_run_logger().info("another run of this project, config and data is training: waiting for it")
            held.enter_context(store.hold(f"cache:{project.name}:{key}"))
        job = None if nproc == 1 else JobSpec.build(settings.root, project.name, config_name, overrides, refs,
                                                    ctx.workdir, models, ctx.progress)
        try:
            _train_evaluate_register(project, cfg, data, key, ctx, registry, policy, lineage, summary, job, nproc,
                                     settings.results_dir)
        except BaseException as error:  # the run's lineage says how it ended, whatever ended it (Ctrl-C too)
            # Prefect turns SIGTERM into TerminationSignal inside a flow; the CLI then stops as for Ctrl-C
            status = "interrupted" if isinstance(error, (KeyboardInterrupt, TerminationSignal)) else "failed"
            record(status, details={"error": str(error) or type(error).__name__})
            mlflow.set_tag("paperline.status", status)
            raise
        record(summary.status, model_version=summary.model_version,
               details={"metrics": summary.metrics, "decision": summary.decision})
        _remove_checkpoints(ctx.workdir)
    summary.elapsed_s = time.monotonic() - started_at
    create_markdown_artifact(key=run_views.artifact_key(project.name, "run-summary"),
                             markdown="\n".join(["```", *summary.lines(), "```"]))
    return summary


def _train_evaluate_register(project, cfg, data, key, ctx, registry, policy, lineage, summary, job=None,
                             nproc=1, results: Path | None = None) -> None:
    import mlflow

    # results: where the cached results live (Settings.results_dir), the same for `paperline run` and a worker
    train_, evaluate_ = (step.with_options(result_storage=results) for step in (train, evaluate))
    trained = verified(train_, f"{key}-train")(project, cfg, data, key, ctx, job, nproc, return_state=True)
    model = trained.result()
    if not model.path.exists():  # the cached result outlived its files (workspace cleaned): recompute
        trained = train_.with_options(refresh_cache=True)(project, cfg, data, key, ctx, job, nproc, return_state=True)
        model = trained.result()
    evaluated = verified(evaluate_, f"{key}-evaluate")(project, model, cfg, data, key, ctx, return_state=True)
    evaluation = evaluated.result()
    check_evaluation(project, cfg, evaluation)
    summary.cache_hit = trained.name == "Cached" and evaluated.name == "Cached"
    summary.metrics = evaluation.metrics
    tracking.log_results(model, evaluation)
    for name, columns in evaluation.tables.items():  # grids and curves, readable in the dashboard
        create_table_artifact(key=run_views.artifact_key(project.name, name), table=columns,
                              description=f"{project.name}: {name}")
    mlflow.set_tag("paperline.cache_hit", str(summary.cache_hit))
    register(registry, policy, project, model, key, lineage, summary)
    summary.status = "cached" if summary.cache_hit else "registered"
    mlflow.set_tag("paperline.status", summary.status)


def _remove_checkpoints(workdir: Path) -> None:
    """Checkpoints exist to resume a killed job; once the model is registered they are only disk (~270 MB each)."""
    for folder in sorted(workdir.glob("**/checkpoint-*"), reverse=True):
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project")
    parser.add_argument("--config", default="default")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(run_project(args.project, args.config, args.overrides))


if __name__ == "__main__":
    main()
