"""The leaderboard as a Prefect table artifact `leaderboard-<task>` (docs/commands.md: `paperline leaderboard`).

Loaded by the CLI through the `paperline.flows` entry point `leaderboard_artifact` (the library never imports
Prefect), after it has built the table (`paperline.ops.registry.champions`) and found a Prefect server that answers:
PREFECT_API_URL must point at it. A small flow (`paperline-leaderboard`, run name `leaderboard-<task>`) because
Prefect 3 deprecates artifacts created outside a flow or task run; each call is a new version of the same keyed
artifact, its history on the dashboard's Artifacts page.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact


# Not persisted: the CLI reads the key from the returned state in its own process; Prefect would pickle it.
@flow(name="paperline-leaderboard", flow_run_name="leaderboard-{task}", validate_parameters=False,
      persist_result=False)
def publish(task: str, records: list[dict[str, Any]], description: str = "") -> str:
    """Create the table artifact; returns its key. Missing values are shown as '-'."""
    key = f"leaderboard-{task}"
    table = [{k: ("-" if v is None else v) for k, v in rec.items()} for rec in records]
    create_table_artifact(table=table, key=key, description=description or f"paperline leaderboard: {task}")
    return key
