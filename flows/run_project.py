"""The parent flow: resolve data -> upstream models -> data gate -> train -> evaluate -> track -> register -> promote.

Orchestration only: every step calls the core library or the project's method. Run it as
`paperline run <project>` or as a script: `python flows/run_project.py sbert_sts --config smoke`.

A config's `upstream:` models (a teacher, say) are resolved by registry alias before the run starts; one that
does not exist yet is produced by running its project's flow first, as a subflow (paperline.upstream).

Training and evaluation are cached by Prefect under a key covering the project's files, the library code,
the resolved config and the dataset md5 (`paperline.pipeline.cache_key`); results persist in the workspace,
so an unchanged rerun in a new process skips both and records a run that says so.
"""

from __future__ import annotations

import argparse
import logging
import shutil

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.utilities.urls import url_for

from paperline import tracking, upstream
from paperline.config import flatten
from paperline.data import dataset_ref, remote_url, resolve_data_version
from paperline.errors import PaperlineError
from paperline.pipeline import GateOutcome, RunSummary, cache_key, gate_cache_key, gate_datasets, git_commit
from paperline.policy import decide, load_policy
from paperline.projects import Evaluation, Project, ProjectData, RunContext, TrainedModel, get_project
from paperline.registry import ModelRegistry
from paperline.settings import Settings
from paperline.store import AuditStore


class _OneLineUserErrors(logging.Filter):
    """Prefect logs a task's exception with its traceback; for errors a user caused, the message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PaperlineError):
            record.exc_info = None
            record.exc_text = None
        return True


@task(name="resolve data")
def resolve_data(settings: Settings):
    version = resolve_data_version(settings.root)
    if version.pulled:
        get_run_logger().info(f"pulled data {version.md5} from the DVC remote")
    return version


@task(name="data gate", cache_key_fn=lambda context, parameters: parameters["key"], persist_result=True)
def data_gate(refs, cfg, key: str) -> GateOutcome:
    """GX validation of every split the run reads; cached per data version and gate code."""
    outcome = gate_datasets(refs, cfg)
    create_markdown_artifact(key="data-gate", markdown=outcome.to_markdown(), description="data gate report")
    for line in outcome.summary_lines():
        get_run_logger().info(line)
    return outcome


def _step_key(step: str):
    return lambda context, parameters: f"{parameters['key']}-{step}"


@task(name="train", cache_key_fn=_step_key("train"), persist_result=True)
def train(project: Project, cfg, data: ProjectData, key: str, settings: Settings, models: dict) -> TrainedModel:
    method = project.method()
    ctx = RunContext(workdir=settings.runs_dir / key[:16], upstream=models)
    if project.trains:
        return method.train(cfg, data, ctx)
    return method.prepare(cfg, data, ctx)  # a training-free method builds its servable model


@task(name="evaluate", cache_key_fn=_step_key("evaluate"), persist_result=True)
def evaluate(project: Project, model: TrainedModel, cfg, data: ProjectData, key: str, settings: Settings,
             models: dict) -> Evaluation:
    return project.method().evaluate(model, cfg, data, RunContext(workdir=settings.runs_dir / key[:16], upstream=models))


def resolve_upstream(project: Project, cfg, settings: Settings, client) -> dict:
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


def reference_reproduced(project: Project, config_name: str, metrics: dict[str, float]) -> bool | None:
    """Whether every reference result of the card for this config is within its tolerance; None if it has none."""
    references = [r for r in project.card.reference_results if r.config == config_name and r.metric in metrics]
    if not references:
        return None
    return all(abs(metrics[r.metric] - r.value) <= r.tolerance for r in references)


@task(name="register and promote")
def register_and_promote(registry: ModelRegistry, summary: RunSummary, model: TrainedModel, key: str,
                         project: Project, policy, lineage: dict) -> None:
    import mlflow

    metric = project.card.primary_metric
    existing = registry.version_for_cache_key(summary.model_name, key)
    if existing:  # an unchanged rerun: the same model is already registered
        summary.model_version = existing
    else:
        model_uri = tracking.log_model(model)
        tags = {"paperline.cache_key": key, "paperline.primary_metric": metric.name,
                **({} if metric.greater_is_better else {"paperline.lower_is_better": "true"}),
                **{f"paperline.metric.{k}": f"{v:.4f}" for k, v in summary.metrics.items()}, **lineage}
        summary.model_version = registry.register(name=summary.model_name, model_uri=model_uri,
                                                  run_id=summary.mlflow_run_id, tags=tags,
                                                  flow_run_id=summary.flow_run_id)
    champion = registry.champion(summary.model_name)
    is_champion = champion is not None and str(champion.version) == summary.model_version
    champion_value = None
    if champion is not None and not is_champion:
        champion_value = float(champion.tags.get(f"paperline.metric.{metric.name}", "nan"))
    decision = decide(policy, gate_passed=True, metric_name=metric.name, candidate=summary.metrics[metric.name],
                      champion=champion_value, greater_is_better=metric.greater_is_better,
                      reference_reproduced=reference_reproduced(project, summary.config, summary.metrics))
    if is_champion:
        decision.promote = False
        decision.reasons.append(f"v{summary.model_version} is already champion")
    summary.decision = decision.reasons
    summary.champion_moved = registry.apply_decision(
        name=summary.model_name, version=summary.model_version, decision=decision, gate_passed=True,
        flow_run_id=summary.flow_run_id, mlflow_run_id=summary.mlflow_run_id)
    summary.is_champion = summary.champion_moved or is_champion
    if summary.champion_moved:
        summary.budget_aliases = registry.budget_aliases(summary.model_name)
    mlflow.set_tags({"paperline.model_version": summary.model_version,
                     "paperline.champion_moved": str(summary.champion_moved)})


@flow(name="paperline-run")
def run_project(project_name: str, config_name: str = "default", overrides: list[str] | None = None):
    """Run one project's pipeline; returns the RunSummary, or a Failed state when the data gate fails."""
    import mlflow

    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_OneLineUserErrors())
    settings = Settings.from_env()
    project = get_project(settings.projects_dir, project_name)
    cfg = project.load_config(config_name, overrides)
    upstream.check_graph(settings.projects_dir, project.name, cfg)
    client = tracking.connect(settings)
    store = AuditStore(settings.store_url)
    registry = ModelRegistry(client, store, policy_path=settings.policy_path)
    policy = load_policy(settings.policy_path, project.name)

    version = resolve_data(settings)
    refs = {name: dataset_ref(version, name, use.kind) for name, use in cfg.data.items()}
    data = ProjectData(refs)
    models = resolve_upstream(project, cfg, settings, client)  # before this run's MLflow run: it may run a flow
    key = cache_key(project, cfg, version.md5, {role: m.identity() for role, m in models.items()})
    flow_run_url = url_for("flow-run", obj_id=flow_run.id) or ""
    lineage = {"paperline.project": project.name, "paperline.config": config_name,
               "paperline.git_commit": git_commit(settings.root), "paperline.dataset_md5": version.md5,
               "paperline.flow_run_id": str(flow_run.id), "paperline.flow_run_url": flow_run_url}
    for resolved in models.values():
        lineage.update(resolved.tags())
    summary = RunSummary(project=project.name, config=config_name, status="running", dataset_md5=version.md5,
                         model_name=cfg.model_name or project.name, flow_run_id=str(flow_run.id),
                         flow_run_url=flow_run_url)
    experiment = tracking.experiment_id(client, project.name, settings.artifact_root)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{project.name}-{config_name}", tags=lineage) as run:
        summary.mlflow_run_id, summary.mlflow_experiment_id = run.info.run_id, experiment
        mlflow.log_params(flatten(cfg))
        mlflow.log_params({f"upstream.{role}.version": m.version for role, m in models.items()})
        for name, ref in refs.items():
            tracking.log_dataset(ref, cfg.data[name].splits, context="train+eval", remote=remote_url(settings.root))

        gate = data_gate(refs, cfg, gate_cache_key(cfg, version.md5))
        tracking.log_text_files({"data_gate.md": gate.to_markdown(), "data_gate.html": gate.to_html(),
                                 "data_gate.json": tracking.json_text(gate.to_dict())}, "data_gate")
        mlflow.set_tag("paperline.gate_passed", str(gate.passed))
        record = dict(project=project.name, config_name=config_name, flow_run_id=summary.flow_run_id,
                      flow_run_url=summary.flow_run_url, mlflow_run_id=summary.mlflow_run_id,
                      git_commit=lineage["paperline.git_commit"], dataset_md5=version.md5,
                      gate_passed=gate.passed, cache_key=key, model_name=summary.model_name)
        upstream_record = {role: m.record() for role, m in models.items()}
        if not gate.passed:
            summary.status, summary.message = "gate-failed", "; ".join(gate.summary_lines())
            store.record_lineage(**record, model_version=None, status="gate-failed",
                                 details={"upstream": upstream_record} if models else None)
            mlflow.set_tag("paperline.status", "gate-failed")
            mlflow.end_run(status="FAILED")
            return Failed(message=f"data gate failed: {summary.message}", data=summary)

        try:
            _train_evaluate_register(project, cfg, data, key, settings, registry, summary, policy, lineage, models)
        except BaseException as error:  # the run's lineage says how it ended, whatever ended it (Ctrl-C too)
            # Prefect turns SIGTERM into TerminationSignal inside a flow; the CLI then stops as for Ctrl-C
            status = "interrupted" if isinstance(error, (KeyboardInterrupt, TerminationSignal)) else "failed"
            details = {"error": str(error) or type(error).__name__,
                       **({"upstream": upstream_record} if models else {})}
            store.record_lineage(**record, model_version=None, status=status, details=details)
            mlflow.set_tag("paperline.status", status)
            raise
        store.record_lineage(**record, model_version=summary.model_version, status=summary.status,
                             details={"metrics": summary.metrics, "decision": summary.decision,
                                      **({"upstream": upstream_record} if models else {})})
        _remove_checkpoints(settings.runs_dir / key[:16])
    create_markdown_artifact(key="run-summary", markdown="\n".join(["```", *summary.lines(), "```"]))
    return summary


def _train_evaluate_register(project, cfg, data, key, settings, registry, summary, policy, lineage, models) -> None:
    import mlflow

    trained = train(project, cfg, data, key, settings, models, return_state=True)
    model = trained.result()
    if not model.path.exists():  # the cached result outlived its files (workspace cleaned): recompute
        trained = train.with_options(refresh_cache=True)(project, cfg, data, key, settings, models, return_state=True)
        model = trained.result()
    evaluated = evaluate(project, model, cfg, data, key, settings, models, return_state=True)
    evaluation = evaluated.result()
    summary.cache_hit = trained.name == "Cached" and evaluated.name == "Cached"
    summary.metrics = evaluation.metrics
    mlflow.log_metrics(evaluation.metrics)
    mlflow.log_metrics({k: v for k, v in model.info.items() if isinstance(v, (int, float))})
    if evaluation.tags:
        mlflow.set_tags(evaluation.tags)
    for path in evaluation.artifacts.values():
        mlflow.log_artifact(str(path), "evaluation")
    tracking.log_tables(evaluation.tables)
    for name, columns in evaluation.tables.items():  # grids and curves, readable in the dashboard
        create_table_artifact(key=name.replace("_", "-"), table=columns, description=f"{project.name}: {name}")
    mlflow.set_tag("paperline.cache_hit", str(summary.cache_hit))
    register_and_promote(registry, summary, model, key, project, policy, lineage)
    summary.status = "cached" if summary.cache_hit else "registered"
    mlflow.set_tag("paperline.status", summary.status)


def _remove_checkpoints(workdir) -> None:
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
