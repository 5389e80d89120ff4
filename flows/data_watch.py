"""The data watcher: a new data version in this checkout -> the data gate on the datasets it changed -> one event
per dataset (`paperline.data.version-passed`, or `paperline.data.gate-failed`) -> the deployments of the projects
that read it are triggered (`paperline deploy` wrote those triggers).

    check data.dvc against the last version seen -> gate the changed datasets -> emit -> record the version

Deployed as `data-watch` (infra/prefect.yaml, every 5 minutes: a look at an unchanged version reads one file);
`paperline data watch` runs it once by hand. Run as a script: `python -m paperline_flows.data_watch`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from paperline.core.settings import Settings
from paperline.ops.production.data_watch import WatchResult, look, write_state
from paperline_flows import events


@flow(name="paperline-data-watch", flow_run_name="data-watch", persist_result=False)
def data_watch() -> WatchResult:
    """Look for a new data version in the checkout the deployments run from; gate and announce what changed."""
    settings = Settings.from_env()
    logger = get_run_logger()
    result, digests = look(settings)
    for line in result.lines():
        logger.info(line)
    run_id = str(flow_run.id) if flow_run.id else None
    for name in result.passed:
        events.data_version_passed(name, result.version, result.previous, result.readers.get(name, []), run_id)
    for name, lines in result.failed.items():
        events.data_version_failed(name, result.version, lines, run_id)
    write_state(settings, result, digests)  # after the events: a watcher killed before this looks again
    if result.new_version:
        create_markdown_artifact(key="data-watch", description="what the last new data version changed",
                                 markdown="\n".join(f"- {line}" for line in result.lines()))
    return result


if __name__ == "__main__":
    outcome = data_watch()
    print("\n".join(outcome.lines()))
    raise SystemExit(3 if outcome.failed else 0)
