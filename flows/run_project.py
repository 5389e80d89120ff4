"""The run flow: open -> data gate -> [generate -> gate] -> train -> evaluate -> register -> promote.

Run it as `paperline run <project>` (the CLI loads it through the `paperline.flows` entry point), from a
deployment, or as a script: `python -m paperline_flows.run_project sbert_sts --config smoke`. The steps are
`paperline_flows.pipeline`'s, shared with the sweep; this file only wires them and keeps the run's lineage row
and MLflow run in step with how it ends.

A config that asks for `nproc_per_node` > 1 trains under `torchrun --standalone` (`paperline.project.distributed_job`
on every rank); rank 0's result comes back as the same TrainedModel, so the steps after training do not change.
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from paperline.ops.runs.summary import GateFailure, RunSummary
from paperline.ops.tracking import client as tracking_client
from paperline.ops.tracking import runs as tracking
from paperline.ops.tracking import views
from paperline_flows import dashboard, events, lineage_row, pipeline
from paperline_flows.approval import wait_for_approval
from paperline_flows.tasks import register


# Not persisted: nothing reads a flow's result back from storage (the CLI and a parent flow read the returned
# state in their own process, `paperline run --on` submits without waiting, the dashboard reads artifacts),
# and Prefect's default serializer for it would be a pickle in the workspace (docs/reliability.md).
@flow(name="paperline-run", flow_run_name=dashboard.flow_run_name, persist_result=False)
def run_project(project_name: str, config_name: str = "default", overrides: list[str] | None = None):
    """Run one project's pipeline; returns the RunSummary, or a Failed state holding a GateFailure when a gate
    stops it."""
    dashboard.quiet_user_errors()
    started_at = time.monotonic()
    plan = pipeline.open_run(project_name, config_name, overrides, produce_upstream=run_project)
    project, lineage, store = plan.project, plan.lineage, plan.services.store
    summary = RunSummary(project=project.name, config=config_name, status="running", dataset_md5=plan.version.md5,
                         model_name=lineage.model_name, flow_run_id=lineage.flow_run_id,
                         flow_run_url=lineage.flow_run_url)
    training = pipeline.plan_training(plan.settings, project.name, config_name, plan.overrides, plan.refs,
                                      plan.models)  # a generating method's is planned again with its files
    run_tags = {**lineage.tags(), **views.source_tags(lineage.git_commit)}  # MLflow's Source and Git commit
    with tracking.start_run(plan.experiment_id, dashboard.mlflow_run_name(project.name, config_name),
                            run_tags) as run, ExitStack() as held:
        summary.mlflow_run_id, summary.mlflow_experiment_id = run.info.run_id, plan.experiment_id
        summary.mlflow_run_url = tracking_client.run_url(plan.settings.tracking_uri, plan.experiment_id,
                                                         run.info.run_id)
        # The run's lock lives as long as this process: the next start tells a dead run from a live one by it.
        held.enter_context(store.hold(f"run:{run.info.run_id}"))
        # From here the lineage row exists: any exception below (Ctrl-C too) closes it `failed`/`interrupted`.
        row = held.enter_context(lineage_row.LineageRow.opened(store, lineage, run.info.run_id, training.key))

        def stopped_by(which: str) -> Failed:
            failure = GateFailure(which, gate.summary_lines())
            events.gate_failed(project.name, config_name, failure, summary.mlflow_run_id, summary.flow_run_url,
                               summary.flow_run_id)
            row.close("gate-failed")
            tracking.set_status("gate-failed")
            tracking.end_run_failed()
            return Failed(message=failure.message, data=failure)

        tracking.log_config(plan.cfg, plan.models)
        gate = pipeline.gate(plan)
        row.gate_passed = gate.passed
        if not gate.passed:
            return stopped_by("data gate")
        if project.generates():  # the method writes its own training data: a dataset version of its own
            generated, gate = pipeline.generate_and_gate(plan)
            if not gate.passed:
                return stopped_by("the gate over the generated data")
            training = pipeline.plan_training(plan.settings, project.name, config_name, plan.overrides,
                                              plan.refs, plan.models, generated)
            row.cache_key = training.key
        # One registration per cache key: a concurrent run of the same unchanged project waits here, then finds
        # the first one's cached results and registered version instead of registering the same model twice.
        if not held.enter_context(store.hold(f"cache:{project.name}:{training.key}", wait=False)):
            get_run_logger().info("another run of this project, config and data is training: waiting for it")
            held.enter_context(store.hold(f"cache:{project.name}:{training.key}"))
        trained = pipeline.train_and_evaluate(training)
        summary.metrics, summary.cache_hit = trained.metrics, trained.cache_hit
        dashboard.publish_tables(project.name, trained.evaluation)
        register(plan.services.registry, plan.services.policy, project, trained.model, training.key, lineage,
                 summary, plan.comparison_plan())
        events.registered(plan.services.registry, summary)  # promoted, refused or approval-pending
        if summary.approval == "pending":  # the policy asks a person: this run pauses for the answer
            wait_for_approval(plan.services.registry, summary, plan.services.policy)
        summary.status = "cached" if summary.cache_hit else "registered"
        tracking.set_status(summary.status)
        row.close(summary.status, model_version=summary.model_version,
                  details={"metrics": summary.metrics, "decision": summary.decision})
        pipeline.remove_checkpoints(training.ctx.workdir)
    summary.elapsed_s = time.monotonic() - started_at
    create_markdown_artifact(key=views.artifact_key(project.name, "run-summary"),
                             markdown="\n".join(["```", *summary.lines(), "```"]))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project")
    parser.add_argument("--config", default="default")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(run_project(args.project, args.config, args.overrides))


if __name__ == "__main__":
    main()
