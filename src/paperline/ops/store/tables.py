"""paperline's own tables in the audit and lineage store, and their creation (see paperline.ops.store.audit).

Prefixed table names: on a team server these tables may share a database with MLflow's.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, String, Text, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend.

    SQLite keeps no offset and PostgreSQL answers in the session's time zone; both come back as UTC here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the audit store records timezone-aware UTC times")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class JSONText(TypeDecorator):
    """JSON kept as plain text, so the same rows read back identically from SQLite, PostgreSQL or anything else."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        # default=str: a numpy float or a Path in a policy decision must not lose the audit row.
        return None if value is None else json.dumps(value, sort_keys=True, default=str)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    """A metadata of our own: create_all must touch only paperline's tables, never MLflow's in the same database."""


class AliasEventRow(Base):
    __tablename__ = "paperline_alias_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    model_name: Mapped[str] = mapped_column(String(256), index=True)
    alias: Mapped[str] = mapped_column(String(256))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    new_version: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    gate_passed: Mapped[bool | None] = mapped_column(Boolean)
    details: Mapped[Any] = mapped_column(JSONText, nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))


class LineageRow(Base):
    __tablename__ = "paperline_lineage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    project: Mapped[str] = mapped_column(String(256), index=True)
    config_name: Mapped[str | None] = mapped_column(String(256))
    flow_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    flow_run_url: Mapped[str | None] = mapped_column(Text)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    dataset_md5: Mapped[str | None] = mapped_column(String(64))
    gate_passed: Mapped[bool | None] = mapped_column(Boolean)
    cache_key: Mapped[str | None] = mapped_column(String(256))
    model_name: Mapped[str | None] = mapped_column(String(256))
    model_version: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    details: Mapped[Any] = mapped_column(JSONText, nullable=True)


class GatedRowsRow(Base):
    # One split of a dataset version that passed the data gate, and its row count: what the next version's split
    # is compared with (a shrink beyond the data kind's fraction fails the gate; see paperline.data.shrink).
    __tablename__ = "paperline_gated_rows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    dataset: Mapped[str] = mapped_column(String(256), index=True)
    dataset_md5: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(256))
    rows: Mapped[int] = mapped_column(Integer)


def create_tables(engine: Engine, attempts: int = 5) -> None:
    """Create paperline's tables; two processes starting on a new store at once may both find a table missing
    and the slower CREATE fails with "already exists": the tables are there then, so look again."""
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(engine)
            return
        except (exc.OperationalError, exc.ProgrammingError, exc.IntegrityError) as error:
            text = str(error).lower()
            if attempt == attempts - 1 or not ("already exists" in text or "duplicate key" in text):
                raise
            time.sleep(0.1 * (attempt + 1))
