"""Triggers instead of clocks, on a real Prefect server with a real process worker: a new teacher champion makes
the DSE student's deployment run, a new data version seen by the watcher makes the deployment of the one project
that reads the changed dataset run (and no other), and a redeploy keeps a schedule switched on as the dashboard
does it (through the API)."""

import shutil
import subprocess
import time

from repo_copy import BIN, REPO
from test_deployments import _client, _stop, start_worker

POOL = "cpu-triggers"  # this test's own pool: its worker takes only these runs


WATCHED = ("distilled-sentence-embedding-smoke", "uni-encoder-smoke", "sbert-sts-smoke", "cross-encoder-sts-smoke")


def _runs_of(client, deployment_name: str, seen=frozenset()):
    """This test's flow runs of a deployment: the session's Prefect server is shared with other tests, which
    deploy (and run) deployments of the same names."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    found = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])))
    return [run for run in found if run.id not in seen]


def test_a_promotion_and_a_new_data_version_trigger_the_deployments_downstream_and_redeploys_keep_schedules(
        workspace, tmp_path):
    shutil.copytree(REPO / "infra", workspace.root / "infra")
    pools, spec = workspace.root / "infra" / "pools" / "pools.yaml", workspace.root / "infra" / "prefect.yaml"
    pools.write_text(pools.read_text().replace("\ncpu:\n", f"\n{POOL}:\n"))
    # this test runs the watcher itself: the deployed one's 5-minute schedule stays off here
    spec.write_text(spec.read_text().replace("work_pool: {name: cpu}", f"work_pool: {{name: {POOL}}}")
                    .replace("active: true", "active: false"))

    teacher = workspace.paperline("run", "cross_encoder_sts", "--config", "smoke")
    assert teacher.returncode == 0, teacher.stdout[-3000:] + teacher.stderr[-3000:]
    first_look = workspace.paperline("data", "watch")
    assert first_look.returncode == 0 and "first look" in first_look.stdout, first_look.stdout + first_look.stderr
    deployed = workspace.paperline("deploy", "--pool", POOL, "--retrain-config", "smoke", timeout=600)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    with _client(workspace.env) as client:  # the dashboard's schedule toggle is this API call
        weekly = client.read_deployment_by_name("paperline-run/sbert-sts")
        (schedule,) = weekly.schedules
        assert not schedule.active and schedule.slug == "weekly-retrain"
        client.update_deployment_schedule(weekly.id, schedule.id, active=True)
        seen = frozenset(run.id for name in WATCHED for run in _runs_of(client, name))

    _, worker, log = start_worker(workspace, POOL, tmp_path)
    try:
        promoted = workspace.paperline("promote", "cross_encoder_sts-smoke", "1", "--force",
                                       "--reason", "a new teacher")
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert "no event sent" not in promoted.stdout

        # a new data version: 20 dialogue turns fewer (read by uni_encoder alone)
        turns = workspace.root / "data" / "dialogues" / "test.tsv"
        turns.write_text("".join(turns.read_text().splitlines(True)[:-20]))
        added = subprocess.run([str(BIN / "dvc"), "add", "data"], cwd=workspace.root, capture_output=True,
                               text=True, timeout=300)
        assert added.returncode == 0, added.stdout + added.stderr
        watched = workspace.paperline("data", "watch")
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert "dialogues: gate passed; retrains uni_encoder" in watched.stdout, watched.stdout

        wanted = WATCHED[:2]
        deadline, runs = time.monotonic() + 600, {}
        with _client(workspace.env) as client:
            while time.monotonic() < deadline and worker.poll() is None:
                runs = {name: _runs_of(client, name, seen) for name in wanted}
                if all(runs[n] and all(r.state and r.state.is_final() for r in runs[n]) for n in wanted):
                    break
                time.sleep(3)
            others = _runs_of(client, "sbert-sts-smoke", seen) + _runs_of(client, "cross-encoder-sts-smoke", seen)
    finally:
        _stop(worker)
    logged = log.read_text()[-4000:]
    for name in wanted:
        assert runs.get(name), (name, runs, logged)
        states = [r.state.name for r in runs[name]]
        assert "Completed" in states, (name, states, logged)
        # started by the deployment's trigger: an automation created the run, nobody pressed Run
        assert all(r.created_by and r.created_by.type == "AUTOMATION" for r in runs[name]), runs[name]
    assert runs["distilled-sentence-embedding-smoke"][0].parameters["config_name"] == "smoke"
    assert others == []  # projects that read no changed dataset and consume no moved champion did not run

    redeployed = workspace.paperline("deploy", "--pool", POOL, "--retrain-config", "smoke", timeout=600)
    assert redeployed.returncode == 0, redeployed.stdout[-3000:] + redeployed.stderr[-3000:]
    assert "deployment sbert-sts: schedule weekly-retrain kept on, as set on the server" in redeployed.stdout
    with _client(workspace.env) as client:
        (schedule,) = client.read_deployment_by_name("paperline-run/sbert-sts").schedules
        assert schedule.active
