"""The docker work pool for real: a Docker engine on this host, the job image built here with no registry
(infra/docker/build-local-image.sh), `prefect worker start --type docker` running a submitted smoke run in a
container, and the model registered on the team MLflow server the container reaches.

Marked `docker` and deselected unless asked for (`pytest -m docker tests/flows/test_docker_pool.py`): it needs a
running engine at DOCKER_HOST (docs/work-pools.md, "A docker worker on a CPU host") and builds the image first
(minutes; PAPERLINE_DOCKER_IMAGE names an image built already instead).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid

import pytest
from repo_copy import BIN, REPO, SHARED

pytestmark = pytest.mark.docker

MODEL = "sbert_sts-smoke"
DEPLOYMENT = "paperline-run/sbert-sts-smoke-docker"
USER = ("carol", "carol-docker-pass")  # a user of the test's own MLflow server, never a real one
CONTAINER_HOME = "/root"  # the image's user is root (infra/docker/Dockerfile): MLflow reads ~/.mlflow there


@pytest.fixture(scope="module")
def docker_engine():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # docker-py raises DockerException or a requests error when nothing answers
        pytest.fail(f"no Docker engine answers ({os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}): "
                    f"{exc}; start one as docs/work-pools.md says")
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(docker_engine):
    """The job image: PAPERLINE_DOCKER_IMAGE if given, else built from this checkout now."""
    given = os.environ.get("PAPERLINE_DOCKER_IMAGE")
    if given:
        docker_engine.images.get(given)  # ImageNotFound: the variable names an image this engine lacks
        return given
    built = subprocess.run([str(REPO / "infra" / "docker" / "build-local-image.sh"), "paperline:local"],
                           capture_output=True, text=True, timeout=2400, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return "paperline:local"


@pytest.fixture(scope="module")
def deployed(shared_workspace):
    shutil.copytree(REPO / "infra", shared_workspace.root / "infra", dirs_exist_ok=True)
    result = shared_workspace.paperline("deploy", "--pool", "cpu-docker", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert DEPLOYMENT in result.stdout
    return shared_workspace


def test_a_docker_worker_runs_the_smoke_deployment_in_the_image_and_the_model_is_registered(
        docker_engine, image, deployed, team_mlflow_server, new_postgres_database, tmp_path):
    team_mlflow_server.create_user(*USER)
    # The credentials reach the container as a mounted file, as docs/work-pools.md says, never in the deployment
    credentials = tmp_path / "mlflow-credentials"
    credentials.write_text(f"[mlflow]\nmlflow_tracking_username = {USER[0]}\nmlflow_tracking_password = {USER[1]}\n")
    job_variables = {
        "image": image,
        "env": {"PAPERLINE_ROOT": "/opt/paperline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "MLFLOW_TRACKING_URI": team_mlflow_server.url, "PAPERLINE_STORE_URL": new_postgres_database()},
        # the image's checkout pulls data/ from its DVC remote (../../shared/dvc-remote of /opt/paperline/.dvc)
        "volumes": [f"{SHARED / 'dvc-remote'}:/opt/shared/dvc-remote:ro",
                    f"{credentials}:{CONTAINER_HOME}/.mlflow/credentials:ro"],
    }
    submitted = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", DEPLOYMENT,
         *[arg for key, value in job_variables.items() for arg in ("--job-variable", f"{key}={json.dumps(value)}")]],
        cwd=deployed.root, env=deployed.env, capture_output=True, text=True, timeout=120, check=False)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    flow_run_id = submitted.stdout.split("UUID:")[1].split()[0]

    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", "cpu-docker", "--type", "docker",
                             "--run-once"], cwd=tmp_path, env=deployed.env, capture_output=True, text=True,
                            timeout=1200, check=False)
    logs = worker.stdout[-4000:] + worker.stderr[-4000:]
    assert worker.returncode == 0, logs

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: deployed.env["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(uuid.UUID(flow_run_id))
    assert flow_run.state.is_completed(), (flow_run.state, logs)
    assert flow_run.job_variables["image"] == image
    # it ran in a container of the image, which exited and was removed (auto_remove): none is left behind
    assert re.search(r"Docker container '\S+' has status '(exited|removing)'", worker.stdout + worker.stderr), logs
    assert docker_engine.containers.list(all=True, filters={"ancestor": image}) == []

    from mlflow import MlflowClient

    os.environ |= {"MLFLOW_TRACKING_USERNAME": team_mlflow_server.admin[0],
                   "MLFLOW_TRACKING_PASSWORD": team_mlflow_server.admin[1]}
    try:
        client = MlflowClient(tracking_uri=team_mlflow_server.url, registry_uri=team_mlflow_server.url)
        version = client.get_model_version_by_alias(MODEL, "champion")
        run = client.get_run(version.run_id)
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    # the server answers 401 to a request without credentials: the container logged in with the mounted file
    assert run.data.tags["paperline.flow_run_id"] == flow_run_id and run.info.status == "FINISHED"
