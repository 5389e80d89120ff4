"""What the dashboards show of a flow run: its name, its tags, artifact keys per project, table artifacts, and
errors a user caused as one line in Prefect's logs (the MLflow side is paperline.ops.tracking.views)."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from paperline.core.errors import PaperlineError
from paperline.ops.services import outages
from paperline.ops.tracking import views
from paperline.project.interface import Evaluation


class _OneLineUserErrors(logging.Filter):
    """Prefect logs a task's exception with its traceback; for errors a user caused, the message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        # a lost service or a full disk is one line too, once translated (paperline.ops.services.outages)
        if record.exc_info and (isinstance(record.exc_info[1], PaperlineError) or
                                outages.translate(record.exc_info[1]) is not None):
            record.exc_info = None
            record.exc_text = None
        return True


_ONE_LINE = _OneLineUserErrors()


def quiet_user_errors() -> None:
    """Errors a user caused are logged as their one line by Prefect's run loggers (a filter added once)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if _ONE_LINE not in logger.filters:
            logger.addFilter(_ONE_LINE)


def artifact_key(what: str) -> str:
    """`<project-dashed>-<what>`: one artifact history per project (every flow takes `project_name`)."""
    return views.artifact_key(flow_run.parameters.get("project_name") or "paperline", what)


def flow_run_name() -> str:
    """`<project>-<config>-<UTC stamp>` for the Prefect flow run; the MLflow run takes the same name."""
    parameters = flow_run.parameters
    return views.run_name(parameters["project_name"], parameters.get("config_name") or "default")


def mlflow_run_name(project: str, config: str) -> str:
    """The flow run's own name when it has that form, so that the MLflow run and the flow run share one stamp."""
    name = flow_run.name or ""
    return name if name.startswith(f"{project}-{config}-") else views.run_name(project, config)


def tag_flow_run(project: str, config: str) -> None:
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


def publish_tables(project_name: str, evaluation: Evaluation) -> None:
    """Grids and curves of an evaluation as table artifacts, readable in the Prefect dashboard."""
    for name, columns in evaluation.tables.items():
        create_table_artifact(key=views.artifact_key(project_name, name), table=columns,
                              description=f"{project_name}: {name}")


def close_flow_runs_left_running(store, prefect_api: str | None, current: str | None = None) -> list:
    """Set CRASHED each flow run the Prefect server at `prefect_api` still shows running (or pending) although its
    run ended: a run that ended while that server was gone could not tell it (paperline.ops.runs.reconcile
    decides which are ours and ended). CRASHED is Prefect's state for a run whose process stopped without
    reporting; forced, as the server's rules refuse RUNNING -> CRASHED from a client otherwise."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    from paperline.ops.runs.reconcile import Repair, ended_runs_of

    if not prefect_api:  # an ephemeral Prefect: no server keeps a state
        return []
    still_open = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
        any_=[StateType.RUNNING, StateType.PENDING])))
    repairs = []
    with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        flow_runs: list[str] = []
        for page in range(50):  # the server answers at most 200 a call; a team's open runs are far fewer
            found = client.read_flow_runs(flow_run_filter=still_open, limit=200, offset=200 * page)
            flow_runs += [str(f.id) for f in found]
            if len(found) < 200:
                break
        for row in ended_runs_of(store, flow_runs, current):
            error = (row.details or {}).get("error") or "no error recorded"
            message = f"closed by paperline: the run ended ({row.status}) while this server was unreachable: {error}"
            client.set_flow_run_state(row.flow_run_id, Crashed(message=message[:2000]), force=True)
            repairs.append(Repair(row.project, row.mlflow_run_id,
                                  [f"Prefect flow run {row.flow_run_id} closed as CRASHED (lineage: {row.status})"]))
    return repairs
