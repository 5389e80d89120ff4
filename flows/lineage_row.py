"""A run's row in the lineage table, kept true however the run ends (`LineageRow`), and how an ending is named.

Used by `flows/run_project.py` (one run) and `flows/sweep.py` (its trials' endings).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect.exceptions import TerminationSignal

from paperline.ops.registry.decisions import Lineage
from paperline.ops.services import outages
from paperline.ops.store.audit import AuditStore
from paperline.ops.tracking import runs as tracking


@dataclass
class LineageRow:
    """A run's row in the lineage table (`paperline_lineage`): written `running` as the run starts, then updated
    once with how it ended. `closed_on_error` makes "how it ended" hold for any exception too (a gate that
    crashes, a failed training, Ctrl-C): the row says `failed` or `interrupted`, never `running`, and the active
    MLflow run gets the same status and the error; `paperline.ops.runs.reconcile` is left only the SIGKILLs."""

    store: AuditStore
    lineage: Lineage
    mlflow_run_id: str
    cache_key: str  # generated data changes it: the row records the key as it is when the run ends
    gate_passed: bool | None = None
    id: int = field(default=0, init=False)

    @classmethod
    @contextmanager
    def opened(cls, store: AuditStore, lineage: Lineage, mlflow_run_id: str, cache_key: str) -> Iterator[LineageRow]:
        row = cls(store, lineage, mlflow_run_id, cache_key)
        row.id = store.record_lineage(**row._fields("running")).id
        with row.closed_on_error():
            yield row

    def close(self, status: str, **fields: Any) -> None:
        self.store.update_lineage(self.id, **self._fields(status, **fields))

    @contextmanager
    def closed_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException as error:  # whatever ended it
            status = ending_status(error)
            with outages.tolerate(outages.STORE):  # a store that is gone leaves the row `running` for reconcile
                self.close(status, details={"error": str(error) or type(error).__name__}, **self._registered())
            tracking.record_error(error, status)  # skipped where MLflow is gone: reconcile closes the run
            raise

    def _registered(self) -> dict[str, Any]:
        """The version this run registered, if it got that far (its `register` audit row, written with the version
        or not at all): a run that fails after registering (a Prefect server gone at its last report) records
        the version it left in the registry."""
        versions = [event.new_version for event in self.store.alias_history(self.lineage.model_name)
                    if event.action == "register" and event.mlflow_run_id == self.mlflow_run_id]
        return {"model_version": versions[-1]} if versions else {}

    def _fields(self, status: str, **fields: Any) -> dict[str, Any]:
        return self.lineage.record(status=status, mlflow_run_id=self.mlflow_run_id, gate_passed=self.gate_passed,
                                   cache_key=self.cache_key, **fields)


def ending_status(error: BaseException) -> str:
    """`interrupted` for Ctrl-C and SIGTERM (which Prefect turns into TerminationSignal inside a flow; the CLI then
    stops as for Ctrl-C), `failed` for anything else."""
    return "interrupted" if isinstance(error, (KeyboardInterrupt, TerminationSignal)) else "failed"
