"""MLflow tracking: one run per pipeline run, with params, metrics, dataset inputs, reports and the model.

The flow decides *when* to log; this module knows *how*. It never sets a tracking URI at import time: the
caller passes `Settings`, whose URI honours MLFLOW_TRACKING_URI and defaults to SQLite in the workspace.
"""

from __future__ import annotations

import json
import logging
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from paperline.core.errors import PaperlineError
from paperline.core.requirements import pinned_requirements
from paperline.core.settings import Settings
from paperline.data.datasets import DatasetRef
from paperline.project.interface import Evaluation, TrainedModel


class TrackingError(PaperlineError):
    """MLflow cannot be reached or refused a write; the message says what to check."""


def check_reachable(tracking_uri: str) -> None:
    """Fail fast, before any training, when the tracking server does not answer."""
    if tracking_uri.startswith(("http://", "https://")):
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


def connect(settings: Settings):
    """Point the fluent API at the workspace's tracking store; returns a client on the same store."""
    import mlflow
    from mlflow import MlflowClient

    check_reachable(settings.tracking_uri)
    # MLflow announces its one-off schema migrations at INFO on stderr; they are not the user's concern.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def experiment_id(client, name: str, artifact_root: str) -> str:
    """The experiment for a project, created with its artifacts under the workspace (not ./mlruns)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=f"{artifact_root.rstrip('/')}/{name}")


def log_dataset(ref: DatasetRef, splits: list[str], context: str, remote: str) -> None:
    """Record the dataset as an MLflow input whose digest is the DVC md5 (the dataset version)."""
    import mlflow
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    # The source says where the bytes come from: the DVC remote, addressed by the data version.
    source = HTTPDatasetSource(url=f"dvc://{remote}#data/{ref.name}@{ref.md5}")
    dataset = MetaDataset(source=source, name=f"{ref.name}:{'+'.join(splits)}", digest=ref.md5[:36])
    mlflow.log_input(dataset, context=context, tags={"kind": ref.kind, "dvc_md5": ref.md5})


def log_text_files(files: dict[str, str], artifact_dir: str) -> None:
    """Log in-memory reports (markdown, HTML, JSON) as files of the active run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        mlflow.log_artifacts(tmp, artifact_dir)


def log_tables(tables: dict[str, dict[str, list]]) -> None:
    import mlflow

    for name, columns in tables.items():
        mlflow.log_table(data=columns, artifact_file=f"{name}.json")


def log_model(model: TrainedModel) -> str:
    """Log the trained model to the active run in its flavor; returns the URI to register."""
    import mlflow

    if model.flavor == "sentence_transformers":
        from sentence_transformers import SentenceTransformer

        info = mlflow.sentence_transformers.log_model(
            SentenceTransformer(str(model.path), device="cpu"),
            name="model",
            pip_requirements=pinned_requirements(["sentence-transformers", "transformers", "torch"]),
        )
    elif model.flavor == "pyfunc":
        info = mlflow.pyfunc.log_model(name="model", **model.serving.log_model_kwargs())
    else:  # TrainedModel refuses any other flavor when it is made; this is a guard for new flavors
        raise TrackingError(f"cannot log a model of flavor '{model.flavor}'")
    return info.model_uri


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def log_results(model: TrainedModel, evaluation: Evaluation) -> None:
    """A run's results: the evaluation's metrics, tags, files and tables, the training metrics, and the
    training notes (device, precision, a chosen setting) as `train.<name>` tags."""
    import mlflow

    mlflow.log_metrics(evaluation.metrics)
    mlflow.log_metrics(model.metrics)
    mlflow.set_tags({**{f"train.{k}": str(v) for k, v in model.notes.items()}, **evaluation.tags})
    for path in evaluation.artifacts.values():
        mlflow.log_artifact(str(path), "evaluation")
    log_tables(evaluation.tables)


def log_gate(gate) -> None:
    """The data gate's report (markdown, HTML, JSON) and verdict on the active run."""
    import mlflow

    log_text_files({"data_gate.md": gate.to_markdown(), "data_gate.html": gate.to_html(),
                    "data_gate.json": json_text(gate.to_dict())}, "data_gate")
    mlflow.set_tag("paperline.gate_passed", str(gate.passed))
