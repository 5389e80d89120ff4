"""A killed run is found and closed on the next start (paperline.ops.runs.reconcile), with locks that die with their
holder (AuditStore.hold): real MLflow on SQLite, a real audit store, real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_registry import _logged_model, _register

from paperline.ops.runs.reconcile import close_abandoned_runs
from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.store.audit import AuditStore, StoreError

HOLDER = """
import sys, time
from paperline.ops.store.audit import AuditStore
with AuditStore(sys.argv[1]).hold(sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold_in_another_process(url: str, name: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, url, name], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_lock_is_exclusive_across_processes_and_dies_with_its_holder(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path}/audit.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = AuditStore(url)
    holder = _hold_in_another_process(url, "run:abc")
    try:
        with store.hold("run:abc", wait=False) as acquired:
            assert not acquired  # alive: its holder has it
        with store.hold("run:other", wait=False) as acquired:
            assert acquired  # another name is another lock
        began = time.monotonic()
        with pytest.raises(StoreError, match="waited 1 s for the lock 'run:abc'"):
            with store.hold("run:abc", timeout_s=1.0):
                pass
        assert time.monotonic() - began < 10
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup code runs
        holder.wait(timeout=30)
    with store.hold("run:abc", wait=False) as acquired:
        assert acquired
    store.close()


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_run_killed_during_registration_is_closed_and_its_half_version_removed(client, tmp_path):
    store = AuditStore(f"sqlite:///{tmp_path}/audit.db")
    registry = ModelRegistry(client, store, actor="alice")
    v1 = _register(registry, tmp_path)  # a complete registration: version, audit row, challenger
    # A run killed as its version appeared: MLflow has the version (and even the alias), the audit store does not.
    run_id, uri = _logged_model(client, tmp_path)
    client.update_run(run_id, status="RUNNING")
    half = client.create_model_version("sbert_sts", client.get_logged_model(uri.split("/")[-1]).artifact_location,
                                       run_id=run_id)
    client.set_registered_model_alias("sbert_sts", "challenger", half.version)
    dead = store.record_lineage(project="sbert_sts", status="running", mlflow_run_id=run_id, model_name="sbert_sts")
    # A run that is still going (this process holds its lock) must not be touched.
    live_run, _ = _logged_model(client, tmp_path)
    live = store.record_lineage(project="sbert_sts", status="running", mlflow_run_id=live_run, model_name="sbert_sts")
    with store.hold(f"run:{live_run}"):
        repairs = close_abandoned_runs(store, client)
    (repair,) = repairs
    assert repair.mlflow_run_id == run_id
    assert client.get_run(run_id).info.status == "FAILED"
    assert [str(v.version) for v in client.search_model_versions("name = 'sbert_sts'")] == [v1]
    assert str(client.get_model_version_by_alias("sbert_sts", "challenger").version) == v1  # as audited
    (closed,) = store.lineage(mlflow_run_id=run_id)
    assert closed.id == dead.id and closed.status == "interrupted" and "closed by the next start" in closed.details["error"]
    assert store.lineage(mlflow_run_id=live_run)[0].status == "running" and live.status == "running"
    # Once its holder lets go without closing it, that run is abandoned too.
    assert [r.mlflow_run_id for r in close_abandoned_runs(store, client)] == [live_run]
    store.close()


def test_alias_disagreements_names_every_alias_the_history_does_not_explain(client, tmp_path):
    from paperline.ops.runs.reconcile import alias_disagreements

    store = AuditStore(f"sqlite:///{tmp_path}/audit.db")
    registry = ModelRegistry(client, store, actor="tester")
    v1, v2 = _register(registry, tmp_path, "m"), _register(registry, tmp_path, "m")
    registry.promote("m", v1, reason="first", force=True)
    assert alias_disagreements(store, client) == []
    client.set_registered_model_alias("m", "champion", v2)  # moved behind the audit log's back
    client.set_registered_model_alias("m", "shadow", v1)  # never audited
    assert alias_disagreements(store, client) == [
        f"m@champion is v{v2} in the registry but its latest audit row says v{v1}",
        f"m@shadow is v{v1} in the registry and has no audit row",
    ]


def test_the_flow_runs_to_close_are_ours_and_ended_and_never_the_callers_own(tmp_path):
    """Of the flow runs a Prefect server shows running: the one whose run ended (a retried run's rows all ended
    too) is closed; one whose row still runs, one paperline never recorded, and the caller's own are not."""
    from paperline.ops.runs.reconcile import ended_runs_of

    store = AuditStore(f"sqlite:///{tmp_path}/audit.db")
    store.record_lineage(project="p", status="failed", flow_run_id="ended", mlflow_run_id="r1")
    store.record_lineage(project="p", status="interrupted", flow_run_id="retried", mlflow_run_id="r2")
    store.record_lineage(project="p", status="failed", flow_run_id="retried", mlflow_run_id="r3")
    store.record_lineage(project="p", status="failed", flow_run_id="still-going", mlflow_run_id="r4")
    store.record_lineage(project="p", status="running", flow_run_id="still-going", mlflow_run_id="r5")
    store.record_lineage(project="p", status="failed", flow_run_id="mine", mlflow_run_id="r6")
    ended = ended_runs_of(store, ["ended", "retried", "still-going", "not-ours", "mine"], current="mine")
    assert [(row.flow_run_id, row.mlflow_run_id) for row in ended] == [("ended", "r1"), ("retried", "r3")]
    store.close()
