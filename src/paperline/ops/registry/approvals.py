"""Approval of a promotion by a person: a candidate that passed every rule of a policy with ``require_approval``
waits as ``challenger`` with a pending approval, until someone approves it (``champion`` moves, and the audit row
names the approver), rejects it, or nobody answers in time (it expires). Either way the answer stays on the version.

The state lives in the version's tags (`paperline.ops.tracking.tags`: ``APPROVAL`` pending | approved | rejected |
expired, the flow run that waits for the answer, who answered and why), so the MLflow UI shows it beside the
version and any process can read it; only an approval moves an alias, so only an approval writes an audit row.
Every answer takes the model's lock: an approval and a rejection of one version cannot both win.

The approving half of `paperline.ops.registry.aliases.ModelRegistry`, which mixes it in; the waiting (a paused
Prefect flow run with a form) is the flows' business (``paperline_flows.approval``).
"""

from __future__ import annotations

from typing import Any

from mlflow.entities.model_registry import ModelVersion

from paperline.ops.registry.versions import CHAMPION, RegistryError, _alias, _pages, _required_reason
from paperline.ops.store.audit import AliasEvent
from paperline.ops.tracking import tags

PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"
_ANSWER_TAGS = (tags.APPROVAL_BY, tags.APPROVAL_REASON)


class Approvals:
    """``mark_pending``, ``approve``, ``reject``, ``expire`` and ``pending_approvals``; needs ``client``,
    ``model_lock``, ``_model``, ``_version``, ``_champion_moves``, ``_move_aliases``, ``policy_view`` and
    ``set_version_tags`` from the class that mixes it in (ModelRegistry)."""

    client: Any

    def mark_pending(self, name: str, version: str | int, flow_run_id: str | None) -> None:
        """``version`` waits for a person's answer; ``flow_run_id`` is the flow run paused for it (the answer resumes
        it). An earlier answer on the same version (an unchanged rerun registers no new one) is cleared."""
        version = str(version)
        with self.model_lock(name):
            target = self._version(self._model(name), version)
            for key in _ANSWER_TAGS:
                if key in target.tags:
                    self.client.delete_model_version_tag(name, version, key)
            self.set_version_tags(name, version, {tags.APPROVAL: PENDING, tags.APPROVAL_FLOW_RUN: flow_run_id or ""})

    def approve(self, name: str, version: str | int, approver: str, reason: str) -> AliasEvent:
        """Move ``champion`` to the pending ``version``, audited with ``approver`` as the actor; returns the
        champion's audit row. Refused (RegistryError, nothing moves) when the version is not pending, or when
        ``champion`` moved since the candidate was compared with it: the comparison that passed the policy is
        then one against a model that no longer serves."""
        reason = _required_reason(reason, "approve a promotion")
        approver = _required_approver(approver)
        with self.model_lock(name):
            model = self._model(name)
            target = self._pending(name, version)
            self.check_unchanged_champion(name, target)
            text = f"approved by {approver}: {reason}"
            view = self.policy_view(model, target)
            event = self._move_aliases(
                name, self._champion_moves(model, target, text), actor=approver, action="approve", reason=text,
                mlflow_run_id=target.run_id, flow_run_id=target.tags.get(tags.APPROVAL_FLOW_RUN) or None,
                gate_passed=view.gate_passed,
                details={"approval": {"by": approver, "reason": reason,
                                      "compared_with": target.tags.get(tags.COMPARED_WITH, "none")},
                         "policy": view.to_dict()},
            )[0]
            self.set_version_tags(name, str(target.version), {tags.APPROVAL_BY: approver, tags.APPROVAL_REASON: reason,
                                                  tags.APPROVAL: APPROVED})  # the state last
        return event

    # The answer's tags are written one by one, the state (`paperline.approval`) last: a reader that polls the state
    # (`paperline approve|reject`) then finds who answered and why already there.

    def reject(self, name: str, version: str | int, approver: str, reason: str) -> None:
        """The pending ``version`` stays ``challenger`` for good: ``champion`` does not move."""
        reason = _required_reason(reason, "reject a promotion")
        approver = _required_approver(approver)
        with self.model_lock(name):
            target = self._pending(name, version)
            self.set_version_tags(name, str(target.version), {tags.APPROVAL_BY: approver, tags.APPROVAL_REASON: reason,
                                                  tags.APPROVAL: REJECTED})  # the state last

    def expire(self, name: str, version: str | int, after_s: float | None = None, reason: str | None = None) -> None:
        """Nobody answered the pending ``version`` within ``after_s`` seconds (or ``reason`` says what else ended
        the wait, such as the waiting run stopping): it stays ``challenger`` and ``champion`` does not move."""
        if reason is None:
            reason = f"nobody answered within {after_s:g} s" if after_s is not None else None
        reason = _required_reason(reason, "expire a pending approval")
        with self.model_lock(name):
            target = self._pending(name, version)
            self.set_version_tags(name, str(target.version), {tags.APPROVAL_REASON: reason, tags.APPROVAL: EXPIRED})

    def pending_approvals(self, name: str | None = None) -> list[ModelVersion]:
        """The versions waiting for an answer (of ``name``, or of every model), by model and version."""
        search = {"filter_string": f"name = {name!r}"} if name else {}
        pending = [v for v in _pages(self.client.search_model_versions, **search)
                   if v.tags.get(tags.APPROVAL) == PENDING]
        return sorted(pending, key=lambda v: (v.name, int(v.version)))

    def check_unchanged_champion(self, name: str, target: ModelVersion) -> None:
        """Raise the one-line RegistryError when ``name``'s champion is not the one ``target`` was compared with
        (the version's ``COMPARED_WITH`` tag; a version without one was compared with no champion)."""
        current = _alias(self._model(name), CHAMPION)
        compared = target.tags.get(tags.COMPARED_WITH) or "none"
        if current == str(target.version):
            raise RegistryError(f"v{target.version} of {name!r} is already the champion; nothing to approve")
        if (current or "none") != compared:
            raise RegistryError(
                f"the champion of {name!r} moved since v{target.version} was compared with it (compared with "
                f"{_named(compared)}, the champion is now {_named(current or 'none')}); rerun to compare with the new "
                f"champion, or reject this one (`paperline reject {name} --version {target.version} --reason ...`)")

    def _pending(self, name: str, version: str | int) -> ModelVersion:
        target = self._version(self._model(name), version)
        state = target.tags.get(tags.APPROVAL)
        if state != PENDING:
            by = target.tags.get(tags.APPROVAL_BY)
            why = target.tags.get(tags.APPROVAL_REASON)
            detail = f"{state}{' by ' + by if by else ''}{': ' + why if why else ''}" if state else "never asked for"
            pending = ", ".join(f"v{v.version}" for v in self.pending_approvals(name)) or "none"
            raise RegistryError(f"v{target.version} of {name!r} has no pending approval (approval {detail}); "
                                f"pending for {name!r}: {pending}")
        return target


def _required_approver(approver: str | None) -> str:
    if not approver or not approver.strip():
        raise RegistryError("an approver is required: the audit row names who answered (set PAPERLINE_ACTOR, or "
                            "fill in the form's approver)")
    return approver.strip()


def _named(version: str) -> str:
    return "no champion" if version == "none" else f"v{version}"
