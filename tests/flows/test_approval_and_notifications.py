"""Approval of a promotion by a person, and the events that tell the team, end to end: real `paperline run`s of
sbert_sts (smoke) under a policy with `require_approval`, on the test session's Prefect server.

One workspace, three runs of the same model version (the first trains; the others are cache hits that ask again):
nobody answers the first (it expires: the run ends, champion unchanged); the second is rejected with `paperline
reject`; the third is approved through the API exactly as the dashboard's form does (resume with run input), and
the audit row names the approver. A loopback HTTP receiver stands in for the team's webhook: `paperline notify`
applies infra/automations/notify-webhook.yaml to the server, and the receiver records the events the runs emit.
Every process and thread the test starts is stopped by it; every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from repo_copy import BIN, REPO

from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.store.audit import AuditStore
from paperline.ops.tracking import tags

PROJECT, MODEL = "sbert_sts", "sbert_sts-smoke"
PAPERLINE = BIN / "paperline"
WAIT_S = 180  # a smoke run's cache hit reaches its pause in ~30 s here; CI machines are slower


GATE_EVENT = """
from prefect import flow
from paperline.ops.runs.summary import GateFailure
from paperline_flows import events

@flow(name="paperline-test-gate-event")
def gate_event():
    events.gate_failed("sbert_sts", "smoke", GateFailure("data gate", ["stsb train: 3 empty sentence1"]), None,
                       None, None)

gate_event()
"""


class Receiver:
    """A webhook on 127.0.0.1: records the JSON body of every POST."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # quiet: pytest shows what the assertions need
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> dict[str, dict]:
        return {item["event"]: item for item in self.received}

    def wait_for(self, names: set[str], seconds: float = 60) -> dict[str, dict]:
        deadline = time.monotonic() + seconds
        while not names <= set(self.events()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.events()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _api(workspace, method: str, path: str, body: dict | None = None) -> dict:
    """One call of the Prefect REST API, as the dashboard makes it."""
    request = urllib.request.Request(workspace.env["PREFECT_API_URL"].rstrip("/") + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
        return json.loads(text) if text else {}


def _set_policy(workspace, timeout_s: float) -> None:
    path = workspace.root / "registry" / "policy.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["projects"][PROJECT].update(require_approval=True, approval_timeout_s=timeout_s)
    path.write_text(yaml.safe_dump(policy))


def _start_run(workspace) -> subprocess.Popen:
    return subprocess.Popen([str(PAPERLINE), "run", PROJECT, "--config", "smoke"], cwd=workspace.root,
                            env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _paused_run(workspace, process: subprocess.Popen) -> tuple[str, str]:
    """(version, flow run id) once the run's flow run is PAUSED on the pending approval; at most WAIT_S."""
    client = workspace.client()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended (exit {process.returncode}) before pausing: {out[-2000:]} {err[-3000:]}")
        for version in client.search_model_versions(f"name = '{MODEL}'"):
            run_id = version.tags.get(tags.APPROVAL_FLOW_RUN)
            if version.tags.get(tags.APPROVAL) == "pending" and run_id:
                if _api(workspace, "GET", f"/flow_runs/{run_id}")["state"]["type"] == "PAUSED":
                    return str(version.version), run_id
        time.sleep(1)
    process.kill()
    out, err = process.communicate()
    pytest.fail(f"no paused flow run within {WAIT_S} s: {out[-2000:]} {err[-3000:]}")


def _finish(process: subprocess.Popen, seconds: float = WAIT_S) -> str:
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the run did not end within {seconds} s after its answer: {out[-2000:]} {err[-3000:]}")
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    return out


@pytest.fixture
def webhook(workspace):
    """The receiver, and the example automation applied to the test server by `paperline notify` (deleted after:
    the server is shared by the session's other tests)."""
    receiver = Receiver()
    try:
        applied = workspace.paperline("notify", "--webhook", receiver.url, "--file",
                                      str(REPO / "infra" / "automations" / "notify-webhook.yaml"), timeout=120)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "automation paperline-notify-webhook" in applied.stdout
        yield receiver
    finally:
        for automation in _api(workspace, "POST", "/automations/filter",
                               {"automations": {"name": {"any_": ["paperline-notify-webhook"]}}}):
            _api(workspace, "DELETE", f"/automations/{automation['id']}")
        receiver.stop()


def test_approval_waits_for_a_person_and_the_team_hears_of_it(workspace, webhook):
    running: list[subprocess.Popen] = []
    try:
        _approval_story(workspace, webhook, running)
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.communicate()


def _approval_story(workspace, webhook, running):
    client = workspace.client()

    # A failed gate's event, from a flow run of its own (the gate's own tests make real failures), alongside run 1.
    running.append(gate := subprocess.Popen([sys.executable, "-c", GATE_EVENT], cwd=workspace.root,
                                            env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True))

    # 1. Nobody answers: the approval expires, the run ends (exit 0) and says so, champion unchanged.
    _set_policy(workspace, timeout_s=4)
    expired = workspace.paperline("run", PROJECT, "--config", "smoke")
    assert expired.returncode == 0, expired.stdout[-3000:] + expired.stderr[-3000:]
    assert "approval: expired after 4 s: nobody answered; champion unchanged" in expired.stdout
    assert "alias challenger (champion unchanged)" in expired.stdout
    version = str(client.get_model_version_by_alias(MODEL, "challenger").version)
    assert "champion" not in client.get_registered_model(MODEL).aliases
    assert client.get_model_version(MODEL, version).tags[tags.APPROVAL] == "expired"
    first_run = client.get_model_version(MODEL, version).tags[tags.APPROVAL_FLOW_RUN]
    assert _api(workspace, "GET", f"/flow_runs/{first_run}")["state"]["type"] == "COMPLETED"
    gate_output = gate.communicate(timeout=120)
    assert gate.returncode == 0, gate_output
    expected = {"paperline.model.approval-pending", "paperline.model.approval-expired", "paperline.data.gate-failed"}
    heard = webhook.wait_for(expected)
    assert expected <= set(heard), heard
    assert heard["paperline.data.gate-failed"]["resource"]["prefect.resource.id"] == f"paperline.project.{PROJECT}"
    assert heard["paperline.data.gate-failed"]["payload"]["reasons"] == ["stsb train: 3 empty sentence1"]
    pending = heard["paperline.model.approval-pending"]
    assert pending["resource"] == {"prefect.resource.id": f"paperline.model.{MODEL}", "prefect.resource.name": MODEL,
                                   "paperline.version": version}
    assert pending["payload"]["project"] == PROJECT and pending["payload"]["config"] == "smoke"
    assert pending["payload"]["flow_run_id"] == first_run and pending["payload"]["mlflow_run_id"]
    assert any(line.startswith("approval: pending") for line in pending["payload"]["reasons"])

    # A pending approval whose run is gone is answered in one line, moving nothing.
    registry = ModelRegistry(client, AuditStore(workspace.store_url), actor="test")
    registry.mark_pending(MODEL, version, first_run)  # as if its run had died while waiting
    gone = workspace.paperline("approve", MODEL, "--reason", "looks fine")
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert "no longer paused" in gone.stderr and "`paperline promote" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1
    assert "champion" not in client.get_registered_model(MODEL).aliases
    registry.expire(MODEL, version, reason="test: its run ended")

    # 2. A cache hit asks again; `paperline reject` answers through the paused run: champion unchanged.
    _set_policy(workspace, timeout_s=120)
    running.append(second := _start_run(workspace))
    assert _paused_run(workspace, second)[0] == version
    rejected = subprocess.run([str(PAPERLINE), "reject", MODEL, "--reason", "worse on the 2015 slice"],
                              cwd=workspace.root, env={**workspace.env, "PAPERLINE_ACTOR": "dana"},
                              capture_output=True, text=True, timeout=120)
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert "rejected by dana: worse on the 2015 slice; champion is none" in rejected.stdout
    out = _finish(second)
    assert "approval: rejected by dana: worse on the 2015 slice" in out
    assert "champion" not in client.get_registered_model(MODEL).aliases

    # 3. Asked again; answered through the API as the dashboard's form does. The form is the run input's schema.
    running.append(third := _start_run(workspace))
    _, flow_run_id = _paused_run(workspace, third)
    paused = _api(workspace, "GET", f"/flow_runs/{flow_run_id}")["state"]
    keyset = paused["state_details"]["run_input_keyset"]
    schema = _read_input(workspace, flow_run_id, keyset["schema"])
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]
    assert set(schema["required"]) == {"decision", "reason", "approver"}
    assert f"Promote {MODEL} v{version} to champion?" in _read_input(workspace, flow_run_id, keyset["description"])
    refused = _api(workspace, "POST", f"/flow_runs/{flow_run_id}/resume",
                   {"run_input": {"decision": "maybe", "reason": "x", "approver": "carol"}})
    assert refused["status"] == "REJECT"  # the form's schema is checked by the server: still paused
    resumed = _api(workspace, "POST", f"/flow_runs/{flow_run_id}/resume",
                   {"run_input": {"decision": "approve", "reason": "slices checked by hand", "approver": "carol"}})
    assert resumed["status"] == "ACCEPT", resumed
    out = _finish(third)
    assert "approval: approved by carol: slices checked by hand" in out and "alias champion (promoted)" in out
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == version
    row = registry.history(MODEL)[-1]  # what `paperline models history` prints
    assert (row.alias, row.action, row.actor, row.previous_version, row.new_version) == (
        "champion", "approve", "carol", None, version)
    assert row.reason == "approved by carol: slices checked by hand" and row.flow_run_id == flow_run_id
    registry.store.close()

    heard = webhook.wait_for({"paperline.model.rejected", "paperline.model.approved"})
    assert heard["paperline.model.rejected"]["payload"]["by"] == "dana"
    approved = heard["paperline.model.approved"]["payload"]
    assert (approved["by"], approved["version"], approved["previous_champion"]) == ("carol", version, None)


def _read_input(workspace, flow_run_id: str, key: str):
    """A flow run input's stored value (the form's schema, its description), as the dashboard reads it."""
    request = urllib.request.Request(
        workspace.env["PREFECT_API_URL"].rstrip("/") + f"/flow_runs/{flow_run_id}/input/{key}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
