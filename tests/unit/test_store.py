"""The audit and lineage store, on a SQLite file and on the PostgreSQL server (each test on both)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import OperationalError

from paperline.ops.store.audit import AliasEvent, AuditStore, LineageRecord, StoreError


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/workspace/audit.db"  # a parent folder that does not exist yet
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url: str):
    audit = AuditStore(store_url)
    yield audit
    audit.close()


def _event(store: AuditStore, **overrides) -> AliasEvent:
    fields = dict(
        model_name="sbert_sts", alias="champion", previous_version=None, new_version=1, actor="alice",
        action="promote", reason="first champion",
    )
    return store.record_alias_event(**{**fields, **overrides})


def _lineage(store: AuditStore, **overrides) -> LineageRecord:
    fields = dict(
        project="sbert_sts", config_name="smoke", flow_run_id="flow-1", flow_run_url="http://prefect/runs/flow-1",
        mlflow_run_id="run-1", git_commit="abc123", dataset_md5="d41d8cd9", gate_passed=True, cache_key="k1",
        model_name="sbert_sts", model_version=3, status="registered", details={"stsb_test_spearman": 84.2},
    )
    return store.record_lineage(**{**fields, **overrides})


def test_nothing_is_created_before_first_use(tmp_path):
    AuditStore(f"sqlite:///{tmp_path}/workspace/audit.db")
    assert not (tmp_path / "workspace").exists()


def test_alias_event_round_trip(store: AuditStore):
    before = datetime.now(timezone.utc)
    written = _event(
        store, previous_version=2, new_version=3, gate_passed=True, details={"reasons": ["floor: passed"], "x": 1.5},
        mlflow_run_id="run-3", flow_run_id="flow-3",
    )
    [read] = store.alias_history("sbert_sts")
    assert read == written
    assert read.previous_version == "2" and read.new_version == "3"  # int versions are kept as MLflow's strings
    assert read.details == {"reasons": ["floor: passed"], "x": 1.5}
    assert read.time.tzinfo is not None and read.time.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= read.time <= datetime.now(timezone.utc) + timedelta(seconds=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.reason = "edited"  # type: ignore[misc]


def test_history_is_oldest_first_and_filtered(store: AuditStore):
    _event(store, new_version=1)
    _event(store, alias="challenger", new_version=2, action="register", reason="registered")
    _event(store, previous_version=1, new_version=2)
    _event(store, model_name="other", new_version=7)
    _event(store, previous_version=2, new_version=None, reason="alias removed")

    assert [e.new_version for e in store.alias_history("sbert_sts")] == ["1", "2", "2", None]
    assert [e.new_version for e in store.alias_history("sbert_sts", "champion")] == ["1", "2", None]
    assert [e.alias for e in store.alias_history("sbert_sts", "challenger")] == ["challenger"]
    assert store.alias_history("unknown") == []


def test_transaction_commits_or_rolls_back(store: AuditStore):
    with store.transaction() as session:
        kept = _event(store, session=session)
        assert kept.id is not None  # flushed inside the transaction: the id is known before the commit
    with pytest.raises(RuntimeError, match="alias could not be set"):
        with store.transaction() as session:
            _event(store, new_version=2, session=session)
            raise RuntimeError("alias could not be set")
    # An error of the caller's own database inside the block is not reported as this store being unreachable.
    with pytest.raises(OperationalError):
        with store.transaction():
            raise OperationalError("UPDATE registered_models ...", {}, Exception("database is locked"))
    assert store.alias_history("sbert_sts") == [kept]


def test_unknown_action_is_refused(store: AuditStore):
    with pytest.raises(ValueError, match="unknown alias action 'demote'"):
        _event(store, action="demote")


def test_rows_outlive_the_store_object(store_url: str):
    first = AuditStore(store_url)
    written = _event(first)
    first.close()
    second = AuditStore(store_url)  # create_all on an existing schema is a no-op
    assert second.alias_history("sbert_sts") == [written]
    second.close()


def test_lineage_round_trip_and_filters(store: AuditStore):
    first = _lineage(store)
    second = _lineage(store, flow_run_id="flow-2", mlflow_run_id="run-2", status="gate-failed", model_version=None)
    _lineage(store, project="matryoshka_2d", flow_run_id="flow-3", mlflow_run_id=None, status="failed")

    assert store.lineage(project="sbert_sts") == [first, second]
    assert first.model_version == "3" and first.details == {"stsb_test_spearman": 84.2}
    assert store.lineage(mlflow_run_id="run-2") == [second]
    assert store.lineage(project="sbert_sts", flow_run_id="flow-1") == [first]
    assert len(store.lineage()) == 3
    assert store.lineage(project="nothing") == []


def test_lineage_refuses_unknown_fields_and_statuses(store: AuditStore):
    with pytest.raises(TypeError, match="unknown lineage field.*dataset_sha"):
        _lineage(store, dataset_sha="x")
    with pytest.raises(ValueError, match="unknown lineage status 'done'"):
        _lineage(store, status="done")
    with pytest.raises(ValueError, match="needs a project"):
        store.record_lineage(status="failed")
    assert store.lineage() == []


def test_unreachable_server_names_url_without_password():
    store = AuditStore("postgresql://paperline:s3cret@127.0.0.1:1/audit")
    with pytest.raises(StoreError) as caught:
        store.alias_history("sbert_sts")
    message = str(caught.value)
    assert message.startswith("cannot reach the paperline store at postgresql://paperline:***@127.0.0.1:1/audit: ")
    assert message.endswith("; set PAPERLINE_STORE_URL to a reachable SQLAlchemy URL")
    assert "s3cret" not in message


@pytest.mark.parametrize("url", ["not a url", "nosuchdialect://host/db"])
def test_bad_url_is_a_store_error(url: str):
    with pytest.raises(StoreError, match="cannot reach the paperline store at .*PAPERLINE_STORE_URL"):
        AuditStore(url).lineage()
