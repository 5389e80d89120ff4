"""The audit and lineage store: who moved which model alias when and why, and what each pipeline run produced.

Two append-only tables in any SQLAlchemy database: a SQLite file in the workspace by default (the caller decides
the URL; see ``PAPERLINE_STORE_URL``), or the team's PostgreSQL server beside MLflow's own tables. Rows go out as
frozen dataclasses, not live ORM objects, so callers can keep them after the session is closed. A third table
keeps the row count of each split of every dataset version that passed the data gate, for the shrink check.

Nothing happens at import time: the engine is created, and the tables with it, on first use.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, exc, select
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from paperline.core.errors import PaperlineError
from paperline.ops.store.tables import AliasEventRow, Base, GatedRowsRow, LineageRow, create_tables

# approve: a person answered a pending approval (paperline.ops.registry.approvals); the actor is that person
# serve: a search index version passed its recall check and `serving` moved to it (paperline.ops.production.index)
ACTIONS = ("auto-promote", "register", "promote", "rollback", "approve", "serve")
LINEAGE_STATUSES = ("running", "registered", "gate-failed", "failed", "interrupted", "cached")


class StoreError(PaperlineError):
    """The store cannot be reached or used; the message says which URL and what to set."""


@dataclass(frozen=True)
class AliasEvent:
    """One alias change: ``new_version`` None means the alias was removed."""

    id: int
    time: datetime
    model_name: str
    alias: str
    previous_version: str | None
    new_version: str | None
    actor: str
    action: str
    reason: str
    gate_passed: bool | None
    details: dict[str, Any] | None
    mlflow_run_id: str | None
    flow_run_id: str | None


@dataclass(frozen=True)
class LineageRecord:
    """One pipeline run: what went in (commit, data, config) and what came out (run, model version, status)."""

    id: int
    time: datetime
    project: str
    config_name: str | None
    flow_run_id: str | None
    flow_run_url: str | None
    mlflow_run_id: str | None
    git_commit: str | None
    dataset_md5: str | None
    gate_passed: bool | None
    cache_key: str | None
    model_name: str | None
    model_version: str | None
    status: str
    details: dict[str, Any] | None


_LINEAGE_FIELDS = {f.name for f in dataclasses.fields(LineageRecord)} - {"id"}


def _freeze(row: Base, cls: type) -> Any:
    return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(cls)})


def _version(value: Any) -> str | None:
    # MLflow 3 hands versions out as int or str depending on the call; the audit log keeps one form.
    return None if value is None else str(value)


def _first_line(error: BaseException) -> str:
    # DBAPI errors are wrapped: the driver's own message is the useful one, the SQL echo and doc link are not.
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class AuditStore:
    """Audit and lineage rows in the database at ``url``; the engine and tables are created on first use."""

    def __init__(self, url: str):
        self.url = url
        self._url: URL | None = None
        try:
            self._url = make_url(url)
        except (exc.ArgumentError, ValueError, TypeError) as error:
            raise self._unreachable(error) from error
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    def _display_url(self) -> str:
        if self._url is not None:
            return self._url.render_as_string(hide_password=True)
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", str(self.url))

    def _unreachable(self, error: BaseException) -> StoreError:
        return StoreError(
            f"cannot reach the paperline store at {self._display_url()}: {_first_line(error)}; "
            "set PAPERLINE_STORE_URL to a reachable SQLAlchemy URL"
        )

    def _sessionmaker(self) -> sessionmaker[Session]:
        if self._sessions is not None:
            return self._sessions
        url = self._url
        assert url is not None
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # Parallel flow runs write to the same file: wait for the lock instead of failing at once.
            connect_args["timeout"] = 30
        elif url.get_backend_name() == "postgresql":
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; paperline installs psycopg2 (as MLflow's
            # server docs do), so a bare URL means psycopg2 when that is what is installed.
            if url.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is not None:
                url = url.set(drivername="postgresql+psycopg2")
            # An unreachable server should fail in seconds with our message, not hang on TCP retries.
            connect_args["connect_timeout"] = 10
        try:
            engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
            create_tables(engine)
        except (exc.SQLAlchemyError, ImportError, OSError) as error:
            raise self._unreachable(error) from error
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        return self._sessions

    def check(self) -> None:
        """Connect and create the tables now, so an unreachable store fails a run before any training."""
        self._sessionmaker()

    def close(self) -> None:
        """Close the pooled connections (the next use reconnects); lets a test drop its database."""
        if self._engine is not None:
            self._engine.dispose()

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        # Only the store's own statements are translated: an error from the caller's code inside transaction()
        # (MLflow's own database, say) must not be reported as this store being unreachable.
        try:
            yield
        except exc.OperationalError as error:
            raise self._unreachable(error) from error

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits when the block ends and rolls back if it raises."""
        session = self._sessionmaker()()
        try:
            yield session
            with self._reachable():
                session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _add(self, row: Base, session: Session | None) -> None:
        # Inside a caller's transaction, only flush (the id is assigned) and leave the commit to the caller.
        if session is None:
            with self.transaction() as own:
                own.add(row)
            return
        with self._reachable():
            session.add(row)
            session.flush()

    def record_alias_event(
        self, *, model_name: str, alias: str, previous_version: str | int | None, new_version: str | int | None,
        actor: str, action: str, reason: str, gate_passed: bool | None = None, details: dict[str, Any] | None = None,
        mlflow_run_id: str | None = None, flow_run_id: str | None = None, session: Session | None = None,
    ) -> AliasEvent:
        """Append one alias change; with ``session``, inside the caller's transaction (not committed here)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown alias action {action!r}; expected one of {', '.join(ACTIONS)}")
        row = AliasEventRow(
            time=datetime.now(timezone.utc), model_name=model_name, alias=alias,
            previous_version=_version(previous_version), new_version=_version(new_version), actor=actor,
            action=action, reason=reason, gate_passed=gate_passed, details=details, mlflow_run_id=mlflow_run_id,
            flow_run_id=flow_run_id,
        )
        self._add(row, session)
        return _freeze(row, AliasEvent)

    def alias_history(self, model_name: str, alias: str | None = None) -> list[AliasEvent]:
        """Alias changes of one model, oldest first; only those of ``alias`` when given."""
        query = select(AliasEventRow).where(AliasEventRow.model_name == model_name)
        if alias is not None:
            query = query.where(AliasEventRow.alias == alias)
        # id breaks ties: two events in the same clock tick keep the order they were written in.
        query = query.order_by(AliasEventRow.time, AliasEventRow.id)
        with self.transaction() as session, self._reachable():
            return [_freeze(row, AliasEvent) for row in session.scalars(query)]

    def record_lineage(self, **fields: Any) -> LineageRecord:
        """Append one pipeline run's lineage; ``project`` and ``status`` are required, the rest may be None."""
        unknown = sorted(set(fields) - _LINEAGE_FIELDS)
        if unknown:
            raise TypeError(f"unknown lineage field(s): {', '.join(unknown)}")
        for required in ("project", "status"):
            if not fields.get(required):
                raise ValueError(f"a lineage record needs a {required}")
        if fields["status"] not in LINEAGE_STATUSES:
            raise ValueError(
                f"unknown lineage status {fields['status']!r}; expected one of {', '.join(LINEAGE_STATUSES)}"
            )
        fields.setdefault("time", datetime.now(timezone.utc))
        fields["model_version"] = _version(fields.get("model_version"))
        row = LineageRow(**fields)
        self._add(row, None)
        return _freeze(row, LineageRecord)

    def update_lineage(self, record_id: int, **fields: Any) -> LineageRecord:
        """Set fields of one lineage record (a run's row is written when it starts and completed when it ends)."""
        unknown = sorted(set(fields) - _LINEAGE_FIELDS)
        if unknown:
            raise TypeError(f"unknown lineage field(s): {', '.join(unknown)}")
        if "status" in fields and fields["status"] not in LINEAGE_STATUSES:
            raise ValueError(f"unknown lineage status {fields['status']!r}")
        if "model_version" in fields:
            fields["model_version"] = _version(fields["model_version"])
        with self.transaction() as session, self._reachable():
            row = session.get(LineageRow, record_id)
            if row is None:
                raise StoreError(f"no lineage record {record_id} in {self._display_url()}")
            for name, value in fields.items():
                setattr(row, name, value)
            session.flush()
            return _freeze(row, LineageRecord)

    def lineage(
        self, *, project: str | None = None, mlflow_run_id: str | None = None, flow_run_id: str | None = None,
        status: str | None = None,
    ) -> list[LineageRecord]:
        """Lineage records matching every filter given, oldest first."""
        query = select(LineageRow)
        filters = {"project": project, "mlflow_run_id": mlflow_run_id, "flow_run_id": flow_run_id, "status": status}
        for column, value in filters.items():
            if value is not None:
                query = query.where(getattr(LineageRow, column) == value)
        with self.transaction() as session, self._reachable():
            rows = session.scalars(query.order_by(LineageRow.time, LineageRow.id))
            return [_freeze(row, LineageRecord) for row in rows]

    # ---- row counts of the dataset versions that passed the gate ------------------------------------------------

    def record_gated_rows(self, dataset_md5: str, rows: dict[str, dict[str, int]]) -> None:
        """Record dataset -> split -> row count of a version that passed the gate; a split whose latest record
        already says the same is left alone (a cached gate passes on every rerun)."""
        latest = self.gated_rows(list(rows), with_md5=True)
        now = datetime.now(timezone.utc)
        with self.transaction() as session, self._reachable():
            for dataset, splits in rows.items():
                for split, count in splits.items():
                    if latest.get(dataset, {}).get(split) != (dataset_md5, count):
                        session.add(GatedRowsRow(time=now, dataset=dataset, dataset_md5=dataset_md5, split=split,
                                                  rows=int(count)))

    def gated_rows(self, datasets: list[str], with_md5: bool = False,
                   excluding_md5: str | None = None) -> dict[str, dict[str, Any]]:
        """Dataset -> split -> row count in the latest version that passed the gate (`(md5, rows)` with
        `with_md5`); a dataset or split never gated is absent. `excluding_md5`: the version being gated now, so
        a rerun of it compares against the same earlier version as its first run (and hits the gate's cache)."""
        query = select(GatedRowsRow).where(GatedRowsRow.dataset.in_(datasets))
        if excluding_md5 is not None:
            query = query.where(GatedRowsRow.dataset_md5 != excluding_md5)
        latest: dict[str, dict[str, Any]] = {}
        with self.transaction() as session, self._reachable():
            for row in session.scalars(query.order_by(GatedRowsRow.time, GatedRowsRow.id)):  # the last one wins
                latest.setdefault(row.dataset, {})[row.split] = (row.dataset_md5, row.rows) if with_md5 else row.rows
        return latest

    # ---- locks that die with their holder ----------------------------------------------------------------------

    @contextmanager
    def hold(self, name: str, wait: bool = True, timeout_s: float = 6 * 3600) -> Iterator[bool]:
        """Hold the lock `name` for the block; yields whether it was acquired (always True when `wait`; a wait
        that runs out is a StoreError). The lock goes with this process however it ends, so it also tells a live
        run from a dead one; see paperline.ops.store.locks for how each backend holds it."""
        from paperline.ops.store import locks

        self._sessionmaker()
        try:
            if self._engine.dialect.name == "postgresql":
                with self._reachable(), locks.advisory_lock(self._engine, name, wait, timeout_s) as acquired:
                    yield acquired
            else:
                database = self._url.database if self._url is not None else None
                folder = (Path(database).expanduser().parent if database and database != ":memory:"
                          else Path(tempfile.gettempdir())) / "locks"
                with locks.file_lock(folder, name, wait, timeout_s) as acquired:
                    yield acquired
        except locks.LockTimeout as error:
            raise StoreError(f"{error} in {self._display_url()}; another run still holds it") from None
