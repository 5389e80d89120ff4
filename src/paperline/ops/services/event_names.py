"""paperline's Prefect event names and resource ids: a contract between the flows that emit them
(paperline_flows.events) and the deployment triggers and automations that follow them (`paperline deploy`,
infra/prefect.yaml, infra/automations/). Plain strings here, so the library can name them without Prefect.

    paperline.model.promoted           a version became champion (by the policy, or by hand: `paperline promote`)
    paperline.model.rolled-back        champion went back to an earlier version (`paperline rollback`)
    paperline.model.refused            a run's version stayed challenger; the payload has the policy's reasons
    paperline.model.approval-pending   a run's version passed every rule and waits for a person
    paperline.model.approved           a person approved it: champion moved (the payload names who)
    paperline.model.rejected           a person rejected it: champion unchanged
    paperline.model.approval-expired   nobody answered in time (or the waiting run stopped): champion unchanged
    paperline.model.drift-detected     `paperline monitor` found the texts a model meets drifted from its reference
    paperline.data.gate-failed         a data gate stopped a run, a sweep or the data watcher
    paperline.data.version-passed      the data watcher saw a new data version change a dataset, and it passed
    paperline.index.serving-moved      a search index version passed its recall check and now serves

Resources: a model is `paperline.model.<registered name>`, a dataset `paperline.dataset.<name>`, a project
`paperline.project.<name>`, an index `paperline.index.<registered name>`; each with `prefect.resource.name`.
"""

from __future__ import annotations

PROMOTED = "paperline.model.promoted"
ROLLED_BACK = "paperline.model.rolled-back"
REFUSED = "paperline.model.refused"
APPROVAL_PENDING = "paperline.model.approval-pending"
APPROVED = "paperline.model.approved"
REJECTED = "paperline.model.rejected"
APPROVAL_EXPIRED = "paperline.model.approval-expired"
DRIFT_DETECTED = "paperline.model.drift-detected"
GATE_FAILED = "paperline.data.gate-failed"
DATA_VERSION_PASSED = "paperline.data.version-passed"
INDEX_SERVING_MOVED = "paperline.index.serving-moved"
NAMES = (PROMOTED, ROLLED_BACK, REFUSED, APPROVAL_PENDING, APPROVED, REJECTED, APPROVAL_EXPIRED, DRIFT_DETECTED,
         GATE_FAILED, DATA_VERSION_PASSED, INDEX_SERVING_MOVED)

# The events after which a model's `champion` names another version: what a downstream trigger follows.
CHAMPION_MOVED = (PROMOTED, APPROVED, ROLLED_BACK)


def model_id(name: str) -> str:
    return f"paperline.model.{name}"


def dataset_id(name: str) -> str:
    return f"paperline.dataset.{name}"


def project_id(name: str) -> str:
    return f"paperline.project.{name}"


def index_id(name: str) -> str:
    return f"paperline.index.{name}"
