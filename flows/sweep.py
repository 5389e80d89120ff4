"""The sweep flow: open -> data gate once -> trials through a Prefect task runner -> register the best one.

`paperline sweep <project> [--config NAME] key=a,b,c ... --runner thread|dask|ray[:ADDRESS]` runs it (the CLI
loads it through the `paperline.flows` entry point `sweep`). The steps are `paperline_flows.pipeline`'s, as in
`paperline run`: a trial is planned and trained exactly as a run with the same overrides (same cache key, same
result store), so a trial that matches an earlier run or another sweep's trial is a cache hit. Each trial's
MLflow run is nested under the sweep's parent run, which holds the sweep table and `sweep/decision.md`; only the
best trial by the card's primary metric is registered and put to the promotion policy.

A trial that fails is recorded (its MLflow run FAILED with `paperline.error`, a row in the table) and the others
go on. Trials run where the runner puts them (`paperline_flows.task_runners`): threads here, a Dask or Ray
cluster beyond one machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed

from paperline.ops.runs import sweep_grid
from paperline.ops.runs.preflight import preflight
from paperline.ops.runs.summary import GateFailure
from paperline.ops.services import outages
from paperline.ops.tracking import runs as tracking
from paperline.ops.tracking import tags
from paperline_flows import dashboard, events, lineage_row, pipeline
from paperline_flows.run_project import run_project
from paperline_flows.task_runners import gpu_options, make_task_runner


# Not persisted: nothing reads the SweepSummary back from storage (the CLI reads the returned state in its own
# process, the dashboard reads artifacts), and Prefect's default serializer for it would be a pickle in the
# workspace (docs/reliability.md).
@flow(name="paperline-sweep", persist_result=False)
def sweep(project_name: str, config_name: str = "default", grid: dict[str, list[str]] | None = None,
          overrides: list[str] | None = None, runner: str = "thread", workers: int = 2, gpus_per_trial: float = 0):
    """Run every trial of `grid` (see paperline.ops.runs.sweep_grid) through `runner`; register the best.

    Returns a SweepSummary, or a Failed state (holding a GateFailure when the data gate stops it, the summary
    when every trial failed)."""
    dashboard.quiet_user_errors()
    logger = get_run_logger()
    spec, axes, base = sweep_grid.parse_runner(runner), grid or {}, list(overrides or [])
    specs, keys = sweep_grid.trials(axes), sweep_grid.varying(axes)
    plan = pipeline.open_run(project_name, config_name, base, produce_upstream=run_project)
    for params in specs:  # every trial's config validates before any work starts
        preflight(plan.settings, project_name, config_name, base + sweep_grid.overrides(params))
    project, lineage, services = plan.project, plan.lineage, plan.services
    metric = project.card.primary_metric
    with tracking.start_run(plan.experiment_id, f"{project.name}-{config_name}-sweep",
                            {**lineage.tags(), tags.SWEEP: "parent", tags.SWEEP_RUNNER: str(spec)}) as parent, \
            _closed_on_error(plan, parent.info.run_id) as trials:
        tracking.log_params({"sweep.trials": len(specs), "sweep.runner": str(spec),
                             **{f"sweep.sweep_grid.{k}": ",".join(v) for k, v in axes.items()},
                             **{f"sweep.override.{i}": o for i, o in enumerate(base)}})
        gate = pipeline.gate(plan)
        if not gate.passed:
            failure = GateFailure("data gate", gate.summary_lines())
            events.gate_failed(project.name, config_name, failure, parent.info.run_id, lineage.flow_run_url,
                               lineage.flow_run_id)
            services.store.record_lineage(**lineage.record(status="gate-failed", mlflow_run_id=parent.info.run_id,
                                                           gate_passed=False, cache_key=""))
            tracking.set_status("gate-failed")
            tracking.end_run_failed()
            return Failed(message=failure.message, data=failure)

        # Each trial's MLflow run exists before it is submitted, so a trial that dies anywhere is still a row.
        results = [sweep_grid.TrialResult(index=i, params=params, run_id=tracking.create_child_run(
            services.client, plan.experiment_id, parent.info.run_id, sweep_grid.trial_name(i, params, keys),
            {**lineage.tags(), tags.SWEEP: "trial", tags.SWEEP_TRIAL: str(i),
             **{tags.SWEEP_PARAM_PREFIX + k: v for k, v in params.items()}})) for i, params in enumerate(specs)]
        trials.extend(results)
        logger.info(f"{len(specs)} trials on {spec} ({', '.join(keys)})")
        outcomes: dict[int, pipeline.Trained] = {}
        with make_task_runner(spec, workers) as task_runner, gpu_options(spec, gpus_per_trial):
            futures = [task_runner.submit(
                pipeline.run_trial.with_options(task_run_name=sweep_grid.trial_name(r.index, r.params, keys)),
                parameters=dict(settings=plan.settings, project_name=project.name, config_name=config_name,
                                overrides=base + sweep_grid.overrides(r.params), refs=plan.refs, models=plan.models,
                                run_id=r.run_id)) for r in results]
            for result, future in zip(results, futures):
                future.wait()
                if future.state.is_completed():
                    outcomes[result.index] = future.result()
                    result.metrics, result.cache_hit = outcomes[result.index].metrics, outcomes[result.index].cache_hit
                    continue
                error = future.result(raise_on_failure=False)
                result.status = "failed"
                result.error = ((str(error) if isinstance(error, BaseException) else "") or future.state.message
                                or "failed")
                tracking.mark_failed(services.client, result.run_id, result.error)
                services.store.record_lineage(**lineage.record(
                    status="failed", mlflow_run_id=result.run_id, gate_passed=True, cache_key="",
                    details={"error": result.error, "sweep_trial": result.index}))
                logger.warning(f"trial {result.index} failed: {result.error.splitlines()[0]}")

        best = sweep_grid.best_trial(results, metric.name, metric.greater_is_better)
        reason = sweep_grid.decision_reason(best, results, metric.name, metric.greater_is_better)
        table = sweep_grid.sweep_table(results, keys, metric.name)
        tracking.log_tables({"sweep/trials": table})
        create_table_artifact(key="sweep-trials", table=table, description=f"{project.name}: sweep trials")
        summary = sweep_grid.SweepSummary(project=project.name, config=config_name, runner=str(spec), keys=keys,
                                    metric=metric.name, results=results, best=best, reason=reason,
                                    parent_run_id=parent.info.run_id, experiment_id=plan.experiment_id,
                                    model_name=lineage.model_name, flow_run_url=lineage.flow_run_url)
        if best is not None:
            pipeline.register_trial(plan, best.index, best.run_id, outcomes[best.index], summary)
        tracking.set_tags({tags.SWEEP_BEST_TRIAL: str(best.index) if best else "none",
                           tags.SWEEP_BEST_RUN_ID: best.run_id if best else "", tags.SWEEP_REASON: reason[:4000],
                           tags.SWEEP_FAILED_TRIALS: str(sum(r.status == "failed" for r in results)),
                           tags.MODEL_VERSION: summary.model_version or "",
                           tags.STATUS: "registered" if summary.model_version else "failed"})
        markdown = sweep_grid.decision_markdown(results, keys, metric.name, metric.greater_is_better, best)
        if summary.decision:
            markdown += "\n## Policy\n\n" + "\n".join(f"- {line}" for line in summary.decision) + "\n"
        tracking.log_text(markdown, "sweep/decision.md")
        create_markdown_artifact(key="sweep-decision", markdown=markdown, description="which trial and why")
        if best is None:
            tracking.end_run_failed()
            return Failed(message=reason, data=summary)
    return summary


@contextmanager
def _closed_on_error(plan: pipeline.RunPlan, parent_run_id: str) -> Iterator[list[sweep_grid.TrialResult]]:
    """However an exception ends the sweep (a gate that crashes, Ctrl-C, a registration that fails), no MLflow run
    is left RUNNING and the lineage says how it ended: every trial run still open ends FAILED with the error, the
    parent run gets the error and a lineage row `failed` or `interrupted`. Yields the list the sweep adds its
    trials to once their runs exist."""
    trials: list[sweep_grid.TrialResult] = []
    try:
        yield trials
    except BaseException as error:
        status, text = lineage_row.ending_status(error), str(error) or type(error).__name__
        client = plan.services.client
        with outages.tolerate(outages.MLFLOW):  # a server that is gone: `paperline doctor` closes them later
            for trial in trials:
                if client.get_run(trial.run_id).info.status == "RUNNING":
                    tracking.mark_failed(client, trial.run_id, text)
        with outages.tolerate(outages.STORE):
            plan.services.store.record_lineage(**plan.lineage.record(
                status=status, mlflow_run_id=parent_run_id, gate_passed=None, cache_key="", details={"error": text}))
        tracking.record_error(error, status)
        raise


def main() -> None:
    """`python -m paperline_flows.sweep sbert_sts --config smoke seed=0,1 --runner dask` (the CLI adds preflight
    before Prefect starts and the workspace's local server)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project")
    parser.add_argument("--config", default="default")
    parser.add_argument("--runner", default="thread")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("axes", nargs="+", metavar="key=a,b,c")
    args = parser.parse_args()
    print(sweep(args.project, args.config, sweep_grid.parse_grid(args.axes), [], args.runner, args.workers,
                args.gpus_per_trial))


if __name__ == "__main__":
    main()
