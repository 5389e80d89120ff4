"""The sweep flow: one data gate, then trials fanned out through a Prefect task runner, then the best trial
through registration and the promotion policy.

`paperline sweep <project> [--config NAME] key=a,b,c ... --runner thread|dask|ray[:ADDRESS]` runs it (the CLI
loads it through the `paperline.flows` entry point `sweep`). Orchestration only, reusing the run flow's pieces:

- the data is resolved and gated once (`resolve_data`, `data_gate`: the same cached gate as `paperline run`), and
  the upstream models are resolved once (`resolve_upstream`);
- each trial is a task that calls the run flow's cached `train` and `evaluate` tasks under the same cache key as
  `paperline run` with the same overrides, so a trial that matches an earlier run (or another sweep's trial) is a
  cache hit, and its MLflow run is a nested run under the sweep's parent run;
- the parent run holds the sweep table (`mlflow.log_table`, so the MLflow UI compares the trials), and after every
  trial has ended, only the best by the card's primary metric (`greater_is_better`) goes through
  `register_and_promote`; the parent says which and why (tags `paperline.sweep.*` and `sweep/decision.md`).

A trial that fails is recorded (its MLflow run FAILED, tags `paperline.status=failed` and `paperline.error`, a
row in the table) and the others go on. GPUs per trial are requested through the runner's own options:
Dask resources (`dask.annotate(resources={"GPU": n})`: the workers must be started with `--resources GPU=N`)
and Ray's `remote_options(num_gpus=n)` (Ray also sets CUDA_VISIBLE_DEVICES per trial); the thread runner has no
such option (all trials see every GPU of the machine).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.utilities.urls import url_for

from paperline.core.config import flatten
from paperline.core.settings import Settings
from paperline.data.datasets import dataset_ref, remote_url
from paperline.ops import sweep as grid_ops
from paperline.ops import tracking
from paperline.ops.cache import cache_key, gate_cache_key
from paperline.ops.decisions import Lineage, git_commit
from paperline.ops.preflight import preflight
from paperline.ops.promotion import register_and_promote
from paperline.ops.summary import RunSummary
from paperline.project.contract import check_evaluation
from paperline.project.distributed_job import JobSpec, requested_processes
from paperline.project.interface import ProjectData, RunContext, TrainedModel
from paperline_flows.results import verified
from paperline_flows.run_project import (
    _OneLineUserErrors,
    _remove_checkpoints,
    connect_services,
    data_gate,
    evaluate,
    resolve_data,
    resolve_upstream,
    train,
)


@dataclass
class TrialOutcome:
    """What a finished trial hands back to the sweep: its metrics, and what registering it needs."""

    metrics: dict[str, float]
    model: TrainedModel
    key: str
    cache_hit: bool


def make_task_runner(spec: grid_ops.RunnerSpec, workers: int):
    """The Prefect task runner for a runner spec. Dask without an address: a LocalCluster of `workers` worker
    processes (one thread each, so two trainings never share a process) on 127.0.0.1, no dashboard. Ray without an
    address: a local Ray instance (`ray.init()`)."""
    if spec.kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if spec.kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise grid_ops.SweepError("the dask runner needs prefect-dask: pip install -c constraints.txt "
                                      "-e '.[dask]'") from None
        if spec.address:
            return DaskTaskRunner(address=spec.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "host": "127.0.0.1", "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise grid_ops.SweepError("the ray runner needs prefect-ray: pip install -c constraints.txt "
                                  "-e '.[ray]'") from None
    return RayTaskRunner(address=spec.address) if spec.address else RayTaskRunner()


def _gpu_options(spec: grid_ops.RunnerSpec, gpus: float):
    """The runner's own way to ask for GPUs for the trials submitted inside this context."""
    if not gpus or spec.kind == "thread":
        return nullcontext()
    if spec.kind == "dask":
        import dask

        return dask.annotate(resources={"GPU": gpus})
    from prefect_ray.context import remote_options

    return remote_options(num_gpus=gpus)


@task(name="trial", cache_policy=NO_CACHE, persist_result=False)
def run_trial(settings: Settings, project_name: str, config_name: str, trial_overrides: list[str],
              refs: dict, models: dict, run_id: str) -> TrialOutcome:
    """Train and evaluate one trial (the run flow's cached tasks) inside its own nested MLflow run."""
    import mlflow

    tracking.connect(settings)  # this may be a Dask or Ray worker process: point MLflow at the same store
    checked = preflight(settings, project_name, config_name, trial_overrides)
    project, cfg = checked.project, checked.cfg
    data = ProjectData(refs)
    md5 = next(iter(refs.values())).md5 if refs else ""
    key = cache_key(project, cfg, md5, {role: m.identity() for role, m in models.items()})
    ctx = RunContext(workdir=settings.runs_dir / key[:16], upstream=models)
    nproc = requested_processes(cfg)  # a config asking for torchrun trains under it, as in `paperline run`
    job = None if nproc == 1 else JobSpec.build(settings.root, project.name, config_name, trial_overrides, refs,
                                                ctx.workdir, models, ctx.progress)
    with mlflow.start_run(run_id=run_id):
        try:
            mlflow.log_params(flatten(cfg))
            trained = verified(train, f"{key}-train")(project, cfg, data, key, ctx, job, nproc, return_state=True)
            model = trained.result()
            if not model.path.exists():  # the cached result outlived its files: recompute
                trained = train.with_options(refresh_cache=True)(project, cfg, data, key, ctx, job, nproc,
                                                                 return_state=True)
                model = trained.result()
            evaluated = verified(evaluate, f"{key}-evaluate")(project, model, cfg, data, key, ctx, return_state=True)
            evaluation = evaluated.result()
            check_evaluation(project, cfg, evaluation)
            cache_hit = trained.name == "Cached" and evaluated.name == "Cached"
            tracking.log_results(model, evaluation)
            mlflow.set_tags({"paperline.cache_hit": str(cache_hit), "paperline.status": "finished",
                             "paperline.cache_key": key})
        except BaseException as error:
            mlflow.set_tags({"paperline.status": "failed",
                             "paperline.error": (str(error) or type(error).__name__)[:4000]})
            raise
    _remove_checkpoints(ctx.workdir)
    return TrialOutcome(metrics=evaluation.metrics, model=model, key=key, cache_hit=cache_hit)


@flow(name="paperline-sweep")
def sweep(project_name: str, config_name: str = "default", grid: dict[str, list[str]] | None = None,
          overrides: list[str] | None = None, runner: str = "thread", workers: int = 2, gpus_per_trial: float = 0):
    """Run every trial of `grid` (see paperline.ops.sweep) through `runner`; register the best one.

    Returns a SweepSummary, or a Failed state when the data gate fails or every trial failed."""
    import mlflow

    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_OneLineUserErrors())
    logger = get_run_logger()
    spec = grid_ops.parse_runner(runner)
    grid = grid or {}
    specs = grid_ops.trials(grid)
    keys = grid_ops.varying(grid)
    base = list(overrides or [])
    settings = Settings.from_env()
    checked = preflight(settings, project_name, config_name, base)
    for params in specs:  # every trial's config validates before any work starts
        preflight(settings, project_name, config_name, base + grid_ops.overrides(params))
    project, cfg = checked.project, checked.cfg
    metric = project.card.primary_metric
    client, store, registry, policy = connect_services(settings, project)

    version = resolve_data(settings)
    refs = {name: dataset_ref(version, name, use.kind) for name, use in cfg.data.items()}
    models = resolve_upstream(cfg, settings, client)
    flow_run_url = url_for("flow-run", obj_id=flow_run.id) or ""
    lineage = Lineage(project=project.name, config=config_name, git_commit=git_commit(settings.root),
                      dataset_md5=version.md5, flow_run_id=str(flow_run.id), flow_run_url=flow_run_url,
                      model_name=cfg.model_name or project.name, upstream=models)
    experiment = tracking.experiment_id(client, project.name, settings.artifact_root)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{project.name}-{config_name}-sweep",
                          tags={**lineage.tags(), "paperline.sweep": "parent", "paperline.sweep.runner": str(spec)}
                          ) as parent:
        mlflow.log_params({"sweep.trials": len(specs), "sweep.runner": str(spec),
                           **{f"sweep.grid.{k}": ",".join(v) for k, v in grid.items()},
                           **{f"sweep.override.{i}": o for i, o in enumerate(base)}})
        for name, ref in refs.items():
            tracking.log_dataset(ref, cfg.data[name].splits, context="train+eval", remote=remote_url(settings.root))
        floors, shrink = project.card.min_rows(), project.card.max_shrink()  # as in `paperline run`
        previous = store.gated_rows(list(cfg.data), excluding_md5=version.md5)
        gate_key = gate_cache_key(cfg, version.md5, floors, previous, shrink)
        gate = verified(data_gate, gate_key)(refs, cfg, floors, gate_key, previous, shrink)
        tracking.log_gate(gate)
        if not gate.passed:
            message = "; ".join(gate.summary_lines())
            store.record_lineage(**lineage.record(status="gate-failed", mlflow_run_id=parent.info.run_id,
                                                  gate_passed=False, cache_key=""))
            mlflow.set_tag("paperline.status", "gate-failed")
            mlflow.end_run(status="FAILED")
            return Failed(message=f"data gate failed: {message}")
        store.record_gated_rows(version.md5, {result.dataset: result.split_rows for result in gate.results})

        # Each trial's MLflow run exists before it is submitted, so a trial that dies anywhere is still a row.
        results: list[grid_ops.TrialResult] = []
        for index, params in enumerate(specs):
            run = client.create_run(experiment, run_name=grid_ops.trial_name(index, params, keys),
                                    tags={**lineage.tags(), "mlflow.parentRunId": parent.info.run_id,
                                          "paperline.sweep": "trial", "paperline.sweep.trial": str(index),
                                          **{f"paperline.sweep.param.{k}": v for k, v in params.items()}})
            results.append(grid_ops.TrialResult(index=index, params=params, run_id=run.info.run_id))
        logger.info(f"{len(specs)} trials on {spec} ({', '.join(keys)})")
        futures = []
        with _gpu_options(spec, gpus_per_trial):
            for result in results:
                submit = run_trial.with_options(task_run_name=grid_ops.trial_name(result.index, result.params, keys))
                futures.append(submit.submit(settings, project.name, config_name,
                                             base + grid_ops.overrides(result.params), refs, models, result.run_id))
        outcomes: dict[int, TrialOutcome] = {}
        for result, future in zip(results, futures):
            future.wait()
            state = future.state
            if state.is_completed():
                outcome = future.result()
                outcomes[result.index] = outcome
                result.metrics, result.cache_hit = outcome.metrics, outcome.cache_hit
            else:
                error = future.result(raise_on_failure=False)
                result.status = "failed"
                result.error = (str(error) if isinstance(error, BaseException) else "") or state.message or "failed"
                _mark_failed(client, result)
                store.record_lineage(**lineage.record(status="failed", mlflow_run_id=result.run_id,
                                                      gate_passed=True, cache_key="",
                                                      details={"error": result.error, "sweep_trial": result.index}))
                logger.warning(f"trial {result.index} failed: {result.error.splitlines()[0] if result.error else ''}")

        best = grid_ops.best_trial(results, metric.name, metric.greater_is_better)
        reason = grid_ops.decision_reason(best, results, metric.name, metric.greater_is_better)
        table = grid_ops.sweep_table(results, keys, metric.name)
        mlflow.log_table(data=table, artifact_file="sweep/trials.json")
        create_table_artifact(key="sweep-trials", table=table, description=f"{project.name}: sweep trials")
        summary = grid_ops.SweepSummary(project=project.name, config=config_name, runner=str(spec), keys=keys,
                                        metric=metric.name, results=results, best=best, reason=reason,
                                        parent_run_id=parent.info.run_id, experiment_id=experiment,
                                        model_name=lineage.model_name, flow_run_url=flow_run_url)
        if best is not None:
            _register_best(registry, policy, project, lineage, best, outcomes[best.index], store, summary)
        mlflow.set_tags({"paperline.sweep.best_trial": str(best.index) if best else "none",
                         "paperline.sweep.best_run_id": best.run_id if best else "",
                         "paperline.sweep.reason": reason[:4000],
                         "paperline.sweep.failed_trials": str(sum(r.status == "failed" for r in results)),
                         "paperline.model_version": summary.model_version or "",
                         "paperline.status": "registered" if summary.model_version else "failed"})
        markdown = grid_ops.decision_markdown(results, keys, metric.name, metric.greater_is_better, best)
        if summary.decision:
            markdown += "\n## Policy\n\n" + "\n".join(f"- {line}" for line in summary.decision) + "\n"
        mlflow.log_text(markdown, "sweep/decision.md")
        create_markdown_artifact(key="sweep-decision", markdown=markdown, description="which trial and why")
        if best is None:
            mlflow.end_run(status="FAILED")
            return Failed(message=reason, data=summary)
    return summary


def _mark_failed(client, result: grid_ops.TrialResult) -> None:
    """A trial that died before (or while) its task ran: its run says so whatever state it was left in."""
    client.set_tag(result.run_id, "paperline.status", "failed")
    client.set_tag(result.run_id, "paperline.error", result.error[:4000])
    if client.get_run(result.run_id).info.status != "FAILED":
        client.set_terminated(result.run_id, status="FAILED")


def _register_best(registry, policy, project, lineage: Lineage, best: grid_ops.TrialResult,
                   outcome: TrialOutcome, store, summary: grid_ops.SweepSummary) -> None:
    """The best trial's model, registered from its own (nested) run; the policy decides about `champion`."""
    import mlflow

    run_summary = RunSummary(project=project.name, config=lineage.config, status="running",
                             metrics=outcome.metrics, model_name=lineage.model_name, mlflow_run_id=best.run_id,
                             flow_run_id=lineage.flow_run_id, flow_run_url=lineage.flow_run_url,
                             dataset_md5=lineage.dataset_md5, cache_hit=outcome.cache_hit)
    with mlflow.start_run(run_id=best.run_id, nested=True):
        register_and_promote(registry, policy, project.card, outcome.model, outcome.key, lineage, run_summary)
        mlflow.set_tag("paperline.sweep.best", "true")
    store.record_lineage(**lineage.record(status="registered", mlflow_run_id=best.run_id, gate_passed=True,
                                          cache_key=outcome.key, model_version=run_summary.model_version,
                                          details={"metrics": outcome.metrics, "decision": run_summary.decision,
                                                   "sweep_trial": best.index}))
    summary.model_version = run_summary.model_version
    summary.decision = run_summary.decision
    summary.champion_moved = run_summary.champion_moved


def main() -> None:
    """`python -m paperline_flows.sweep sbert_sts --config smoke seed=0,1 --runner dask` (the CLI adds preflight
    before Prefect starts and the workspace's local server)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project")
    parser.add_argument("--config", default="default")
    parser.add_argument("--runner", default="thread")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("axes", nargs="+", metavar="key=a,b,c")
    args = parser.parse_args()
    print(sweep(args.project, args.config, grid_ops.parse_grid(args.axes), [], args.runner, args.workers,
                args.gpus_per_trial))


if __name__ == "__main__":
    main()
