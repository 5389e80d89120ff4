"""What an MLflow run of paperline logs: params, metrics, dataset inputs, reports, tables and the model.

The flow decides *when* to log; this module (with `paperline.ops.tracking.views`) knows *how*: no flow calls
MLflow itself. The client and its one-line errors are `paperline.ops.tracking.client`; every tag name is in
`paperline.ops.tracking.tags`.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paperline.core.requirements import pinned_requirements
from paperline.data.datasets import DatasetRef
from paperline.ops.services import outages
from paperline.ops.tracking import tags
from paperline.ops.tracking.client import TrackingError, access, artifact_access
from paperline.project.interface import Evaluation, GeneratedData, TrainedModel


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

    with tempfile.TemporaryDirectory() as tmp, artifact_access(f"'{artifact_dir}'"):
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        mlflow.log_artifacts(tmp, artifact_dir)


def log_tables(tables: dict[str, dict[str, list]]) -> None:
    import mlflow

    with artifact_access("tables"):
        for name, columns in tables.items():
            mlflow.log_table(data=columns, artifact_file=f"{name}.json")


def log_model(model: TrainedModel, name: str = "model", metrics: dict[str, float] | None = None) -> str:
    """Log the trained model to the active run in its flavor, as a logged model called `name` (the project's);
    returns the URI to register. A sentence-transformers model gets a signature (strings in, a float32 vector of
    its dimension out) and an input example; a pyfunc its spec's input example (its schema is its type hint).
    `metrics` (the evaluation's) are linked to the logged model with the dataset each was measured on."""
    import mlflow

    from paperline.ops.tracking.views import embedding_signature

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

    from paperline.ops.tracking import views as run_views

    with access("log the run's metrics and tags"):
        mlflow.log_metrics(evaluation.metrics)
        mlflow.log_metrics(model.metrics)
        mlflow.set_tags({**{f"{tags.TRAIN_NOTE_PREFIX}{k}": str(v) for k, v in model.notes.items()}, **evaluation.tags})
    # a result cached before these fields existed has neither attribute
    run_views.log_history(getattr(model, "history", None) or [])
    with artifact_access("'evaluation'"):
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
        mlflow.set_tag(tags.gate_passed(name), str(gate.passed))


# ---- the run itself: what the flows open, tag and close (they never call MLflow themselves) --------------------


@contextlib.contextmanager
def start_run(experiment_id: str, run_name: str, run_tags: dict[str, str]) -> Iterator[Any]:
    """A new MLflow run, active inside the block; ended FINISHED on leaving it, FAILED if an exception leaves it."""
    import mlflow

    with access("start a run"):
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags)
    try:
        yield run
    except BaseException:
        with outages.tolerate(outages.MLFLOW):  # a server that is gone: the next run or `paperline doctor` ends it
            mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run()


@contextlib.contextmanager
def resume_run(run_id: str, nested: bool = False) -> Iterator[Any]:
    """An existing run (a sweep's trial, created before it was submitted), active inside the block."""
    import mlflow

    with mlflow.start_run(run_id=run_id, nested=nested) as run:
        yield run


def create_child_run(client, experiment_id: str, parent_run_id: str, run_name: str, run_tags: dict[str, str]) -> str:
    """A run under `parent_run_id` (the MLflow UI nests it), created now and left open; returns its id."""
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={**run_tags, "mlflow.parentRunId": parent_run_id})
    return run.info.run_id


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    with access("log the run's parameters"):
        mlflow.log_params(params)


def log_metrics(values: dict[str, float]) -> None:
    import mlflow

    with access("log the run's metrics"):
        mlflow.log_metrics(values)


def log_run_metrics(values: dict[str, float]) -> None:
    """Metrics of the active run that are not its model's (the champion's numbers, the differences): MLflow 3's
    fluent `log_metrics` would link them to the run's logged model, whose page would then list the champion's
    numbers as the candidate's."""
    import time

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    with access("log the run's metrics"):
        mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id,
                                        metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])


def log_config(cfg, upstream: dict | None = None) -> None:
    """The resolved config, flattened to `section.key` params, and the version of every upstream model."""
    from paperline.core.config import flatten

    log_params(flatten(cfg))
    if upstream:
        log_params({f"upstream.{role}.version": model.version for role, model in upstream.items()})


def set_tags(values: dict[str, str]) -> None:
    """Tags on the active run (names from paperline.ops.tracking.tags)."""
    import mlflow

    with access("tag the run"):
        mlflow.set_tags(values)


def set_status(status: str) -> None:
    """How the active run ended for paperline (`tags.STATUS`: registered, cached, gate-failed, failed, ...)."""
    set_tags({tags.STATUS: status})


def record_error(error: BaseException, status: str = "failed") -> None:
    """The active run's status and the first 4,000 characters of what ended it (MLflow's tag limit is 5,000);
    skipped when the tracking server is gone (the next run or `paperline doctor` closes the run)."""
    with outages.tolerate(outages.MLFLOW):
        set_tags({tags.STATUS: status, tags.ERROR: (str(error) or type(error).__name__)[:4000]})


def end_run_failed() -> None:
    """End the active run as FAILED (a gate that stopped it, a sweep with no trial left)."""
    import mlflow

    mlflow.end_run(status="FAILED")


def mark_failed(client, run_id: str, error: str) -> None:
    """A run that died before (or while) its own process could say so: FAILED with its error, whatever state it
    was left in."""
    client.set_tag(run_id, tags.STATUS, "failed")
    client.set_tag(run_id, tags.ERROR, error[:4000])
    if client.get_run(run_id).info.status != "FAILED":
        client.set_terminated(run_id, status="FAILED")


def log_text(text: str, artifact_file: str) -> None:
    import mlflow

    with artifact_access(f"'{artifact_file}'"):
        mlflow.log_text(text, artifact_file)
