"""Drift of the texts a model meets, on a schedule or by hand.

    resolve <model>@<alias> -> sample reference and current texts -> embed -> drift test -> MLflow run (score,
    report, history) -> Prefect artifact -> `paperline.model.drift-detected` if drifted

Deployed as `monitor-sbert-sts` (infra/prefect.yaml, daily once switched on); `paperline monitor` runs it by hand.
Run as a script: `python -m paperline_flows.monitor sbert_sts@champion stsb:dev dialogues:test`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from paperline.core.settings import Settings
from paperline.ops.production.defaults import DEFAULT_MAX_ROWS
from paperline.ops.production.monitor import check_drift
from paperline.ops.tracking.client import connect
from paperline_flows import events
from paperline_flows.dashboard import artifact_key


@dataclass
class MonitorOutcome:
    drifted: bool
    score: float
    lines: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None


@flow(name="paperline-monitor", flow_run_name="monitor-{model}", persist_result=False)
def monitor(model: str = "sbert_sts@champion", reference: str = "stsb:train", current: str = "stsb:test",
            max_rows: int = DEFAULT_MAX_ROWS) -> MonitorOutcome:
    """Embedding drift of `current` against `reference` under a model version.

    Args:
        model: `<model>@<alias>`, e.g. sbert_sts@champion.
        reference: What the model was made for: `<dataset>[:<split>]` in data/.
        current: What it meets: `<dataset>[:<split>]`, or a folder of .txt files (one text per line) on the worker.
        max_rows: Texts sampled from each side (the cost is bounded by it).
    """
    logger = get_run_logger()
    settings = Settings.from_env()
    result = check_drift(settings, connect(settings), model, reference, current, max_rows, progress=logger.info)
    for line in result.lines:
        (logger.warning if result.drifted else logger.info)(line)
    drift = result.drift
    rows = "\n".join(f"| {when} | {score:.4f} | {'drift' if hit else '-'} |" for when, score, hit in result.history)
    create_markdown_artifact(
        key=artifact_key(f"drift-{result.model.name}"), description=f"embedding drift under {result.model.describe()}",
        markdown=(f"## {result.current} against {result.reference}\n\n**{'Drift' if drift.drifted else 'No drift'}**: "
                  f"{drift.method} {drift.score:.4f} (threshold {drift.threshold:.4f}); the full report is "
                  f"`drift_report.html` of MLflow run `{result.run_id}`.\n\n| when | score | verdict |\n|---|---|---|\n"
                  + rows))
    if result.drifted:
        events.drift_detected(result.model.name, result.model.version, {
            "reference": result.reference, "current": result.current, "method": drift.method,
            "score": float(drift.score), "threshold": float(drift.threshold), "mlflow_run_id": result.run_id})
    return MonitorOutcome(bool(drift.drifted), float(drift.score), result.lines, result.run_id)



if __name__ == "__main__":
    print("\n".join(monitor(*sys.argv[1:4]).lines))
