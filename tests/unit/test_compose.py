"""infra/compose.yaml (the team stack) and infra/mlflow-auth.ini, checked without a Docker daemon.

`docker compose config` validates the file against the Compose spec where the docker CLI has the compose
plugin (it needs no daemon); the checks below run everywhere: the services of docs/team-server.md, images
pinned by version, ports bound to loopback, the variables each service needs, healthchecks and the start order.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "compose.yaml"
CONSTRAINTS = INFRA.parent / "constraints.txt"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.lower()] = version
    return pins


def _text(value) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


def _docker_compose_config() -> subprocess.CompletedProcess | None:
    """`docker compose config` (no daemon needed) where the docker CLI has the compose plugin; None elsewhere (this
    machine: Debian ships only the old v1 `docker-compose`), where the structural checks are the validation."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        return None
    env = {"MLFLOW_ADMIN_PASSWORD": "x", "MLFLOW_SECRET_KEY": "x", "PATH": "/usr/bin:/bin"}  # the required ones
    return subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                          text=True, timeout=60, env=env)


def test_the_stack_has_every_service_with_a_pinned_image(compose):
    checked = _docker_compose_config()
    assert checked is None or checked.returncode == 0, checked.stderr
    services = compose["services"]
    assert {"postgres", "minio", "buckets", "mlflow", "prefect", "worker"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"
        assert re.search(r"\d+\.\d+", tag) or re.search(r"\d{4}-\d\d-\d\d", tag), f"{name}: {image} floats"


def test_ports_are_bound_to_loopback(compose):
    published = {name: s.get("ports", []) for name, s in compose["services"].items()}
    assert {"postgres", "minio", "mlflow", "prefect"} <= {name for name, ports in published.items() if ports}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not bound to 127.0.0.1"
    assert "127.0.0.1:5000:5000" in published["mlflow"] and "127.0.0.1:4200:4200" in published["prefect"]


def test_each_service_names_what_it_needs(compose):
    services = compose["services"]
    mlflow = services["mlflow"]
    assert {"MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_AUTH_CONFIG_PATH",
            "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(mlflow["environment"])
    command = _text(mlflow["command"])
    for part in ("--app-name basic-auth", "--backend-store-uri postgresql+psycopg2://", "--serve-artifacts",
                 "--artifacts-destination s3://", "--host 0.0.0.0"):
        assert part in command, part
    assert any(v.startswith("./mlflow-auth.ini:") for v in mlflow["volumes"])
    # the server runs the MLflow and boto3 versions the client is pinned to
    pins = _pins()
    assert f'"mlflow[auth]=={pins["mlflow"]}"' in command and f"boto3=={pins['boto3']}" in command

    assert "PREFECT_API_DATABASE_CONNECTION_URL" in services["prefect"]["environment"]
    worker = services["worker"]
    assert {"PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "PAPERLINE_STORE_URL", "PAPERLINE_ROOT", "AWS_ACCESS_KEY_ID"} <= set(worker["environment"])
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "prefect worker start --pool cpu" in _text(worker["command"])
    assert "CREATE DATABASE mlflow_auth;" in compose["configs"]["databases"]["content"]


def test_healthchecks_and_start_order(compose):
    services = compose["services"]
    for name in ("postgres", "minio", "mlflow", "prefect", "worker"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            wanted = "service_completed_successfully" if dependency == "buckets" else "service_healthy"
            assert condition == {"condition": wanted}, f"{name} -> {dependency}: {condition}"
    assert set(services["mlflow"]["depends_on"]) == {"postgres", "buckets"}
    assert set(services["worker"]["depends_on"]) == {"prefect", "mlflow"}


def test_the_auth_config_is_what_mlflow_reads(monkeypatch):
    """MLflow's own reader takes infra/mlflow-auth.ini: PostgreSQL for users, READ by default, no password in it."""
    pytest.importorskip("flask_wtf")  # mlflow[auth]
    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(INFRA / "mlflow-auth.ini"))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    config = read_auth_config()
    assert config.database_uri.startswith("postgresql+psycopg2://") and config.database_uri.endswith("/mlflow_auth")
    assert config.default_permission == "READ"
    assert config.admin_username == "admin" and config.admin_password is None
