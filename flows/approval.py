"""A promotion that waits for a person: the run's flow run pauses with a form (approve or reject, a reason, who
answers), and the answer moves `champion` or not.

When the policy has `require_approval` and a candidate passes every rule, registration leaves it `challenger` with
a pending approval (`paperline.ops.registry.approvals`) and the run calls `wait_for_approval`. That pauses the flow
run with Prefect's run input (`pause_flow_run(wait_for_input=...)`): the dashboard shows the run as Paused, with a
Resume button that opens the form. `paperline approve|reject <model> --reason ...` answers the same form through
the API (`answer`, as the dashboard does: resume with run input). The flow run's own process then applies the
answer, so the registry is written by the run whichever way the answer came. Nobody answering within the policy's
`approval_timeout_s` expires the approval: the run ends, `champion` stays where it was, and the summary says so.

The pause keeps the run's process alive while it waits (a suspended run would need a deployment to restart from
and would train again); a process that dies while waiting leaves a flow run that can no longer be answered, and
`answer` says so in one line.
"""

from __future__ import annotations

import math
import re
from typing import Literal
from uuid import UUID

from prefect import get_run_logger, pause_flow_run, resume_flow_run
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.input import RunInput
from prefect.states import Running
from prefect.utilities.urls import url_for
from pydantic import Field

from paperline.core.errors import PaperlineError
from paperline.ops.registry.aliases import ModelRegistry, RegistryError
from paperline.ops.registry.policy import Policy
from paperline.ops.registry.versions import CHAMPION
from paperline.ops.runs.summary import RunSummary
from paperline.ops.tracking import runs as tracking
from paperline.ops.tracking import tags
from paperline_flows import events


class ApprovalAnswer(RunInput):
    """Approve or reject the promotion of this run's model version (`paperline approve|reject` sends the same
    three fields)."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: this version becomes champion; reject: it stays challenger and champion stays")
    reason: str = Field(min_length=1, description="Why, in a few words: written to the audit history and the "
                                                  "version's tags")
    approver: str = Field(min_length=1, description="Who answers (your name or login): the audit row names you")


def _poll_interval(timeout_s: float) -> int:
    # How soon the run sees an answer: a second for a wait of minutes (a demo, the tests), Prefect's own 10 s for a
    # wait of hours; about a hundred looks per wait in between.
    return max(1, min(10, round(timeout_s / 100)))


def _pause_key(name: str, version: str) -> str:
    # Prefect keys the form's inputs by it, and its keys allow only lowercase letters, digits and dashes.
    return re.sub(r"[^a-z0-9-]+", "-", f"approval-{name}-v{version}".lower())


def _form_text(summary: RunSummary, timeout_s: float) -> str:
    name, version = summary.model_name, summary.model_version
    lines = [f"## Promote {name} v{version} to champion?", "",
             f"{summary.project} [{summary.config}] passed every rule of the promotion policy, which asks a person "
             f"to approve. Nobody answering within {timeout_s:g} s expires it (champion stays).", "",
             *(f"- {line}" for line in [*summary.comparison, *summary.decision]), "",
             f"Or from a shell: `paperline approve {name} --version {version} --reason \"...\"` "
             f"(`paperline reject` to refuse)."]
    return "\n".join(lines)


def wait_for_approval(registry: ModelRegistry, summary: RunSummary, policy: Policy) -> None:
    """Pause this flow run until a person answers the pending approval of the run's version, or it expires; fill
    `summary` with the outcome (`approval`, `champion_moved`, `is_champion`) and emit its event."""
    logger = get_run_logger()
    name, version, timeout_s = summary.model_name, summary.model_version, policy.approval_timeout_s
    champion_before = registry.aliases(name).get(CHAMPION)
    logger.info(f"v{version} of {name} waits for a person (at most {timeout_s:g} s): `paperline approve {name} "
                f"--version {version} --reason ...` (or `paperline reject`), or the form of this flow run in the "
                f"Prefect dashboard: {summary.flow_run_url or summary.flow_run_id}")
    form = ApprovalAnswer.with_initial_data(description=_form_text(summary, timeout_s))
    try:
        reply = pause_flow_run(wait_for_input=form, timeout=math.ceil(timeout_s),
                               poll_interval=_poll_interval(timeout_s), key=_pause_key(name, version))
    except FlowPauseTimeout:
        _expired(registry, summary, timeout_s, champion_before)
        return
    except BaseException as error:  # Ctrl-C, a kill: nobody can answer a run that is gone
        _close_pending(registry, name, version, f"the run waiting for it stopped ({type(error).__name__})")
        raise
    _apply(registry, summary, reply, champion_before)


def _apply(registry: ModelRegistry, summary: RunSummary, reply: ApprovalAnswer, champion_before: str | None) -> None:
    """The answer, written by this run: champion moves (approve) or not (reject, or an approval that cannot apply
    because champion moved since the comparison)."""
    name, version = summary.model_name, summary.model_version
    state, event, previous = "rejected", events.REJECTED, champion_before
    if reply.decision == "reject":
        registry.reject(name, version, approver=reply.approver, reason=reply.reason)
        summary.approval = f"rejected by {reply.approver}: {reply.reason}"
    else:
        try:
            row = registry.approve(name, version, approver=reply.approver, reason=reply.reason)
        except RegistryError as refusal:  # champion moved since the comparison: the answer cannot apply
            summary.approval = f"approved by {reply.approver} but not applied: {refusal}"
            _close_pending(registry, name, version, summary.approval)
            state, event = "expired", events.APPROVAL_EXPIRED
        else:
            summary.champion_moved = summary.is_champion = True
            summary.budget_aliases = registry.budget_aliases(name)
            summary.approval = f"approved by {reply.approver}: {reply.reason}"
            state, event, previous = "approved", events.APPROVED, row.previous_version
    get_run_logger().info(f"{name} v{version}: {summary.approval}")
    tracking.set_tags({tags.APPROVAL: state, tags.CHAMPION_MOVED: str(summary.champion_moved)})
    events.answered(event, summary, previous, by=reply.approver, reason=reply.reason)


def _expired(registry: ModelRegistry, summary: RunSummary, timeout_s: float, champion_before: str | None) -> None:
    name, version = summary.model_name, summary.model_version
    _close_pending(registry, name, version, f"nobody answered within {timeout_s:g} s")
    summary.approval = f"expired after {timeout_s:g} s: nobody answered; champion unchanged"
    get_run_logger().warning(f"{name} v{version}: approval {summary.approval}")
    _running_again(summary.flow_run_id)
    tracking.set_tags({tags.APPROVAL: "expired"})
    events.answered(events.APPROVAL_EXPIRED, summary, champion_before)


def _close_pending(registry: ModelRegistry, name: str, version: str, reason: str) -> None:
    """The version stops waiting (tag `expired` with why), unless someone answered it meanwhile."""
    try:
        registry.expire(name, version, reason=reason)
    except RegistryError:
        pass  # answered already (by hand, through the registry): that answer stands
    except Exception as error:  # noqa: BLE001 -- the run is ending anyway; its own error matters more
        get_run_logger().warning(f"could not close the pending approval of {name} v{version}: {error}")


def _running_again(flow_run_id: str | None) -> None:
    """Put the flow run back to Running after its pause ran out, so the run ends Completed with its summary.

    Prefect fails a paused run whose timeout passed (on its next state change, or the server's pause-expiration
    service does it first); for paperline the expiry is an answer, champion unchanged, not a failed run. Forced:
    the orchestration rules refuse to leave a pause that timed out."""
    if not flow_run_id:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(flow_run_id), Running(message="approval expired: nobody answered"),
                                  force=True)


class NotWaiting(PaperlineError):
    """The flow run that waited for an approval is gone (its process ended, or the approval expired)."""


def answer(registry: ModelRegistry, model: str, version: str, approve: bool, reason: str, approver: str) -> str:
    """Answer the pending approval of `model` v`version` as the dashboard's form does: resume the flow run that
    waits for it with the run input. Returns the flow run's URL; its process applies the answer (within its poll
    interval). Raises NotWaiting, moving nothing, when that flow run is no longer paused."""
    pending = {str(v.version): v for v in registry.pending_approvals(model)}
    if str(version) not in pending:
        raise RegistryError(f"v{version} of {model!r} has no pending approval; pending: "
                            f"{', '.join('v' + v for v in pending) or 'none'}")
    flow_run_id = pending[str(version)].tags.get(tags.APPROVAL_FLOW_RUN)
    gone = (f"so nobody can answer it now; run it again (`paperline run ...`) to ask again, or promote by hand "
            f"(`paperline promote {model} {version} --reason ...`)")
    if not flow_run_id:
        raise NotWaiting(f"no flow run waits for the approval of {model} v{version}, {gone}")
    run_input = ApprovalAnswer(decision="approve" if approve else "reject", reason=reason,
                               approver=approver).model_dump()
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except ObjectNotFound:
        raise NotWaiting(f"the Prefect server in use does not know the flow run {flow_run_id} that waited for the "
                         f"approval of {model} v{version}, {gone}") from None
    if state is None or not state.is_paused():
        raise NotWaiting(f"the flow run {flow_run_id} that waited for the approval of {model} v{version} is "
                         f"{state.name if state else 'gone'}, no longer paused (its process ended, or the approval "
                         f"expired), {gone}")
    try:
        resume_flow_run(UUID(flow_run_id), run_input=run_input)
    except (NotPausedError, FlowPauseTimeout):  # it ended, or its pause ran out, since the read above
        raise NotWaiting(f"the flow run {flow_run_id} that waited for the approval of {model} v{version} stopped "
                         f"waiting just now, {gone}") from None
    except RuntimeError as error:  # the server refused the input itself
        raise NotWaiting(f"the Prefect server refused the answer for {model} v{version}: {error}") from None
    return url_for("flow-run", obj_id=flow_run_id) or flow_run_id
