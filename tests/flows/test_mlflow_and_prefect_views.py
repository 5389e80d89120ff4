"""What a user sees of a `paperline run` in the MLflow UI and the Prefect dashboard, read back from both services
after real runs of the smoke config (one module workspace: the second run is a cache hit)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import mlflow
import pytest

MODEL = "sbert_sts-smoke"
NAME = re.compile(r"sbert_sts-smoke-\d{8}-\d{6}")


@pytest.fixture(scope="module")
def runs(shared_workspace):
    """Two runs of `sbert_sts --config smoke` (the second from the cache): their MLflow runs, oldest first."""
    for _ in range(2):
        result = shared_workspace.paperline("run", "sbert_sts", "--config", "smoke")
        assert result.returncode == 0, result.stderr[-3000:]
    client = shared_workspace.client()
    experiment = client.get_experiment_by_name("sbert_sts")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def _prefect(ws, method: str, path: str, **body) -> dict | list:
    response = httpx.request(method, f"{ws.env['PREFECT_API_URL'].rstrip('/')}{path}", json=body or None, timeout=30)
    response.raise_for_status()
    return response.json()


def test_mlflow_shows_names_source_curve_and_plots(shared_workspace, runs):
    client = shared_workspace.client()
    first, second = runs
    names = [r.info.run_name for r in runs]
    assert all(NAME.fullmatch(n) for n in names) and names[0] != names[1], names
    tags = first.data.tags
    assert tags["mlflow.source.git.commit"] == tags["paperline.git_commit"].removesuffix("-dirty")
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"].endswith("run_project.py")
    # the learning curve: the loss and the learning rate at every logging step (smoke: steps 2 and 4)
    for key in ("train/loss", "train/learning_rate"):
        steps = sorted(m.step for m in client.get_metric_history(first.info.run_id, key))
        assert steps == [2, 4], (key, steps)
    # the cached rerun logs the same curve from the cached result
    assert len(client.get_metric_history(second.info.run_id, "train/loss")) == 2
    plots = {a.path for a in client.list_artifacts(first.info.run_id, "evaluation")}
    assert {"evaluation/stsb_dev_predicted_vs_gold.png", "evaluation/stsb_test_predicted_vs_gold.png"} <= plots
    # MLflow's Default experiment keeps its artifacts in the workspace, not in ./mlruns
    default = Path(client.get_experiment("0").artifact_location.removeprefix("file://"))
    assert default.is_relative_to(shared_workspace.root / ".paperline"), default


def test_the_registered_version_and_its_logged_model_are_linked_both_ways(shared_workspace, runs):
    client = shared_workspace.client()
    version = client.get_model_version(MODEL, "1")
    assert version.run_id == runs[0].info.run_id
    model_id = version.source.removeprefix("models:/")
    assert version.source == f"models:/{model_id}" and model_id.startswith("m-")  # "Source model" on its page
    logged = client.get_logged_model(model_id)
    assert logged.name == "sbert_sts" and logged.source_run_id == runs[0].info.run_id
    links = json.loads(logged.tags["mlflow.modelVersions"])  # the logged model's page: registered, not a button
    assert [(v["name"], str(v["version"])) for v in links] == [(MODEL, "1")]
    # its page's "Datasets used" and each metric's dataset: the STS-B input the scores were measured on
    scored = {m.key: m.dataset_name for m in logged.metrics if m.key.endswith("spearman")}
    assert scored and all(name == "stsb:train+dev+test" for name in scored.values()), scored


def test_the_model_has_a_real_signature_and_refuses_integers(shared_workspace, runs):
    mlflow.set_tracking_uri(shared_workspace.tracking_uri)
    try:
        info = mlflow.models.get_model_info(f"models:/{MODEL}/1")
        (output,) = info.signature.outputs.inputs
        assert (str(output.type), tuple(output.shape)) == ("float32", (-1, 384))
        assert info.saved_input_example_info is not None
        served = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
        assert served.predict(["a plane is taking off"]).shape == (1, 384)
        with pytest.raises(mlflow.exceptions.MlflowException):
            served.predict([1, 2])
    finally:
        mlflow.set_tracking_uri(None)


def test_prefect_shows_the_run_name_tags_and_per_project_artifacts(shared_workspace, runs):
    for run in runs:
        flow_run = _prefect(shared_workspace, "GET", f"/flow_runs/{run.data.tags['paperline.flow_run_id']}")
        assert flow_run["name"] == run.info.run_name  # one stamp for both
        assert {"project:sbert_sts", "config:smoke"} <= set(flow_run["tags"])
    keys = {a["key"] for a in _prefect(shared_workspace, "POST", "/artifacts/filter",
                                       artifacts={"key": {"any_": ["sbert-sts-data-gate", "sbert-sts-run-summary",
                                                                   "data-gate", "run-summary"]}})}
    assert keys == {"sbert-sts-data-gate", "sbert-sts-run-summary"}
