"""Finding runs that died and closing them, so that a kill leaves nothing half-done.

A run writes its lineage row as `running` when it starts and holds the lock `run:<mlflow run id>` in the audit
store until it ends (`AuditStore.hold`: the lock dies with the process, a SIGKILL included). A `running` row whose
lock can be taken is therefore a run that died. `close_abandoned_runs` closes each: its MLflow run ends as
FAILED, a model version it created without the audit row that completes a registration is deleted (the version
and its `register` row appear together or not at all), every alias of its model is put back where the audit
history says it is, and its lineage row says `interrupted`. Every `paperline run` calls it before it starts;
`paperline doctor` calls it on demand and reports what it repaired.

A run that ended while a service was gone (paperline.ops.services.outages) closes what it can and leaves the rest
for here: with the tracking server gone, its lineage says `failed` but its MLflow run stays RUNNING (closed here
as FAILED with the lineage's error, once the server answers); with the store gone, its MLflow run ended FAILED
with its error but its lineage row stays `running` (closed here with the status and error the run gave MLflow);
with the Prefect server gone, its lineage and MLflow run say `failed` but that server shows the flow run RUNNING
(set CRASHED here once it answers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paperline.ops.store.audit import AuditStore, LineageRecord
from paperline.ops.tracking import tags


@dataclass(frozen=True)
class Repair:
    project: str
    mlflow_run_id: str | None
    actions: list[str]

    def line(self) -> str:
        return f"{self.project} run {self.mlflow_run_id}: {'; '.join(self.actions)}"


def close_abandoned_runs(store: AuditStore, client: Any) -> list[Repair]:
    """Close every run whose lineage says `running` but whose process is gone; returns what was repaired."""
    repairs = []
    for record in store.lineage(status="running"):
        with store.hold(f"run:{record.mlflow_run_id}", wait=False) as dead:
            if dead:  # nobody holds the run's lock: its process ended without closing it
                repairs.append(_close(store, client, record))
    for record in _ended_but_running_in_mlflow(store, client):
        with store.hold(f"run:{record.mlflow_run_id}", wait=False) as dead:
            if dead:
                repairs.append(_close_mlflow_run(store, client, record))
    return repairs


def ended_runs_of(store: AuditStore, flow_run_ids: list[str], current: str | None = None) -> list[LineageRecord]:
    """Of the flow runs a Prefect server shows running, those whose lineage rows all ended (each run's last row):
    runs that ended while that server was gone. Their closing is Prefect's (paperline_flows.dashboard: the library
    never calls Prefect). A flow run without a lineage row (a sweep's, a deployment's wrapper) is not ours;
    `current` (the caller's own, which a retried flow run shares with its ended first try) is left alone."""
    ended = []
    for flow_run_id in flow_run_ids:
        rows = store.lineage(flow_run_id=flow_run_id)
        if flow_run_id != current and rows and all(row.status != "running" for row in rows):
            ended.append(rows[-1])
    return ended


def _ended_but_running_in_mlflow(store: AuditStore, client: Any) -> list[LineageRecord]:
    """Lineage rows that ended (failed, interrupted, ...) whose MLflow run is still RUNNING: a run that ended
    while the tracking server was gone. A RUNNING run without a lineage row (a sweep's trial) is not ours."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=1000)
    ended = []
    for run in running:
        rows = store.lineage(mlflow_run_id=run.info.run_id)
        if rows and all(row.status != "running" for row in rows):
            ended.append(rows[-1])
    return ended


def _close_mlflow_run(store: AuditStore, client: Any, record: LineageRecord) -> Repair:
    error = (record.details or {}).get("error") or "the run ended while the tracking server was unreachable"
    client.set_tag(record.mlflow_run_id, tags.STATUS, record.status)
    client.set_tag(record.mlflow_run_id, tags.ERROR, str(error)[:4000])
    client.set_terminated(record.mlflow_run_id, status="FAILED")
    actions = [f"MLflow run closed as FAILED (lineage: {record.status})"]
    actions += _remove_half_registered(store, client, record)
    actions += _align_aliases(store, client, record.model_name)
    return Repair(record.project, record.mlflow_run_id, actions)


def _close(store: AuditStore, client: Any, record: LineageRecord) -> Repair:
    from mlflow.exceptions import MlflowException

    actions = []
    status, error = "interrupted", ("the run's process ended without closing it; closed by the next start "
                                    "(paperline.ops.runs.reconcile)")
    if record.mlflow_run_id:
        try:
            run = client.get_run(record.mlflow_run_id)
            if run.info.status == "RUNNING":
                client.set_tag(record.mlflow_run_id, tags.STATUS, "interrupted")
                client.set_terminated(record.mlflow_run_id, status="FAILED")
                actions.append("MLflow run closed as FAILED")
            elif run.data.tags.get(tags.STATUS) in ("failed", "interrupted"):
                # it ended itself, and told MLflow how, while the store was gone
                status = run.data.tags[tags.STATUS]
                error = run.data.tags.get(tags.ERROR) or error
        except MlflowException as problem:
            actions.append(f"MLflow run not found ({str(problem).splitlines()[0]})")
        actions += _remove_half_registered(store, client, record)
        actions += _align_aliases(store, client, record.model_name)
    store.update_lineage(record.id, status=status, details={**(record.details or {}), "error": error})
    actions.append(f"lineage: {status}")
    return Repair(record.project, record.mlflow_run_id, actions)


def _remove_half_registered(store: AuditStore, client: Any, record: LineageRecord) -> list[str]:
    """Delete versions the dead run created whose `register` audit row was never written."""
    if not record.model_name:
        return []
    registered = {e.new_version for e in store.alias_history(record.model_name) if e.action == "register"}
    removed = []
    for version in client.search_model_versions(f"name = {record.model_name!r}"):
        if version.run_id == record.mlflow_run_id and str(version.version) not in registered:
            client.delete_model_version(record.model_name, str(version.version))
            removed.append(f"deleted half-registered version {version.version} of {record.model_name}")
    return removed


def _align_aliases(store: AuditStore, client: Any, name: str | None) -> list[str]:
    """Point every audited alias where its last audit row says (a kill between moving an alias and committing
    its row leaves the alias ahead of the history, or on a version just deleted)."""
    from mlflow.exceptions import MlflowException

    if not name:
        return []
    # The model's alias lock (ModelRegistry.model_lock's name): a live promotion between setting an alias and
    # committing its row looks exactly like a dead one, and must not have its alias put back under it.
    with store.hold(f"model:{name}", timeout_s=300):
        audited = audited_aliases(store, name)
        try:
            current = {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
        except MlflowException:
            return []
        fixed = []
        for alias, version in audited.items():
            if current.get(alias) == version:
                continue
            if version is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, version)
            fixed.append(f"alias {alias} of {name} back on v{version or '-'} (was v{current.get(alias, '-')}), "
                         "as audited")
        return fixed


def audited_aliases(store: AuditStore, name: str) -> dict[str, str | None]:
    """Each alias of `name` that the audit history knows, and the version its latest row names (None: removed)."""
    audited: dict[str, str | None] = {}
    for event in store.alias_history(name):  # oldest first: the last row of an alias wins
        audited[event.alias] = event.new_version
    return audited


def alias_disagreements(store: AuditStore, client: Any) -> list[str]:
    """Where the registry's aliases and the audit history disagree, one line each ([] when they agree): an
    alias on another version than its latest audit row names, an alias with no audit row, an alias the
    history removed or never set that the registry still has. Read-only: `close_abandoned_runs` repairs what a
    dead run left; anything found here with no run dead is a bug."""
    from mlflow.exceptions import MlflowException

    from paperline.ops.registry.versions import _pages

    found = []
    for model in [m.name for m in _pages(client.search_registered_models)]:
        try:
            current = {alias: str(version) for alias, version in client.get_registered_model(model).aliases.items()}
        except MlflowException:  # deleted since it was listed
            continue
        audited = audited_aliases(store, model)
        for alias in sorted(set(current) | {a for a, v in audited.items() if v is not None}):
            if alias not in audited:
                found.append(f"{model}@{alias} is v{current[alias]} in the registry and has no audit row")
            elif current.get(alias) != audited[alias]:
                found.append(f"{model}@{alias} is v{current.get(alias, '-')} in the registry but its latest audit "
                             f"row says v{audited[alias] or '-'}")
    return found

