"""What a run shows in the MLflow UI and the Prefect dashboard besides its numbers: a unique name, MLflow's own
source tags, the learning curve, predicted-vs-gold plots, a model signature with an input example, and
artifact keys that say which project they belong to.

No Prefect here (the flow applies the names and keys it gets from here); MLflow only inside the functions that log.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from paperline.ops.tracking.client import access, artifact_access

SOURCE_NAME = "flows/run_project.py"  # the flow that made the run: MLflow's "Source" column
SENTENCE_EXAMPLE = ["A man is playing a guitar.", "A woman is slicing an onion."]


def stamp(when: datetime | None = None) -> str:
    """UTC `yyyymmdd-HHMMSS`: the suffix that makes a run's name unique."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d-%H%M%S")


def run_name(project: str, config: str, when: datetime | None = None) -> str:
    """`<project>-<config>-<UTC yyyymmdd-HHMMSS>`: the MLflow run's and the Prefect flow run's name."""
    return f"{project}-{config}-{stamp(when)}"


def artifact_key(project: str, what: str) -> str:
    """A Prefect artifact key per project (`sbert-sts-data-gate`): Prefect allows lowercase letters, digits and
    dashes only, and one key shared by every project would mix their histories."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", f"{project}-{what}".lower())).strip("-")


def source_tags(git_commit: str) -> dict[str, str]:
    """MLflow's standard source tags (the UI's Source and Git commit): the flow, as a job, at the repository's
    commit. A `-dirty` suffix stays in `paperline.git_commit`; MLflow's tag holds the commit itself."""
    tags = {"mlflow.source.name": SOURCE_NAME, "mlflow.source.type": "JOB"}
    commit = git_commit.removesuffix("-dirty")
    if re.fullmatch(r"[0-9a-f]{7,64}", commit):
        tags["mlflow.source.git.commit"] = commit
    return tags


# ---- logging to the active run --------------------------------------------------------------------------------

# history key -> MLflow metric: a `train/` section of their own in the UI's charts, apart from the one-number
# `*_train_loss` summaries a method logs
CURVE_METRICS = {"loss": "train/loss", "learning_rate": "train/learning_rate", "epoch": "train/epoch",
                 "grad_norm": "train/grad_norm"}


def log_history(history: list[dict[str, float]]) -> int:
    """The training log as metrics with `step=`, one point per logging step (a learning curve); returns the
    number of points logged."""
    import time

    import mlflow
    from mlflow.entities import Metric

    run = mlflow.active_run()
    now = int(time.time() * 1000)
    points = [Metric(CURVE_METRICS[key], float(row[key]), now, int(row["step"]))
              for row in history for key in CURVE_METRICS if key in row]
    if points:
        with access("log the learning curve of the run"):
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=points)  # the client sends 1,000 a request
    return len(points)


def scatter_figure(name: str, gold: list[float], predicted: list[float]):
    """Predicted vs gold, one dot per row, with the Spearman correlation in the title."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from scipy.stats import spearmanr

    figure = Figure(figsize=(5, 4.5), dpi=100)
    axes = figure.subplots()
    axes.scatter(gold, predicted, s=8, alpha=0.5)
    rho = spearmanr(gold, predicted).statistic if len(gold) > 1 else float("nan")
    axes.set(xlabel="gold score", ylabel="predicted", title=f"{name}: predicted vs gold ({len(gold)} rows, "
             f"Spearman {100 * rho:.1f})")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def log_predictions(predictions: dict[str, dict[str, list[float]]]) -> list[str]:
    """A predicted-vs-gold scatter per evaluated split, as `evaluation/<name>_predicted_vs_gold.png`; returns
    the artifact paths."""
    import mlflow

    paths = []
    with artifact_access("evaluation plots"):
        for name, columns in predictions.items():
            path = f"evaluation/{name}_predicted_vs_gold.png"
            mlflow.log_figure(scatter_figure(name, columns["gold"], columns["predicted"]), path)
            paths.append(path)
    return paths


def embedding_signature(model: Any) -> tuple[Any, list[str]]:
    """(signature, input example) of a sentence-transformers model: a column of strings in, a float32 vector of
    the model's dimension per string out. Anything but strings (an integer) is refused at serving time."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    width = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # renamed
    dim = width() or -1
    signature = ModelSignature(inputs=Schema([ColSpec("string")]),
                               outputs=Schema([TensorSpec(np.dtype("float32"), (-1, dim))]))
    return signature, SENTENCE_EXAMPLE
