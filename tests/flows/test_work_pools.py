"""GPU work pools: the shipped base job templates on a real Prefect server, offline rendering, and a real worker.

Docker and Kubernetes workers need a daemon or a cluster, so their jobs are rendered offline with the workers'
own code (prefect-kubernetes / prefect-docker `from_template_and_values` and `prepare_for_flow_run`) and checked:
the Kubernetes Job with `kubernetes-validate --strict`, the Docker container's host config with docker-py. The
process pool runs a deployment for real: `paperline run --on` submits, `prefect worker start --run-once` runs it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid

import pytest
import yaml
from repo_copy import BIN, REPO

MODEL = "sbert_sts-smoke"


@pytest.fixture(scope="module")
def deployed(shared_workspace):
    """The workspace with infra/ copied in and `paperline deploy` done (pools from the templates, deployments)."""
    shutil.copytree(REPO / "infra", shared_workspace.root / "infra", dirs_exist_ok=True)
    result = shared_workspace.paperline("deploy", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "work pool gpu-k8s (kubernetes)" in result.stdout and "paperline-run/sbert-sts-gpu-k8s" in result.stdout
    return shared_workspace


def _client(ws):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Client:
        def __enter__(self):
            self._settings = temporary_settings({PREFECT_API_URL: ws.env["PREFECT_API_URL"]})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return _Client()


def _job_variables(name: str) -> dict:
    spec = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
    (deployment,) = [d for d in spec["deployments"] if d["name"] == name]
    return deployment["work_pool"]["job_variables"]


def _template(kind: str) -> dict:
    return json.loads((REPO / "infra" / "pools" / f"{kind}.json").read_text())


def test_pools_come_from_the_shipped_templates_and_bad_job_variables_are_refused(deployed):
    from prefect.exceptions import PrefectHTTPStatusError

    with _client(deployed) as client:
        for name, kind in [("gpu-k8s", "kubernetes"), ("gpu-docker", "docker")]:
            pool = client.read_work_pool(name)
            assert pool.type == kind and pool.base_job_template == _template(kind)
        assert client.read_work_pool("cpu").type == "process"
        gpu = client.read_deployment_by_name("paperline-run/sbert-sts-gpu-k8s")
        assert gpu.job_variables["gpu_count"] == 1 and gpu.work_pool_name == "gpu-k8s"
        assert gpu.pull_steps[0]["paperline_flows.deployments.enter_checkout"]["directory"] == "/opt/paperline"
        cpu = client.read_deployment_by_name("paperline-run/sbert-sts")
        # the checkout is recorded at deploy time: a worker needs no PAPERLINE_ROOT
        assert cpu.pull_steps[0]["paperline_flows.deployments.enter_checkout"]["directory"] == str(deployed.root)

        for bad in ({"gpu_count": -1}, {"gpu_count": "two"}, {"shm_size": 8}, {"tolerations": "all"}):
            with pytest.raises(PrefectHTTPStatusError) as refused:  # on a deployment
                client.create_deployment(flow_id=gpu.flow_id, name=f"bad-{uuid.uuid4().hex[:8]}",
                                         work_pool_name="gpu-k8s", job_variables=bad,
                                         entrypoint="paperline_flows.run_project:run_project")
            assert refused.value.response.status_code == 422, bad
            with pytest.raises(PrefectHTTPStatusError) as refused:  # on a flow run
                client.create_flow_run_from_deployment(gpu.id, job_variables=bad)
            assert refused.value.response.status_code == 422, bad
        assert client.create_flow_run_from_deployment(gpu.id, job_variables={"gpu_count": 2}).id  # a good one
        with pytest.raises(PrefectHTTPStatusError):  # the docker pool's schema too
            client.create_flow_run_from_deployment(
                client.read_deployment_by_name("paperline-run/sbert-sts-gpu-docker").id,
                job_variables={"gpu_count": -2})


def _render(configuration_class, kind: str, deployment: str, ws):
    """The job a worker would submit, rendered with the worker's own code (no daemon, no cluster)."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: ws.env["PREFECT_API_URL"]}):  # block/variable lookups: none here
        configuration = asyncio.run(configuration_class.from_template_and_values(
            _template(kind), _job_variables(deployment)))
    configuration.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="gpu-check"))
    return configuration


def test_the_kubernetes_gpu_job_renders_and_passes_kubernetes_validate_strict(deployed, tmp_path):
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    job = _render(KubernetesWorkerJobConfiguration, "kubernetes", "sbert-sts-gpu-k8s", deployed).job_manifest
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"] == "registry.example.com/paperline:gpu"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    (shm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert {"mountPath": "/dev/shm", "name": "dshm"} in container["volumeMounts"]
    assert container["envFrom"] == [{"secretRef": {"name": "paperline-credentials", "optional": True}}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PAPERLINE_ROOT"] == "/opt/paperline" and "PREFECT__FLOW_RUN_ID" in env
    # The worker submits with generateName and the API server picks the name; kubernetes-validate needs one
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "validate"
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    checked = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", str(manifest)], capture_output=True,
                             text=True, timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_docker_gpu_container_renders_to_a_valid_host_config(deployed):
    import docker
    from prefect_docker.worker import DockerWorkerJobConfiguration

    configuration = _render(DockerWorkerJobConfiguration, "docker", "sbert-sts-gpu-docker", deployed)
    kwargs = configuration.container_create_kwargs
    assert kwargs["device_requests"] == [{"count": 1, "capabilities": [["gpu"]]}] and kwargs["shm_size"] == "8g"
    assert configuration.image == "registry.example.com/paperline:gpu"
    # docker-py builds the daemon's HostConfig offline: a malformed device request or size fails here
    host = docker.types.HostConfig(version="1.45", device_requests=kwargs["device_requests"],
                                   shm_size=kwargs["shm_size"], binds=configuration.volumes)
    assert host["DeviceRequests"][0]["Count"] == 1 and host["ShmSize"] == 8 * 1024 ** 3


def test_a_process_worker_runs_a_submitted_deployment_run_and_the_model_is_registered(deployed, tmp_path):
    submitted = deployed.paperline("run", "sbert_sts", "--config", "smoke", "--on", "sbert-sts-smoke")
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert "submitted to paperline-run/sbert-sts-smoke" in submitted.stdout and "/runs/flow-run/" in submitted.stdout
    flow_run_id = submitted.stdout.split("/runs/flow-run/")[1].split()[0]

    # The worker starts elsewhere, without PAPERLINE_ROOT: the deployment's pull step finds the checkout.
    env = {k: v for k, v in deployed.env.items() if k != "PAPERLINE_ROOT"}
    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", "cpu", "--type", "process",
                             "--run-once"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=480,
                            check=False)
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]

    with _client(deployed) as client:
        state = client.read_flow_run(uuid.UUID(flow_run_id)).state
    assert state.is_completed(), (state, worker.stdout[-3000:], worker.stderr[-3000:])
    version = deployed.client().get_model_version_by_alias(MODEL, "champion")
    run = deployed.client().get_run(version.run_id)
    assert run.data.tags["paperline.flow_run_id"] == flow_run_id and run.info.status == "FINISHED"
