"""Approval of a promotion by a person (paperline.ops.registry.approvals): real MLflow on SQLite and a real audit
store. The waiting flow run and its form are tests/flows/test_approval_and_notifications.py."""

from __future__ import annotations

import pytest
import test_registry as base
from test_registry import _register

from paperline.ops.registry.aliases import ModelRegistry, RegistryError
from paperline.ops.tracking import tags

NAME = "sbert_sts"
# test_registry's fixtures: an MLflow registry on SQLite, an audit store, a registry without a policy file
_mlflow_template, client, store, registry = base._mlflow_template, base.client, base.store, base.registry


def _pending(registry: ModelRegistry, root, compared_with: str = "none") -> str:
    version = _register(registry, root, name=NAME)
    registry.set_version_tags(NAME, version, {tags.COMPARED_WITH: compared_with})
    registry.mark_pending(NAME, version, "flow-run-1")
    return version


def _tags(registry: ModelRegistry, version: str) -> dict[str, str]:
    return registry.client.get_model_version(NAME, version).tags


def test_an_approval_moves_champion_and_the_audit_row_names_the_approver(registry, tmp_path):
    version = _pending(registry, tmp_path)
    assert [str(v.version) for v in registry.pending_approvals()] == [version]
    assert registry.aliases(NAME) == {"challenger": version}  # pending: champion has not moved

    event = registry.approve(NAME, version, approver="carol", reason="checked the slices by hand")

    assert registry.aliases(NAME)["champion"] == version
    assert (event.alias, event.action, event.actor, event.new_version) == ("champion", "approve", "carol", version)
    assert event.reason == "approved by carol: checked the slices by hand"
    assert event.flow_run_id == "flow-run-1" and event.details["approval"]["by"] == "carol"
    assert registry.history(NAME)[-1].actor == "carol"
    assert {k: v for k, v in _tags(registry, version).items() if k.startswith(tags.APPROVAL)} == {
        tags.APPROVAL: "approved", tags.APPROVAL_FLOW_RUN: "flow-run-1", tags.APPROVAL_BY: "carol",
        tags.APPROVAL_REASON: "checked the slices by hand"}
    assert registry.pending_approvals(NAME) == []
    with pytest.raises(RegistryError, match=r"no pending approval \(approval approved by carol"):
        registry.approve(NAME, version, approver="dave", reason="twice")


def test_a_rejection_and_an_expiry_leave_champion_where_it_is(registry, tmp_path):
    champion = _register(registry, tmp_path, name=NAME)
    registry.promote(NAME, champion, reason="the first one")
    rejected = _pending(registry, tmp_path, compared_with=champion)
    expired = _pending(registry, tmp_path, compared_with=champion)
    assert [str(v.version) for v in registry.pending_approvals(NAME)] == [rejected, expired]

    with pytest.raises(RegistryError, match="a reason is required"):
        registry.reject(NAME, rejected, approver="carol", reason=" ")
    registry.reject(NAME, rejected, approver="carol", reason="worse on the 2015 slice")
    registry.expire(NAME, expired, after_s=60)

    assert registry.aliases(NAME)["champion"] == champion
    assert [e.action for e in registry.history(NAME)].count("approve") == 0
    assert _tags(registry, rejected)[tags.APPROVAL] == "rejected"
    assert _tags(registry, rejected)[tags.APPROVAL_BY] == "carol"
    assert _tags(registry, expired)[tags.APPROVAL] == "expired"
    assert _tags(registry, expired)[tags.APPROVAL_REASON] == "nobody answered within 60 s"
    assert registry.pending_approvals() == []
    with pytest.raises(RegistryError, match="has no pending approval"):
        registry.approve(NAME, expired, approver="carol", reason="too late")

    # an unchanged rerun asks again for the same version: the old answer is cleared
    registry.mark_pending(NAME, rejected, "flow-run-2")
    assert tags.APPROVAL_BY not in _tags(registry, rejected)
    assert _tags(registry, rejected)[tags.APPROVAL_FLOW_RUN] == "flow-run-2"


def test_an_approval_is_refused_when_champion_moved_since_the_comparison(registry, tmp_path):
    first = _pending(registry, tmp_path)  # compared with no champion
    second = _pending(registry, tmp_path)  # also compared with no champion
    registry.approve(NAME, first, approver="carol", reason="good")

    with pytest.raises(RegistryError, match="moved since v2 was compared .*rerun to compare with the new champion"):
        registry.approve(NAME, second, approver="carol", reason="also good")
    assert registry.aliases(NAME)["champion"] == first
    assert _tags(registry, second)[tags.APPROVAL] == "pending"  # still answerable: a rejection, or a rerun
    with pytest.raises(RegistryError, match="an approver is required"):
        registry.reject(NAME, second, approver="", reason="stale")


def test_the_cli_answers_the_only_pending_version_or_says_which_exist(registry, tmp_path):
    from paperline.cli.approvals import _pending_version

    _register(registry, tmp_path, name=NAME)
    with pytest.raises(RegistryError, match="nothing of 'sbert_sts' waits for approval; pending approvals: none"):
        _pending_version(registry, NAME, None)
    first = _pending(registry, tmp_path)
    assert str(_pending_version(registry, NAME, None).version) == first
    second = _pending(registry, tmp_path)
    with pytest.raises(RegistryError, match=rf"'sbert_sts' has 2 pending approvals \(v{first}, v{second}\); "
                                            "pass --version N"):
        _pending_version(registry, NAME, None)
    assert str(_pending_version(registry, NAME, second).version) == second
    with pytest.raises(RegistryError, match=rf"v9 of 'sbert_sts' has no pending approval; pending for "
                                            rf"'sbert_sts': v{first}, v{second}"):
        _pending_version(registry, NAME, "9")
    with pytest.raises(RegistryError, match="there is no registered model 'other'"):
        _pending_version(registry, "other", None)
