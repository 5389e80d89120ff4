"""paperline's Prefect events: what happened to a model, a dataset, a project or a search index, under names that
do not change (listed, with their resources, in paperline.ops.services.event_names).

A model event's resource is the registered model (`paperline.model.<name>`, with its name and the version as
labels); a gate's is the project (`paperline.project.<project>`) or, from the data watcher, the dataset
(`paperline.dataset.<name>`, the data version as a label). The payload carries the project, config, version,
the previous champion, the reasons, the flow run's URL and the MLflow run id; Prefect relates each event to the
flow run that emitted it. Automations and deployment triggers subscribe to these names: infra/automations/
notify-webhook.yaml posts them to a webhook (`paperline notify --webhook URL` applies it), and `paperline deploy`
gives each project's deployment triggers on its datasets and upstream models (docs/production.md).

An event is news, never a step of the run: a server that does not take events costs one warning line, not a run.
"""

from __future__ import annotations

import threading
from typing import Any

import logging

from prefect import get_run_logger
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
from prefect.exceptions import MissingContextError

from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.registry.versions import CHAMPION
from paperline.ops.runs.summary import GateFailure, RunSummary
from paperline.ops.services.event_names import (  # noqa: F401 -- re-exported: the flows name events from here
    APPROVAL_EXPIRED,
    APPROVAL_PENDING,
    APPROVED,
    DATA_VERSION_PASSED,
    DRIFT_DETECTED,
    GATE_FAILED,
    INDEX_SERVING_MOVED,
    NAMES,
    PROMOTED,
    REFUSED,
    REJECTED,
    ROLLED_BACK,
    dataset_id,
    index_id,
    model_id,
    project_id,
)

# How long an emit waits for its event to leave: the CLI ends with os._exit, which skips the drain that Prefect's
# events worker does at interpreter exit, so an event still queued at the end of a run would be lost.
FLUSH_TIMEOUT_S = 5.0


def model_resource(name: str, version: str | None) -> dict[str, str]:
    return {"prefect.resource.id": model_id(name), "prefect.resource.name": name,
            "paperline.version": str(version or "")}


def project_resource(project: str) -> dict[str, str]:
    return {"prefect.resource.id": project_id(project), "prefect.resource.name": project}


def dataset_resource(name: str, data_version: str) -> dict[str, str]:
    return {"prefect.resource.id": dataset_id(name), "prefect.resource.name": name,
            "paperline.data-version": data_version}


def index_resource(name: str, version: str) -> dict[str, str]:
    return {"prefect.resource.id": index_id(name), "prefect.resource.name": name, "paperline.version": version}


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:  # emitted from a command (`paperline promote`), not a flow run
        return logging.getLogger("paperline")


def emit(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    """Send one event to the Prefect server and wait (bounded) until it has left; never raises."""
    why = "the Prefect API in use does not take events"
    try:
        sent = emit_event(event=event, resource=resource, payload=payload)
        if sent is not None:
            _flush()
    except Exception as error:  # noqa: BLE001 -- news must never fail the run that made it
        sent, why = None, f"{type(error).__name__}: {error}"
    if sent is None:
        _logger().warning(f"event {event} for {resource['prefect.resource.id']} was not sent ({why}); "
                                 "the run goes on, but no automation hears of it")


def _flush() -> None:
    """Wait until Prefect's events worker has sent what it holds, at most FLUSH_TIMEOUT_S. From a thread: its
    `wait_until_empty` has no timeout, and one stuck on a server that went away must not hold the run."""
    waiter = threading.Thread(target=EventsWorker.instance().wait_until_empty, daemon=True)
    waiter.start()
    waiter.join(FLUSH_TIMEOUT_S)


def _payload(summary: RunSummary, previous_champion: str | None, **extra: Any) -> dict[str, Any]:
    return {"project": summary.project, "config": summary.config, "model": summary.model_name,
            "version": summary.model_version, "previous_champion": previous_champion,
            "reasons": list(summary.decision), "approval": summary.approval, "flow_run_url": summary.flow_run_url,
            "flow_run_id": summary.flow_run_id, "mlflow_run_id": summary.mlflow_run_id, **extra}


def _champion_before(registry: ModelRegistry, summary: RunSummary) -> str | None:
    """The champion before this run's decision: the one its promotion replaced, else the one that stays."""
    if summary.champion_moved:
        for row in reversed(registry.store.alias_history(summary.model_name, CHAMPION)):
            if row.new_version == summary.model_version:
                return row.previous_version
    return registry.aliases(summary.model_name).get(CHAMPION)


def registered(registry: ModelRegistry, summary: RunSummary) -> None:
    """After registration: promoted, approval-pending, or refused; nothing for a version that already was champion
    (an unchanged rerun of the champion: no news)."""
    if summary.champion_moved:
        event = PROMOTED
    elif summary.approval == "pending":
        event = APPROVAL_PENDING
    elif summary.is_champion:
        return
    else:
        event = REFUSED
    emit(event, model_resource(summary.model_name, summary.model_version),
         _payload(summary, _champion_before(registry, summary)))


def answered(event: str, summary: RunSummary, previous_champion: str | None, **extra: Any) -> None:
    """An approval's outcome (approved, rejected, approval-expired); `extra` says who answered and why."""
    emit(event, model_resource(summary.model_name, summary.model_version),
         _payload(summary, previous_champion, **extra))


def gate_failed(project: str, config: str, failure: GateFailure, mlflow_run_id: str | None,
                flow_run_url: str | None, flow_run_id: str | None) -> None:
    emit(GATE_FAILED, project_resource(project),
         {"project": project, "config": config, "gate": failure.gate, "reasons": list(failure.findings),
          "flow_run_url": flow_run_url, "flow_run_id": flow_run_id, "mlflow_run_id": mlflow_run_id})


def champion_moved(event: str, name: str, version: str, previous: str | None, actor: str, reason: str) -> None:
    """A champion moved by hand (`paperline promote`, `paperline rollback`, the promote-model and rollback-model
    flows): the same news as a policy's promotion, so downstream triggers follow it too."""
    emit(event, model_resource(name, version),
         {"model": name, "version": version, "previous_champion": previous, "by": actor, "reasons": [reason]})


def data_version_passed(dataset: str, data_version: str, previous_version: str | None, projects: list[str],
                        flow_run_id: str | None) -> None:
    """The data watcher saw a new data version change `dataset`, and the gate passed it."""
    emit(DATA_VERSION_PASSED, dataset_resource(dataset, data_version),
         {"dataset": dataset, "data_version": data_version, "previous_version": previous_version,
          "read_by": projects, "flow_run_id": flow_run_id})


def data_version_failed(dataset: str, data_version: str, lines: list[str], flow_run_id: str | None) -> None:
    emit(GATE_FAILED, dataset_resource(dataset, data_version),
         {"dataset": dataset, "data_version": data_version, "reasons": lines, "flow_run_id": flow_run_id})


def drift_detected(model: str, version: str, payload: dict[str, Any]) -> None:
    emit(DRIFT_DETECTED, model_resource(model, version), {"model": model, "version": version, **payload})


def index_serving_moved(index: str, version: str, payload: dict[str, Any]) -> None:
    emit(INDEX_SERVING_MOVED, index_resource(index, version), {"index": index, "version": version, **payload})
