"""The MLflow client: connecting to the workspace's tracking store, and its errors as one line each.

It never sets a tracking URI at import time: the
caller passes `Settings`, whose URI honours MLFLOW_TRACKING_URI and defaults to SQLite in the workspace.

Against a team server (`MLFLOW_TRACKING_URI=http(s)://...`) two things differ from the local default:
experiments are created without an artifact location unless PAPERLINE_ARTIFACT_ROOT names one, so the server's
own (proxied) artifact store holds the artifacts, not the client's disk; and the server may ask for a login
(MLflow's `basic-auth` app). A 401 or 403 from MLflow, in preflight or during a run, is one `TrackingError`
line that names the server and says what to do, never a traceback: the client `connect` hands out
(`AccessCheckedClient`) does it for every client call, `access(...)` for the fluent API's.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import inspect
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paperline.core.errors import PaperlineError
from paperline.core.settings import Settings
from paperline.ops.tracking import tags


class TrackingError(PaperlineError):
    """MLflow cannot be reached or refused a write; the message says what to check."""


def is_server(tracking_uri: str) -> bool:
    """A tracking server (REST), as opposed to a database or a folder the client writes itself."""
    return tracking_uri.startswith(("http://", "https://"))


class TrackingUrlError(TrackingError):
    """MLFLOW_TRACKING_URI is malformed, needs a driver that is not installed, or names no database."""

    exit_code = 2  # the user typed it (paperline.core.errors.USAGE)


def _hide_password(uri: str) -> str:
    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", uri)


def check_database(tracking_uri: str) -> None:
    """A database tracking URI (postgresql://, mysql://, ...): its driver is importable and one connection opens
    within seconds. MLflow itself would retry for minutes and end in a traceback."""
    from sqlalchemy import create_engine, exc
    from sqlalchemy.engine import make_url

    shown = _hide_password(tracking_uri)
    try:
        url = make_url(tracking_uri)
        dialect = url.get_dialect()
    except (exc.ArgumentError, exc.NoSuchModuleError, ValueError) as error:
        raise TrackingUrlError(f"MLFLOW_TRACKING_URI {shown} is not a URL MLflow can use ({error}); use "
                               "http(s)://host:port for a server or a SQLAlchemy URL such as "
                               "postgresql+psycopg2://user@host/db") from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        hint = (f"write {url.set(drivername=url.get_backend_name() + '+psycopg2').render_as_string()} (psycopg2 "
                "is installed)" if url.get_backend_name() == "postgresql" else "install its driver")
        raise TrackingUrlError(f"MLFLOW_TRACKING_URI {shown} needs the database driver '{error.name}', which is "
                               f"not installed; {hint}") from None
    timeout = {"connect_timeout": 5} if url.get_backend_name() in ("postgresql", "mysql", "mariadb") else {}
    engine = create_engine(url, connect_args=timeout)
    try:
        engine.connect().close()
    except exc.DBAPIError as error:
        reason = str(error.orig or error).strip().splitlines()[0]
        cls = TrackingUrlError if "does not exist" in reason else TrackingError
        raise cls(f"MLflow's database at {shown} cannot be reached ({reason}); check MLFLOW_TRACKING_URI, or unset "
                  "it to track to the workspace's SQLite file") from None
    finally:
        engine.dispose()


def check_reachable(tracking_uri: str) -> None:
    """Fail fast, before any training, when the tracking server or database does not answer."""
    if "://" in tracking_uri and not is_server(tracking_uri) and not tracking_uri.startswith(("sqlite:", "file:")):
        check_database(tracking_uri)
        return
    if is_server(tracking_uri):
        try:
            with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow at {tracking_uri} is unreachable ({reason}); start it (`mlflow server`) or unset "
                "MLFLOW_TRACKING_URI to track to the workspace's SQLite file"
            ) from None
        raise TrackingError(f"MLflow at {tracking_uri} answered its health check with an error")


def _login() -> tuple[str | None, str | None]:
    """The user and password the MLflow client sends, read as MLflow reads them: MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD, else its credentials file ~/.mlflow/credentials (how a docker pool's container gets
    them: a mounted file, docs/work-pools.md). Reading only the variables refused a login the client would send."""
    from mlflow.utils.credentials import read_mlflow_creds

    creds = read_mlflow_creds()
    return creds.username, creds.password


def _auth_headers() -> dict[str, str]:
    """The credentials the MLflow client sends: user and password (variables or file), else a token."""
    user, password = _login()
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    return {}


def access_error(tracking_uri: str, status: int, action: str, grant: str = "") -> TrackingError:
    """One line for a 401 (no or wrong login) or a 403 (no permission to `action`) from MLflow, saying what to do:
    `grant` names the permission to ask for (default: EDIT on the experiment or registered model, from an admin)."""
    user, _ = _login()
    login = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials) to your account "
             "on that server (an MLflow admin creates it)")
    if status == 401 and not user:
        return TrackingError(f"MLflow at {tracking_uri} requires a login (401 Unauthorized); {login}")
    if status == 401:
        return TrackingError(f"MLflow at {tracking_uri} refused the login of user '{user}' (401 Unauthorized: "
                             f"wrong user name or password); {login}")
    who = f"user '{user}'" if user else "anonymous requests"
    grant = grant or "ask an MLflow admin for permission (EDIT on the experiment or registered model)"
    return TrackingError(f"MLflow at {tracking_uri} does not allow {who} to {action} (403 Forbidden); {grant}, or "
                         "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account that has it")


def check_access(tracking_uri: str) -> None:
    """On a tracking server, one authenticated read (search experiments) with the client's credentials: an
    auth-enabled server (`mlflow server --app-name basic-auth`) answers 401 to no or wrong credentials here,
    in preflight, instead of in the middle of a run. A server without auth answers 200."""
    if not is_server(tracking_uri):
        return
    request = urllib.request.Request(f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1",
                                     headers=_auth_headers())
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise access_error(tracking_uri, exc.code, "search experiments") from None
        raise TrackingError(f"MLflow at {tracking_uri} answered {exc.code} {exc.reason} to a search of "
                            "experiments; is MLFLOW_TRACKING_URI the address of an MLflow server?") from None
    except OSError as exc:
        raise TrackingError(f"MLflow at {tracking_uri} is unreachable ({getattr(exc, 'reason', exc)}); start it "
                            "(`mlflow server`) or unset MLFLOW_TRACKING_URI") from None


def _status(error: BaseException) -> int | None:
    """The HTTP status of an error from MLflow's REST client or its artifact proxy client, if it has one."""
    response = getattr(error, "response", None)  # requests.HTTPError (artifact uploads through the proxy)
    if response is not None and getattr(response, "status_code", None):
        return response.status_code
    status = getattr(error, "get_http_status_code", None)  # MlflowException
    return status() if callable(status) else None


def refused_status(error: BaseException) -> int | None:
    """401 or 403 when `error` is MLflow (or its artifact proxy) refusing a login or a permission, else None.

    MLflow's REST client raises a RestException whose error_code is UNAUTHENTICATED or PERMISSION_DENIED for a
    JSON error body, and an MlflowException with the code derived from the HTTP status for a plain-text one (what
    the basic-auth app answers); both give that status back from get_http_status_code()."""
    import requests
    from mlflow.exceptions import MlflowException

    status = _status(error) if isinstance(error, (MlflowException, requests.HTTPError)) else None
    return status if status in (401, 403) else None


@contextlib.contextmanager
def access(action: str, tracking_uri: str | None = None, hint: str = "", grant: str = "") -> Iterator[None]:
    """Turn a 401/403 from MLflow inside the block into one TrackingError line (a traceback otherwise)."""
    try:
        yield
    except Exception as error:
        status = refused_status(error)
        if status is None:
            raise
        import mlflow

        message = str(access_error(tracking_uri or mlflow.get_tracking_uri(), status, action, grant))
        raise TrackingError(f"{message}{hint}") from None


def artifact_access(what: str):
    """`access` for an artifact upload to the active run: a refusal names where the run's artifacts go."""
    import mlflow

    run = mlflow.active_run()
    where = run.info.artifact_uri if run else "the run's artifact location"
    hint = ""
    if run and not where.startswith(f"mlflow-artifacts:/{run.info.experiment_id}/"):
        # MLflow's basic-auth app judges a proxied artifact path by its first segment, the experiment id: a
        # PAPERLINE_ARTIFACT_ROOT such as mlflow-artifacts:/paperline is refused for every non-admin user.
        hint = ("; the experiment stores artifacts at a location the server refuses (set by "
                "PAPERLINE_ARTIFACT_ROOT when it was created): unset PAPERLINE_ARTIFACT_ROOT so new experiments "
                "use the server's own artifact store, and rename or delete that experiment in the MLflow UI")
    return access(f"write {what} to {where}", hint=hint)


# ---- the client connect() hands out ----------------------------------------------------------------------------
# The one place where a refusal of MLflow's basic-auth app to a client call (a wrong password, a READ-only user
# moving another user's alias, registering into a model someone else owns) becomes a TrackingError that names the
# server, the user, what was refused and which permission to ask for, instead of a RestException traceback from
# wherever the call was made (`promote`, `rollback`, `approve`, `doctor`, a run's registration). Callers need no
# `access(...)` block of their own for client calls; MLflow's fluent API (`mlflow.log_metric`,
# `mlflow.register_model`) is not a client call and keeps its own `access` blocks. Every other error and every
# return value passes through as MLflow gives it; a refused call changed nothing on the server, so the caller's
# own rollback (the audit row's transaction, a half-made version's deletion) runs as for any other failure.

# What a refused call was asked to do, in the user's words; any other method is named by its own words.
_ACTIONS = {
    "create_registered_model": "create the registered model '{name}'",
    "create_model_version": "register a new version of the model '{name}'",
    "set_registered_model_alias": "point the alias '{alias}' of the model '{name}' at version {version}",
    "delete_registered_model_alias": "remove the alias '{alias}' of the model '{name}'",
    "set_model_version_tag": "tag version {version} of the model '{name}'",
    "update_model_version": "update version {version} of the model '{name}'",
    "delete_model_version": "delete version {version} of the model '{name}'",
    "delete_registered_model": "delete the registered model '{name}'",
}


def _arguments(method: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    try:
        return inspect.signature(method).bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):  # a signature MLflow does not expose: the words of the name still say it
        return {}


def describe(method_name: str, arguments: dict[str, Any]) -> str:
    """`set_registered_model_alias(name='m', alias='champion', version='2')` -> "point the alias 'champion' of the
    model 'm' at version 2"; an unknown method -> its name in words, with the model or run it was about."""
    template = _ACTIONS.get(method_name)
    if template is not None:
        try:
            return template.format(**arguments)
        except (KeyError, IndexError):
            pass
    words = method_name.replace("_", " ")
    subject = next((arguments[key] for key in ("name", "run_id", "experiment_id", "model_id")
                    if isinstance(arguments.get(key), str)), None)
    return f"{words} '{subject}'" if subject else words


def grant_for(method_name: str, arguments: dict[str, Any]) -> str:
    """Who to ask for which permission (MLflow's basic-auth: READ to see, EDIT to change, MANAGE to delete a
    registered model's version, alias or tag, or the model)."""
    name = arguments.get("name")
    if not isinstance(name, str) or not ("registered_model" in method_name or "model_version" in method_name):
        return ""  # runs and experiments: access_error's own advice (EDIT on the experiment)
    needed = ("READ" if method_name.startswith(("get_", "search_")) else
              "MANAGE" if method_name.startswith("delete_") else "EDIT")
    return (f"ask the owner of the registered model '{name}' (the user who created it has MANAGE) or an MLflow "
            f"admin for {needed} permission on it")


class AccessCheckedClient:
    """An `mlflow.MlflowClient` whose calls answer a 401/403 with one TrackingError line; all else as MLflow's."""

    def __init__(self, client: Any):
        self._client = client

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._client, attribute)
        if attribute.startswith("_") or not callable(value):
            return value

        @functools.wraps(value)
        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except Exception as error:
                status = refused_status(error)
                if status is None:
                    raise
                arguments = _arguments(value, args, kwargs)
                raise access_error(self._client.tracking_uri, status, describe(attribute, arguments),
                                   grant_for(attribute, arguments)) from None

        return checked

    def __repr__(self) -> str:
        return f"AccessCheckedClient({self._client.tracking_uri})"


def connect(settings: Settings):
    """Point the fluent API at the workspace's tracking store; returns a client on the same store, whose every call
    answers a 401/403 with one TrackingError line (AccessCheckedClient)."""
    return AccessCheckedClient(_client(settings))


def _client(settings: Settings):
    import mlflow
    from mlflow import MlflowClient

    check_reachable(settings.tracking_uri)
    check_access(settings.tracking_uri)
    # MLflow announces its one-off schema migrations at INFO on stderr; they are not the user's concern.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    if not settings.tracking_uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    # A client creates (migrates) a new SQLite database when it is made; two commands that start at once in a new
    # workspace would both run MLflow's schema migrations and one would fail half-way: one at a time, under a
    # file lock (held for the seconds a migration takes, released on exit or death).
    import fcntl

    database = Path(settings.tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.parent / f".{database.name}.init.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not database.exists() and settings.artifact_root:
                # The database is made here with the workspace's artifact root, so that MLflow's `Default`
                # experiment (created with it) keeps its artifacts in the workspace, not in ./mlruns of the cwd.
                from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

                SqlAlchemyStore(settings.tracking_uri, settings.artifact_root)
            return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI: on the tracking server, or where `mlflow ui` serves a local store."""
    base = tracking_uri.rstrip("/") if is_server(tracking_uri) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def experiment_id(client, name: str, artifact_root: str | None) -> str:
    """The experiment for a project. With an artifact root (the workspace's folder by default, or
    PAPERLINE_ARTIFACT_ROOT) it is created with its artifacts under `<root>/<name>`, not ./mlruns; with none
    (a tracking server and no PAPERLINE_ARTIFACT_ROOT) the server's own artifact store is used, proxied to
    object storage by `mlflow server --artifacts-destination`.

    On a tracking server an existing experiment is also checked for write access, with a tag write that needs
    the same permission (EDIT) as the run the flow creates next: a user without it gets one line here, not a
    403 traceback from inside MLflow's fluent API.
    """
    from mlflow.exceptions import MlflowException

    uri = client.tracking_uri
    with access(f"use the experiment '{name}'", uri):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            location = {} if artifact_root is None else {"artifact_location": f"{artifact_root.rstrip('/')}/{name}"}
            try:
                return client.create_experiment(name, **location)
            except MlflowException as error:
                # Two first runs of a project at once both found no experiment: the one that lost uses the other's.
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
    if is_server(uri):
        with access(f"write runs to the experiment '{name}'", uri):  # says which experiment, not its id
            getattr(client, "_client", client).set_experiment_tag(experiment.experiment_id, tags.PROJECT, name)
    return experiment.experiment_id


