"""paperline's Prefect events: what happened to a model or to a project's data, under names that do not change.

    paperline.model.promoted           the run's version became champion (by the policy)
    paperline.model.refused            the run's version stayed challenger; the payload has the policy's reasons
    paperline.model.approval-pending   the run's version passed every rule and waits for a person
    paperline.model.approved           a person approved it: champion moved (the payload names who)
    paperline.model.rejected           a person rejected it: champion unchanged
    paperline.model.approval-expired   nobody answered in time (or the waiting run stopped): champion unchanged
    paperline.data.gate-failed         a data gate stopped a run or a sweep before training

A model event's resource is the registered model (`paperline.model.<name>`, with its name and the version as
labels); a gate's is the project (`paperline.project.<project>`). The payload carries the project, config, version,
the previous champion, the reasons, the flow run's URL and the MLflow run id; Prefect relates each event to the
flow run that emitted it. Automations subscribe to these names: infra/automations/notify-webhook.yaml posts them to
a webhook (`paperline notify --webhook URL` applies it).

An event is news, never a step of the run: a server that does not take events costs one warning line, not a run.
"""

from __future__ import annotations

import threading
from typing import Any

from prefect import get_run_logger
from prefect.events import emit_event
from prefect.events.worker import EventsWorker

from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.registry.versions import CHAMPION
from paperline.ops.runs.summary import GateFailure, RunSummary

PROMOTED = "paperline.model.promoted"
REFUSED = "paperline.model.refused"
APPROVAL_PENDING = "paperline.model.approval-pending"
APPROVED = "paperline.model.approved"
REJECTED = "paperline.model.rejected"
APPROVAL_EXPIRED = "paperline.model.approval-expired"
GATE_FAILED = "paperline.data.gate-failed"
NAMES = (PROMOTED, REFUSED, APPROVAL_PENDING, APPROVED, REJECTED, APPROVAL_EXPIRED, GATE_FAILED)

# How long an emit waits for its event to leave: the CLI ends with os._exit, which skips the drain that Prefect's
# events worker does at interpreter exit, so an event still queued at the end of a run would be lost.
FLUSH_TIMEOUT_S = 5.0


def model_resource(name: str, version: str | None) -> dict[str, str]:
    return {"prefect.resource.id": f"paperline.model.{name}", "prefect.resource.name": name,
            "paperline.version": str(version or "")}


def project_resource(project: str) -> dict[str, str]:
    return {"prefect.resource.id": f"paperline.project.{project}", "prefect.resource.name": project}


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
        get_run_logger().warning(f"event {event} for {resource['prefect.resource.id']} was not sent ({why}); "
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
