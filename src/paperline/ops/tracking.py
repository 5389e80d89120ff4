"""MLflow tracking: one run per pipeline run, with params, metrics, dataset inputs, reports and the model.

The flow decides *when* to log; this module knows *how*. It never sets a tracking URI at import time: the
caller passes `Settings`, whose URI honours MLFLOW_TRACKING_URI and defaults to SQLite in the workspace.

Against a team server (`MLFLOW_TRACKING_URI=http(s)://...`) two things differ from the local default:
experiments are created without an artifact location unless PAPERLINE_ARTIFACT_ROOT names one, so the server's
own (proxied) artifact store holds the artifacts, not the client's disk; and the server may ask for a login
(MLflow's `basic-auth` app). A 401 or 403 from MLflow, in preflight or during a run, is one `TrackingError`
line that names the server and says what to do, never a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paperline.core.errors import PaperlineError
from paperline.core.requirements import pinned_requirements
from paperline.core.settings import Settings
from paperline.data.datasets import DatasetRef
from paperline.project.interface import Evaluation, GeneratedData, TrainedModel


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


def _auth_headers() -> dict[str, str]:
    """The credentials the MLflow client sends, from the same variables: user and password, else a token."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    return {}


def access_error(tracking_uri: str, status: int, action: str) -> TrackingError:
    """One line for a 401 (no or wrong login) or a 403 (no permission to `action`) from MLflow, saying what to do."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    login = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your account on that server "
             "(an MLflow admin creates it)")
    if status == 401 and not user:
        return TrackingError(f"MLflow at {tracking_uri} requires a login (401 Unauthorized); {login}")
    if status == 401:
        return TrackingError(f"MLflow at {tracking_uri} refused the login of user '{user}' (401 Unauthorized: "
                             f"wrong user name or password); {login}")
    who = f"user '{user}'" if user else "anonymous requests"
    return TrackingError(f"MLflow at {tracking_uri} does not allow {who} to {action} (403 Forbidden); ask an "
                         "MLflow admin for permission (EDIT on the experiment or registered model), or set "
                         "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account that has it")


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


@contextlib.contextmanager
def access(action: str, tracking_uri: str | None = None, hint: str = "") -> Iterator[None]:
    """Turn a 401/403 from MLflow inside the block into one TrackingError line (a traceback otherwise)."""
    try:
        yield
    except Exception as error:
        import requests
        from mlflow.exceptions import MlflowException

        status = _status(error) if isinstance(error, (MlflowException, requests.HTTPError)) else None
        if status not in (401, 403):
            raise
        import mlflow

        message = str(access_error(tracking_uri or mlflow.get_tracking_uri(), status, action))
        raise TrackingError(f"{message}{hint}") from None


def _artifacts(what: str):
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


def connect(settings: Settings):
    """Point the fluent API at the workspace's tracking store; returns a client on the same store."""
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
    uri = client.tracking_uri
    with access(f"use the experiment '{name}'", uri):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            location = {} if artifact_root is None else {"artifact_location": f"{artifact_root.rstrip('/')}/{name}"}
            return client.create_experiment(name, **location)
    if is_server(uri):
        with access(f"write runs to the experiment '{name}'", uri):
            client.set_experiment_tag(experiment.experiment_id, "paperline.project", name)
    return experiment.experiment_id


def log_dataset(ref: DatasetRef, splits: list[str], context: str, remote: str) -> None:
    """Record the dataset as an MLflow input whose digest is the DVC md5 (the dataset version)."""
    import mlflow
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    # The source says where the bytes come from: the DVC remote, addressed by the data version.
    source = HTTPDatasetSource(url=f"dvc://{remote}#data/{ref.name}@{ref.md5}")
    dataset = MetaDataset(source=source, name=f"{ref.name}:{'+'.join(splits)}", digest=ref.md5[:36])
    with access("log the dataset input of the run"):
        mlflow.log_input(dataset, context=context, tags={"kind": ref.kind, "dvc_md5": ref.md5})


def log_generated_dataset(data: GeneratedData) -> None:
    """Record a method's generated file as an MLflow input whose digest is its sha256 (its version)."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from paperline.data.datasets import read_frame

    assert data.sha256 is not None, "the platform fills sha256 once the file passed the gate"
    dataset = from_pandas(read_frame(Path(data.path), data.kind), source=Path(data.path).resolve().as_uri(),
                          name=f"{data.name}:{data.split}", digest=data.sha256[:36])
    with access("log the generated dataset input of the run"):
        mlflow.log_input(dataset, context="generated", tags={"kind": data.kind, "sha256": data.sha256})


def log_text_files(files: dict[str, str], artifact_dir: str) -> None:
    """Log in-memory reports (markdown, HTML, JSON) as files of the active run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp, _artifacts(f"'{artifact_dir}'"):
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        mlflow.log_artifacts(tmp, artifact_dir)


def log_tables(tables: dict[str, dict[str, list]]) -> None:
    import mlflow

    with _artifacts("tables"):
        for name, columns in tables.items():
            mlflow.log_table(data=columns, artifact_file=f"{name}.json")


def log_model(model: TrainedModel, name: str = "model", metrics: dict[str, float] | None = None) -> str:
    """Log the trained model to the active run in its flavor, as a logged model called `name` (the project's);
    returns the URI to register. A sentence-transformers model gets a signature (strings in, a float32 vector of
    its dimension out) and an input example; a pyfunc its spec's input example (its schema is its type hint).
    `metrics` (the evaluation's) are linked to the logged model with the dataset each was measured on."""
    import mlflow

    from paperline.ops.run_views import embedding_signature

    if model.flavor not in ("sentence_transformers", "pyfunc"):
        # TrainedModel refuses any other flavor when it is made; this is a guard for new flavors
        raise TrackingError(f"cannot log a model of flavor '{model.flavor}'")
    with access("log the model of the run"):
        if model.flavor == "sentence_transformers":
            from sentence_transformers import SentenceTransformer

            encoder = SentenceTransformer(str(model.path), device="cpu")
            signature, example = embedding_signature(encoder)
            info = mlflow.sentence_transformers.log_model(
                encoder, name=name, signature=signature, input_example=example,
                pip_requirements=pinned_requirements(["sentence-transformers", "transformers", "torch"]),
            )
        else:
            info = mlflow.pyfunc.log_model(name=name, **model.serving.log_model_kwargs())
        # MLflow links the run's metrics to the model without their dataset; these rows carry it
        for dataset, group in _metrics_by_dataset(metrics or {}):
            if dataset is not None:
                mlflow.log_metrics(group, dataset=dataset, model_id=info.model_id)
    return info.model_uri


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def log_results(model: TrainedModel, evaluation: Evaluation) -> None:
    """A run's results: the evaluation's metrics, tags, files and tables, predicted-vs-gold plots, the training
    metrics, the learning curve (`train/loss` per step), and the training notes (device, precision, a chosen
    setting) as `train.<name>` tags."""
    import mlflow

    from paperline.ops import run_views

    with access("log the run's metrics and tags"):
        mlflow.log_metrics(evaluation.metrics)
        mlflow.log_metrics(model.metrics)
        mlflow.set_tags({**{f"train.{k}": str(v) for k, v in model.notes.items()}, **evaluation.tags})
    # a result cached before these fields existed has neither attribute
    run_views.log_history(getattr(model, "history", None) or [])
    with _artifacts("'evaluation'"):
        for path in evaluation.artifacts.values():
            mlflow.log_artifact(str(path), "evaluation")
    run_views.log_predictions(getattr(evaluation, "predictions", None) or {})
    log_tables(evaluation.tables)


def _metrics_by_dataset(metrics: dict[str, float]) -> list[tuple[Any, dict[str, float]]]:
    """The evaluation's metrics grouped by the run's dataset input they were measured on (`stsb_test_spearman`
    on the `stsb:...` input, by its name), None for the rest: the logged model's page lists them under
    "Datasets used" and beside each metric."""
    import mlflow

    run = mlflow.active_run()
    inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs if run else []
    datasets = {d.dataset.name.split(":")[0]: d.dataset for d in inputs}
    grouped: dict[str | None, dict[str, float]] = {}
    for key, value in metrics.items():
        name = next((name for name in datasets if f"{name}_" in key), None)
        grouped.setdefault(name, {})[key] = value
    return [(datasets.get(name) if name else None, group) for name, group in grouped.items()]


def log_gate(gate, name: str = "data_gate") -> None:
    """The data gate's report (markdown, HTML, JSON) and verdict on the active run; `name` is the artifact folder
    and file stem (`generated_data_gate` for the gate over a method's generated data)."""
    import mlflow

    log_text_files({f"{name}.md": gate.to_markdown(), f"{name}.html": gate.to_html(),
                    f"{name}.json": json_text(gate.to_dict())}, name)
    with access("tag the run"):
        mlflow.set_tag(f"paperline.{name.removesuffix('data_gate')}gate_passed", str(gate.passed))
