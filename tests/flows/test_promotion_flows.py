"""Promotion and rollback from the dashboard: the `paperline-promote` and `paperline-rollback` flows against the
test Prefect server, on a workspace where a smoke run registered the champion and a second version sits below the
policy's floor. The flow run is the audit row's actor, each run leaves its before/after artifact, and a policy
refusal fails the run in one line and moves nothing. Then the same refusal and `--force` through the CLI, and the
deployments' run forms."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from repo_copy import REPO

from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.store.audit import AuditStore

MODEL = "sbert_sts-smoke"
KEY = "promotion-sbert-sts-smoke"

READ_RUN = """
import json, sys
from uuid import UUID
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
with get_client(sync_client=True) as client:
    run = client.read_flow_run(UUID(sys.argv[1]))
    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
        any_=[UUID(sys.argv[1])])))
print(json.dumps({"name": run.name, "state": run.state.type.value, "message": run.state.message,
                  "artifacts": {a.key: a.data for a in artifacts}}))
"""


def _flow(workspace, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a promotion flow in its own process, as a deployment's worker would; returns it and its flow run."""
    ran = subprocess.run([sys.executable, "-m", "paperline_flows.promotion", *args], cwd=workspace.root,
                         env=workspace.env, capture_output=True, text=True, timeout=300, check=False)
    assert ran.stdout.startswith("flow run "), ran.stdout[-3000:] + ran.stderr[-3000:]
    run_id = ran.stdout.split()[2].rstrip(":")
    read = subprocess.run([sys.executable, "-c", READ_RUN, run_id], env=workspace.env, capture_output=True,
                          text=True, timeout=120, check=True)
    return ran, {"id": run_id, **json.loads(read.stdout)}


@pytest.fixture(scope="module")
def two_versions(shared_workspace):
    """v1 from a smoke run (champion, the policy accepted it) and v2, the same model tagged below the floor."""
    ran = shared_workspace.paperline("run", "sbert_sts", "--config", "smoke")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    client = shared_workspace.client()
    first = client.get_model_version_by_alias(MODEL, "champion")
    registry = ModelRegistry(client, AuditStore(shared_workspace.store_url), actor="test")
    tags = {**first.tags, "paperline.metric.stsb_test_spearman": "50.0"}  # under sbert_sts's floor of 80
    second = registry.register(name=MODEL, model_uri=first.source, run_id=first.run_id, tags=tags)
    registry.store.close()
    return shared_workspace, str(first.version), second


def _history(workspace):
    store = AuditStore(workspace.store_url)
    try:
        return store.alias_history(MODEL, "champion")
    finally:
        store.close()


def test_a_refused_promotion_fails_the_flow_run_in_one_line_and_moves_nothing(two_versions):
    workspace, first, second = two_versions
    before = _history(workspace)
    ran, run = _flow(workspace, "promote", MODEL, second, "--reason", "try the low one")
    assert ran.returncode == 1 and run["state"] == "FAILED"
    assert "floor: failed (stsb_test_spearman 50 < 80)" in run["message"] and "\n" not in run["message"]
    assert "Traceback" not in ran.stdout + ran.stderr
    assert str(workspace.client().get_model_version_by_alias(MODEL, "champion").version) == first
    assert _history(workspace) == before
    report = run["artifacts"][KEY]
    assert "refused" in report and f"| champion | v{first} | v{first} |" in report
    assert "floor: failed" in report


def test_a_forced_promotion_and_a_rollback_from_flows_are_audited_with_the_flow_run(two_versions):
    workspace, first, second = two_versions
    ran, run = _flow(workspace, "promote", MODEL, second, "--reason", "incident 7", "--force")
    assert ran.returncode == 0 and run["state"] == "COMPLETED", ran.stdout[-3000:] + ran.stderr[-3000:]
    row = _history(workspace)[-1]
    assert (row.action, row.previous_version, row.new_version) == ("promote", first, second)
    assert run["name"] == f"promote-{MODEL}-v{second}"  # readable in the dashboard's list of runs
    assert row.actor == f"prefect:{run['name']} ({run['id']})"
    assert row.reason == "incident 7 | forced: floor: failed (stsb_test_spearman 50 < 80)"
    assert row.gate_passed is True and row.details["policy"]["forced"] is True
    report = run["artifacts"][KEY]
    assert f"| champion | v{first} | v{second} |" in report and f"| challenger | v{second} | v{second} |" in report
    assert "forced: yes, over: floor: failed" in report and "WORSE than the champion" in report

    ran, run = _flow(workspace, "rollback", MODEL, "--reason", "the forced one misbehaves")
    assert ran.returncode == 0 and run["state"] == "COMPLETED", ran.stdout[-3000:] + ran.stderr[-3000:]
    row = _history(workspace)[-1]
    assert (row.action, row.previous_version, row.new_version) == ("rollback", second, first)
    assert run["name"] == f"rollback-{MODEL}"
    assert row.actor == f"prefect:{run['name']} ({run['id']})"
    assert f"| champion | v{second} | v{first} |" in run["artifacts"][KEY]


def test_the_cli_refuses_the_same_version_unless_forced(two_versions):
    workspace, first, second = two_versions
    refused = workspace.paperline("promote", MODEL, second, "--reason", "by hand")
    assert refused.returncode == 2  # as every registry error: what was asked for is refused, not a failure
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]  # one line
    assert "floor: failed" in refused.stderr and "--force" in refused.stderr
    forced = workspace.paperline("promote", MODEL, second, "--reason", "by hand", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert f"champion v{first} -> v{second}" in forced.stdout and "forced: floor: failed" in forced.stdout
    assert _history(workspace)[-1].reason == "by hand | forced: floor: failed (stsb_test_spearman 50 < 80)"


READ_DEPLOYMENT = """
import json, sys
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print(json.dumps(client.read_deployment_by_name(sys.argv[1]).parameter_openapi_schema))
"""


def test_the_deployments_give_the_dashboard_a_documented_form(workspace):
    shutil.copytree(REPO / "infra", workspace.root / "infra", dirs_exist_ok=True)
    deploy = workspace.paperline("deploy", "--pool", "cpu", timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    for name, fields in [("paperline-promote/promote-model", ["model_name", "version", "reason", "force"]),
                         ("paperline-rollback/rollback-model", ["model_name", "reason"])]:
        read = subprocess.run([sys.executable, "-c", READ_DEPLOYMENT, name], env=workspace.env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert read.returncode == 0, read.stderr[-3000:]
        schema = json.loads(read.stdout)
        assert list(schema["properties"]) == fields
        assert all(schema["properties"][f].get("description") for f in fields), schema
    assert schema["required"] == ["model_name", "reason"]
