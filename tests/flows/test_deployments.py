"""infra/prefect.yaml deploys on a real Prefect server, with the flow's real parameters, through `paperline deploy`
(which first creates the work pools of infra/pools/pools.yaml from their templates and adds a deployment per
project config); a real process worker, started elsewhere without PAPERLINE_ROOT, runs one."""

import os
import re
import shutil
import signal
import subprocess
import time
import uuid

from repo_copy import BIN, REPO

from paperline.project.discovery import discover

# Not test_work_pools' `cpu`: the worker started here must take only this test's runs, and theirs none of ours.
POOL = "cpu-deploy-e2e"


def test_every_deployment_registers_on_the_server(workspace):
    env = {**workspace.env, "COLUMNS": "300"}
    shutil.copytree(REPO / "infra", workspace.root / "infra")
    only_cpu = workspace.paperline("deploy", "--pool", "cpu", timeout=300)
    assert only_cpu.returncode == 0, only_cpu.stdout[-3000:] + only_cpu.stderr[-3000:]
    assert "work pool cpu (process)" in only_cpu.stdout and "gpu" not in only_cpu.stdout
    deploy = workspace.paperline("deploy", timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    prefect = str(BIN / "prefect")
    for name, config in [("sbert-sts", "default"), ("sbert-sts-nli-then-sts", "nli_then_sts"),
                         ("sbert-sts-smoke", "smoke"), ("sbert-sts-gpu-k8s", "default"),
                         ("sbert-sts-gpu-docker", "default")]:
        shown = subprocess.run([prefect, "deployment", "inspect", f"paperline-run/{name}"], cwd=workspace.root,
                               env=env, capture_output=True, text=True, timeout=120, check=False)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "'project_name': 'sbert_sts'" in shown.stdout and f"'config_name': '{config}'" in shown.stdout
    bad = workspace.paperline("deploy", "--pool", "nope")
    assert bad.returncode == 2 and "no deployment in infra/prefect.yaml uses work pool 'nope'" in bad.stderr


def _client(env):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Client:
        def __enter__(self):
            self._settings = temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return _Client()


def start_worker(workspace, pool: str, tmp_path):
    """A real process worker of `pool`, started elsewhere (tmp_path/worker) without PAPERLINE_ROOT, polling every
    2 s: (its environment, the process, its log). The caller stops it with `_stop` in a `finally`."""
    env = {k: v for k, v in workspace.env.items() if k != "PAPERLINE_ROOT"} | {"PREFECT_WORKER_QUERY_SECONDS": "2"}
    (tmp_path / "worker").mkdir()
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
                                  cwd=tmp_path / "worker", env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    return env, worker, log


def _stop(worker: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(worker.pid, sig)
            worker.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def test_a_worker_runs_a_deployment_from_the_cli_runs_cache_and_a_missing_checkout_fails_in_one_line(
        workspace, tmp_path):
    # infra/ with the process pool renamed to this test's own
    shutil.copytree(REPO / "infra", workspace.root / "infra")
    pools, spec = workspace.root / "infra" / "pools" / "pools.yaml", workspace.root / "infra" / "prefect.yaml"
    pools.write_text(pools.read_text().replace("\ncpu:\n", f"\n{POOL}:\n"))
    spec.write_text(spec.read_text().replace("work_pool: {name: cpu}", f"work_pool: {{name: {POOL}}}"))
    workspace.env.pop("PREFECT_LOCAL_STORAGE_PATH", None)  # each side finds the cache from the checkout alone

    first = workspace.paperline("run", "sbert_sts", "--config", "smoke")
    assert first.returncode == 0 and "registered" in first.stdout, first.stdout[-3000:] + first.stderr[-3000:]
    deployed = workspace.paperline("deploy", "--pool", POOL, timeout=300)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert "paperline-run/sbert-sts-smoke" in deployed.stdout and "paperline-run/trans-encoder-smoke" in deployed.stdout
    assert (workspace.root / ".paperline" / "prefect.generated.yaml").is_file()

    missing = tmp_path / "moved-away" / "paperline"
    with _client(workspace.env) as client:
        from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

        found = client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL])))
        configs = {(d.parameters.get("project_name"), d.parameters.get("config_name")) for d in found}
        wanted = {(name, config) for name, project in discover(workspace.root / "projects").items()
                  for config in project.configs}
        assert wanted <= configs, wanted - configs  # every config of every project, on the process pool
        smoke = client.read_deployment_by_name("paperline-run/sbert-sts-smoke")
        assert smoke.pull_steps == [{"paperline_flows.deployments.enter_checkout": {
            "directory": str(workspace.root)}}]  # recorded at deploy time, no variable read on the worker
        # the same deployment recorded in a checkout that is gone by the time it runs
        gone = client.create_deployment(
            flow_id=smoke.flow_id, name=f"checkout-gone-{uuid.uuid4().hex[:8]}", entrypoint=smoke.entrypoint,
            parameters=smoke.parameters, work_pool_name=POOL,
            pull_steps=[{"paperline_flows.deployments.enter_checkout": {"directory": str(missing)}}])
        gone_run = client.create_flow_run_from_deployment(gone).id

    env, worker, log = start_worker(workspace, POOL, tmp_path)
    try:
        started = subprocess.run([str(BIN / "prefect"), "deployment", "run", "paperline-run/sbert-sts-smoke"],
                                 cwd=tmp_path / "worker", env=env, capture_output=True, text=True, timeout=120,
                                 check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        smoke_run = uuid.UUID(re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1))
        deadline, states = time.monotonic() + 480, {}
        with _client(workspace.env) as client:
            while time.monotonic() < deadline:
                states = {run: client.read_flow_run(run).state for run in (smoke_run, gone_run)}
                if all(state and state.is_final() for state in states.values()) or worker.poll() is not None:
                    break
                time.sleep(2)
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[smoke_run])))
    finally:
        _stop(worker)
    logged = log.read_text()[-4000:]

    assert states[smoke_run].is_completed(), (states, logged)
    # the deployment's run used `paperline run`'s result cache (the data gate's too, Settings.results_dir; its
    # key also covers the row counts the first run recorded, so here it is checked again): nothing retrained
    cached = {run.name.rsplit("-", 1)[0]: run.state.name for run in tasks}
    assert {cached.get(step) for step in ("train", "evaluate")} == {"Cached"}, cached
    client = workspace.client()
    (version,) = client.search_model_versions("name='sbert_sts-smoke'")  # registered once, by the CLI's run
    experiment = client.get_run(version.run_id).info.experiment_id
    (run,) = client.search_runs([experiment], f"tags.`paperline.flow_run_id` = '{smoke_run}'")
    assert run.info.status == "FINISHED" and run.data.tags["paperline.cache_hit"] == "True"

    assert states[gone_run].is_failed(), (states[gone_run], logged)
    message = states[gone_run].message
    assert "\n" not in message and f"the deployment's checkout {missing} does not exist on this machine" in message
    assert "git_clone pull step" in message
