"""`paperline monitor <model>@champion --reference <dataset> --current <dataset or folder>`: has what the model
meets drifted from what it was made for?

Both sides are sampled (seeded reservoir sampling, at most `max_rows` texts each: the cost is bounded whatever
the corpus), embedded by the model version the alias names, and compared by `paperline.ml.drift` (the method,
its threshold and its calibration are documented there). Each check is an MLflow run in the
`paperline-monitoring` experiment, keyed by model, reference and current (`paperline.monitor.key`): its metric
`drift_score`, the verdict, the HTML report (`drift_report.html`) and the result as JSON. The runs of one key are
the metric's history, shown with every check; the flow emits `paperline.model.drift-detected` when the verdict
is drift, which a deployment trigger can turn into a retrain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from paperline.core.settings import Settings
from paperline.data.corpus import CorpusSpec, corpus_rows, folder_rows, sample
from paperline.data.datasets import dataset_ref, resolve_data_version
from paperline.ops.production.defaults import DEFAULT_BACKEND, DEFAULT_MAX_ROWS
from paperline.ops.production.encode import ModelRef, resolve_model, sentence_encoder
from paperline.project.dataset_readers import dataset_readers


EXPERIMENT = "paperline-monitoring"
SEED = 0
HISTORY = 10  # checks shown with each new one


@dataclass
class MonitorResult:
    model: ModelRef
    reference: str
    current: str
    drift: object  # paperline.ml.drift.DriftResult
    run_id: str
    html: str
    history: list[tuple[str, float, bool]] = field(default_factory=list)  # (when, score, drifted), oldest first

    @property
    def drifted(self) -> bool:
        return bool(self.drift.drifted)

    @property
    def lines(self) -> list[str]:
        verdict = "DRIFT" if self.drifted else "no drift"
        out = [f"{self.current} against {self.reference} under {self.model.describe()}: {verdict} "
               f"({self.drift.method} {self.drift.score:.4f}, threshold {self.drift.threshold:.4f})"]
        if len(self.history) > 1:
            out.append("history: " + ", ".join(f"{when} {score:.3f}{'*' if hit else ''}"
                                               for when, score, hit in self.history) + "  (* drift)")
        return out


def texts_of(settings: Settings, spec: str, max_rows: int) -> tuple[str, list[str]]:
    """A seeded sample of at most `max_rows` texts of a dataset[:split] in data/, or of a folder of .txt files."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return str(folder), [text for _, text in sample(folder_rows(folder), max_rows, SEED)]
    corpus = CorpusSpec.parse(spec)
    version = resolve_data_version(settings.root)
    ref = dataset_ref(version, corpus.dataset, dataset_readers(settings.projects_dir).kind(corpus.dataset))
    return corpus.describe(), [text for _, text in sample(corpus_rows(ref, corpus), max_rows, SEED)]


def check_drift(settings: Settings, client, model_spec: str, reference: str, current: str,
                max_rows: int = DEFAULT_MAX_ROWS, progress=print) -> MonitorResult:
    """Embed both samples with the model, test for drift, and record the check in MLflow."""
    import json

    import mlflow

    from paperline.ml.drift import drift_report_html, embedding_drift
    from paperline.ops.tracking import tags
    from paperline.ops.tracking.client import experiment_id

    model = resolve_model(client, model_spec)
    reference_name, reference_texts = texts_of(settings, reference, max_rows)
    current_name, current_texts = texts_of(settings, current, max_rows)
    progress(f"embedding {len(reference_texts)} texts of {reference_name} and {len(current_texts)} of "
             f"{current_name} with {model.describe()}")
    encode = sentence_encoder(model, DEFAULT_BACKEND, settings.workspace)
    drift = embedding_drift(encode(reference_texts), encode(current_texts), seed=SEED, max_rows=max_rows)
    title = f"Embedding drift: {current_name} against {reference_name} ({model.describe()})"
    html = drift_report_html(drift, title=title, reference_name=reference_name, current_name=current_name,
                             examples={f"{current_name}: the texts least like the reference":
                                       [current_texts[i] for i in drift.least_reference_like],
                                       f"{reference_name}: a few texts": reference_texts[:5]})
    key = f"{model.name}|{reference_name}|{current_name}"
    experiment = experiment_id(client, EXPERIMENT, settings.artifact_root)
    with mlflow.start_run(experiment_id=experiment,
                          run_name=f"drift-{model.name}-{current_name}".replace("/", "-")[:200]) as run:
        mlflow.set_tags({tags.MONITOR_MODEL: model.name, tags.MONITOR_MODEL_VERSION: model.version,
                         tags.MONITOR_KEY: key, tags.MONITOR_DRIFTED: str(drift.drifted).lower()})
        mlflow.log_params({"model": model.uri, "reference": reference_name, "current": current_name,
                           "max_rows": max_rows, "method": drift.method, "threshold": drift.threshold})
        mlflow.log_metrics({"drift_score": float(drift.score), "drifted": float(drift.drifted),
                            "reference_rows": len(reference_texts), "current_rows": len(current_texts)})
        mlflow.log_text(html, "drift_report.html")
        mlflow.log_text(json.dumps(drift.to_dict(), indent=1, default=str), "drift.json")
    past = client.search_runs([experiment], filter_string=f"tags.`{tags.MONITOR_KEY}` = '{key}'",
                              order_by=["attributes.start_time DESC"], max_results=HISTORY)
    history = [(time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.info.start_time / 1000)),
                r.data.metrics.get("drift_score", float("nan")), r.data.tags.get(tags.MONITOR_DRIFTED) == "true")
               for r in reversed(past)]
    return MonitorResult(model, reference_name, current_name, drift, run.info.run_id, html, history)
