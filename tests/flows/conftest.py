"""Fixtures for end-to-end runs: a repository copy, its workspace, and one local Prefect server per session.

Runs go through the real `paperline` command (a subprocess, as a user types it): real Prefect, MLflow on
SQLite in the copy's workspace (or PostgreSQL), DVC pulling from the team remote, and the GX data gate.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from repo_copy import BIN, make_repo_copy

from paperline.ops.services.prefect_server import ensure_local_server, stop_local_server

PAPERLINE = BIN / "paperline"


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One local Prefect server for every flow test (starting one costs ~15 s; runs then reuse it)."""
    home = tmp_path_factory.mktemp("prefect-home")
    # Not the user's 4200, and one port per pytest-xdist worker (gw0: 4290, gw1: 4291): a worker that found
    # another's server on a shared port would lose it when that worker's session ends.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    os.environ["PAPERLINE_PREFECT_PORT"] = str(4290 + int(worker or 0))
    url = ensure_local_server(home, timeout=300)  # a fresh database's migrations took over 120 s on a loaded machine
    yield url, home
    stop_local_server(home)


class Workspace:
    """A repository copy and the environment that points `paperline` at it."""

    def __init__(self, root: Path, prefect_api: tuple[str, Path], **env: str):
        self.root = root
        url, home = prefect_api
        self.env = {**os.environ, "PAPERLINE_ROOT": str(root), "PREFECT_API_URL": url, "PREFECT_HOME": str(home),
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
        self.env.pop("MLFLOW_TRACKING_URI", None) if "MLFLOW_TRACKING_URI" not in env else None

    def paperline(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(PAPERLINE), *args], cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    @property
    def tracking_uri(self) -> str:
        return self.env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root / '.paperline' / 'mlflow.db'}"

    @property
    def store_url(self) -> str:
        return self.env.get("PAPERLINE_STORE_URL") or f"sqlite:///{self.root / '.paperline' / 'paperline.db'}"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


@pytest.fixture
def make_workspace(tmp_path, prefect_api):
    """A factory of workspaces, each a fresh repository copy; keyword arguments are environment variables."""
    return lambda **env: Workspace(make_repo_copy(tmp_path / "repo"), prefect_api, **env)


@pytest.fixture
def workspace(make_workspace):
    return make_workspace()


@pytest.fixture(scope="module")
def shared_workspace(tmp_path_factory, prefect_api):
    """One repository copy for a whole test module: runs in it share the registry and the cache, so a test
    that only inspects a smoke run reuses the run another test made (a cache hit) instead of training again."""
    return Workspace(make_repo_copy(tmp_path_factory.mktemp("shared") / "repo"), prefect_api)


# ---- a team server on loopback: an S3 stand-in (moto) and MLflow's basic-auth server on PostgreSQL -----------
# Both listen on 127.0.0.1 only, on free ports; every wait is bounded; both stop at the end of the session.

import configparser  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from repo_copy import REPO  # noqa: E402

S3_KEY, S3_SECRET = "paperline-test-key", "paperline-test-secret"  # moto accepts any; never real credentials


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_http(url: str, process: subprocess.Popen, seconds: float, what: str, log: Path) -> None:
    """Until `url` answers at all (any HTTP status), at most `seconds`, about two tries a second."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds * 2) + 1):
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    _stop(process)
    pytest.fail(f"{what} did not answer {url} within {seconds:.0f} s: {log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn and gunicorn run workers), SIGKILL after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # start_new_session: the server and its workers form one group that _stop ends together
    with log.open("w") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _require(module: str) -> None:
    """The team-server tests need the `s3` and `auth` extras (in `.[test]`); CI must have them."""
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed; `make setup` installs the test extras")
        pytest.skip(f"{module} is not installed; `pip install -c constraints.txt -e '.[test]'`")


@dataclass
class S3Store:
    """The S3 stand-in: its endpoint and the environment a client needs for it."""

    endpoint: str
    key: str = S3_KEY
    secret: str = S3_SECRET

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY,
                            aws_secret_access_key=S3_SECRET, region_name="us-east-1")

    def new_bucket(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object under `prefix`: key -> size."""
        found: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
        return found


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> S3Store:
    """`moto_server` on 127.0.0.1 and a free port: an S3 API in one process, for DVC and MLflow's artifacts."""
    _require("moto")
    port, log = free_port(), tmp_path_factory.mktemp("moto") / "moto.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    process = _start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env, log)
    endpoint = f"http://127.0.0.1:{port}"
    _wait_for_http(endpoint, process, 60, "moto_server", log)
    yield S3Store(endpoint)
    _stop(process)


@dataclass
class TeamServer:
    """A running `mlflow server --app-name basic-auth`: PostgreSQL backend, artifacts proxied to a bucket."""

    url: str
    bucket: str
    admin: tuple[str, str]
    s3: S3Store

    def request(self, method: str, path: str, payload: dict | None = None,
                auth: tuple[str, str] | None = None) -> tuple[int, dict]:
        """One REST call; returns (status, JSON body or {})."""
        import base64
        import json

        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                return response.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as error:
            return error.code, {}

    def create_user(self, name: str, password: str) -> None:
        status, _ = self.request("POST", "/api/2.0/mlflow/users/create",
                                 {"username": name, "password": password}, auth=self.admin)
        assert status == 200, f"creating user {name} answered {status}"

    def login_env(self, user: str | None, password: str | None) -> dict[str, str]:
        """The environment of a `paperline` user of this server (no S3 credentials: artifacts go through it)."""
        env = {"MLFLOW_TRACKING_URI": self.url}
        if user:
            env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password or ""}
        return env


@pytest.fixture
def workspace_at(prefect_api):
    """A factory of workspaces of an existing repository copy (runs in it share data and caches)."""
    return lambda root, **env: Workspace(root, prefect_api, **env)


@pytest.fixture(scope="session")
def team_mlflow_server(tmp_path_factory, moto_s3, new_postgres_database) -> TeamServer:
    """MLflow as a team runs it: `mlflow server --app-name basic-auth` with its tracking and its users in two
    PostgreSQL databases, and `--serve-artifacts --artifacts-destination s3://<bucket>/mlflow` at moto; the
    auth config is infra/mlflow-auth.ini with the test database. Started once per session (about 20 s)."""
    _require("flask_wtf")  # mlflow[auth]
    _require("boto3")
    psycopg2_url = lambda url: url.replace("postgresql://", "postgresql+psycopg2://", 1)  # noqa: E731
    tracking_db, auth_db = new_postgres_database(), new_postgres_database()
    folder = tmp_path_factory.mktemp("mlflow-server")
    config = configparser.ConfigParser()
    config.read(REPO / "infra" / "mlflow-auth.ini")
    config["mlflow"]["database_uri"] = psycopg2_url(auth_db)
    with (folder / "auth.ini").open("w") as out:
        config.write(out)
    bucket = moto_s3.new_bucket("mlflow")
    admin = ("admin", uuid.uuid4().hex)
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MLFLOW_TRACKING_", "AWS_"))} | moto_s3.env | {
        "MLFLOW_S3_ENDPOINT_URL": moto_s3.endpoint,
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,  # basic-auth's CSRF protection needs a fixed key
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the server runs uvicorn by name
    }
    cmd = [str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
           "--backend-store-uri", psycopg2_url(tracking_db),
           "--serve-artifacts", "--artifacts-destination", f"s3://{bucket}/mlflow",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = folder / "mlflow-server.log"
    process = _start(cmd, env, log)
    url = f"http://127.0.0.1:{port}"
    _wait_for_http(f"{url}/health", process, 180, "mlflow server", log)
    yield TeamServer(url=url, bucket=bucket, admin=admin, s3=moto_s3)
    _stop(process)


@pytest.fixture(scope="module")
def mlflow_server_on_postgres(tmp_path_factory, new_postgres_database) -> str:
    """A plain `mlflow server` (no login) on a fresh PostgreSQL database, artifacts proxied to a folder: the
    tracking server of a team that needs no accounts; returns its URL. One uvicorn worker, as the team server
    above: with more, uvicorn kills a worker that misses its health-check ping on a loaded machine."""
    backend = new_postgres_database().replace("postgresql://", "postgresql+psycopg2://", 1)
    folder = tmp_path_factory.mktemp("mlflow-on-postgres")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")} | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", backend, "--serve-artifacts",
           "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    log = folder / "mlflow-server.log"
    process = _start(cmd, env, log)
    url = f"http://127.0.0.1:{port}"
    _wait_for_http(f"{url}/health", process, 180, "mlflow server", log)
    yield url
    _stop(process)
