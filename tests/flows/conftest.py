"""Fixtures for end-to-end runs: a repository copy, its workspace, and one local Prefect server per session.

Runs go through the real `paperline` command (a subprocess, as a user types it): real Prefect, MLflow on
SQLite in the copy's workspace (or PostgreSQL), DVC pulling from the team remote, and the GX data gate.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from repo_copy import BIN, make_repo_copy

from paperline.ops.prefect_server import ensure_local_server, stop_local_server

PAPERLINE = BIN / "paperline"


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One local Prefect server for every flow test (starting one costs ~15 s; runs then reuse it)."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PAPERLINE_PREFECT_PORT"] = "4290"  # not the user's 4200
    url = ensure_local_server(home)
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
