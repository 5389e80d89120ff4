"""What a run shows in MLflow and Prefect: names, source tags, the learning curve, plots, signatures, the link
between a registered version and its logged model, and where the `Default` experiment keeps its artifacts."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from paperline.ml.history import log_history, record_history, recording_history
from paperline.ops.tracking import views as run_views
from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.store.audit import AuditStore
from paperline.project.distributed_job import model_from_json, model_to_json
from paperline.project.interface import TrainedModel

# what sentence-transformers' trainer keeps in state.log_history: loss rows, then the end-of-training summary
TRAINER_LOG = [
    {"loss": 0.9, "grad_norm": 3.0, "learning_rate": 2e-5, "epoch": 0.5, "step": 2},
    {"loss": 0.7, "grad_norm": 2.5, "learning_rate": 1e-5, "epoch": 1.0, "step": 4},
    {"train_runtime": 1.2, "train_loss": 0.8, "epoch": 1.0, "step": 4},
]


def test_run_and_flow_run_names_are_unique_per_start_and_keys_are_prefect_safe():
    first = run_views.run_name("sbert_sts", "smoke", datetime(2026, 3, 1, 9, 5, 7, tzinfo=UTC))
    assert first == "sbert_sts-smoke-20260301-090507"
    assert run_views.run_name("sbert_sts", "smoke", datetime(2026, 3, 1, 9, 5, 8, tzinfo=UTC)) != first
    assert re.fullmatch(r"sbert_sts-smoke-\d{8}-\d{6}", run_views.run_name("sbert_sts", "smoke"))
    for project, key in [("sbert_sts", "sbert-sts-data-gate"), ("Matryoshka_2D", "matryoshka-2d-data-gate")]:
        assert run_views.artifact_key(project, "data-gate") == key
    assert run_views.artifact_key("trans_encoder", "cycles") == "trans-encoder-cycles"
    assert re.fullmatch(r"[a-z0-9-]+", run_views.artifact_key("a__b", "layer_grid"))


def test_source_tags_are_mlflows_own_with_the_bare_commit():
    commit = "0123456789abcdef0123456789abcdef01234567"
    tags = run_views.source_tags(f"{commit}-dirty")
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"].endswith("run_project.py")
    assert "mlflow.source.git.commit" not in run_views.source_tags("unknown")


def test_log_history_keeps_the_loss_rows_as_plain_numbers():
    history = log_history(TRAINER_LOG)
    assert history == [{"step": 2, "epoch": 0.5, "loss": 0.9, "learning_rate": 2e-5, "grad_norm": 3.0},
                       {"step": 4, "epoch": 1.0, "loss": 0.7, "learning_rate": 1e-5, "grad_norm": 2.5}]
    json.dumps(history)  # travels in cached results and the torchrun job's JSON


def test_recording_gathers_every_fit_with_steps_that_continue():
    record_history(log_history(TRAINER_LOG))  # outside a recording: nothing, no error
    with recording_history() as history:
        record_history(log_history(TRAINER_LOG))
        record_history(log_history(TRAINER_LOG))
        record_history(log_history(TRAINER_LOG), main_process=False)  # another rank's copy of the same steps
    assert [(row["step"], row["fit"]) for row in history] == [(2, 0), (4, 0), (6, 1), (8, 1)]


def test_build_model_puts_the_curve_of_every_fit_on_the_trained_model(tmp_path):
    from paperline.project.discovery import Project

    root = tmp_path / "curve_project"
    root.mkdir()
    (root / "method.py").write_text(textwrap.dedent(f"""
        from paperline.ml.history import log_history, record_history
        from paperline.project.interface import TrainedModel

        def train(cfg, data, ctx):  # two stages, as sbert_sts trains them, each a `fit`
            for _ in range(2):
                record_history(log_history({TRAINER_LOG!r}))
            return TrainedModel(path=ctx.workdir)
        """))
    from paperline.project.interface import RunContext

    model = Project(name="curve_project", root=root, card=None).build_model(None, None, RunContext(workdir=tmp_path))
    assert [row["step"] for row in model.history] == [2, 4, 6, 8]
    assert [row["loss"] for row in model.history] == [0.9, 0.7, 0.9, 0.7]
    # the torchrun job hands rank 0's model back as JSON: the curve comes with it
    assert model_from_json(json.loads(json.dumps(model_to_json(model)))).history == model.history


@pytest.fixture
def tracked(tmp_path, monkeypatch):
    """An active MLflow run on a SQLite store in tmp_path."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment = MlflowClient(uri).create_experiment("views", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        yield MlflowClient(uri), run.info.run_id
    mlflow.set_tracking_uri(None)


def test_the_curve_is_logged_per_step_and_the_predictions_as_a_scatter(tracked):
    client, run_id = tracked
    history = [{**row, "fit": 0} for row in log_history(TRAINER_LOG)]
    assert run_views.log_history(history) == 8
    losses = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(losses, key=lambda m: m.step)] == [(2, 0.9), (4, 0.7)]
    assert len(client.get_metric_history(run_id, "train/learning_rate")) == 2
    paths = run_views.log_predictions({"stsb_test": {"gold": [0.0, 2.5, 5.0], "predicted": [0.1, 0.4, 0.9]}})
    assert paths == ["evaluation/stsb_test_predicted_vs_gold.png"]
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} == set(paths)


def test_sts_evaluation_returns_the_predictions_it_ranked(tmp_path):
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer
    from tiny_models import tiny_sentence_transformer

    from paperline.data.kinds.scored_pairs import ScoredPair
    from paperline.ml.evaluation import sts_results

    model = SentenceTransformer(str(tiny_sentence_transformer(tmp_path)), device="cpu")
    sentences = ["a man plays a guitar", "a woman slices an onion", "a dog runs", "the sun is out",
                 "kids play football", "a plane takes off"]
    pairs = [ScoredPair(sentence1=a, sentence2=b, score=float(i % 6)) for i, (a, b) in
             enumerate(zip(sentences, sentences[1:] + sentences[:1]))]
    metrics, predictions = sts_results(model, {"test": pairs}, prefix="stsb")
    assert predictions["stsb_test"]["gold"] == [p.score for p in pairs]
    predicted = predictions["stsb_test"]["predicted"]
    assert len(predicted) == len(pairs) and all(-1.0 <= p <= 1.0 for p in predicted)
    assert metrics["stsb_test_spearman"] == pytest.approx(100 * spearmanr([p.score for p in pairs], predicted)[0],
                                                          abs=1e-3)


def test_a_sentence_transformer_is_logged_with_a_real_signature_and_refuses_integers(tracked, tmp_path):
    from tiny_models import HIDDEN, tiny_sentence_transformer

    from paperline.ops.tracking import runs as tracking

    client, _ = tracked
    uri = tracking.log_model(TrainedModel(path=tiny_sentence_transformer(tmp_path)), name="sbert_sts")
    logged = client.get_logged_model(uri.removeprefix("models:/"))
    assert logged.name == "sbert_sts"
    info = mlflow.models.get_model_info(uri)
    (output,) = info.signature.outputs.inputs  # a float32 vector of the model's width per sentence
    assert (str(output.type), tuple(output.shape)) == ("float32", (-1, HIDDEN))
    assert info.saved_input_example_info is not None
    served = mlflow.pyfunc.load_model(uri)
    assert served.predict(["a sentence"]).shape == (1, HIDDEN)
    with pytest.raises(mlflow.exceptions.MlflowException):
        served.predict([1, 2])


def test_a_registered_version_and_its_logged_model_point_at_each_other(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)  # as in a run (tracking.connect)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("views", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    logged = client.create_logged_model(experiment, name="sbert_sts", source_run_id=run.info.run_id)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    client.log_model_artifacts(logged.model_id, str(folder))
    client.finalize_logged_model(logged.model_id, "READY")
    store = AuditStore(f"sqlite:///{tmp_path}/audit.db")
    registry = ModelRegistry(client, store, actor="alice")
    for expected in ("1", "2"):
        version = registry.register(name="sbert_sts-smoke", model_uri=f"models:/{logged.model_id}",
                                    run_id=run.info.run_id, tags={})
        assert version == expected
        # the version page's "Source model" link (MLflow's SQL registry keeps no model_id: the source says it)
        assert client.get_model_version("sbert_sts-smoke", version).source == f"models:/{logged.model_id}"
        download = client.get_model_version_download_uri("sbert_sts-smoke", version)
        assert (Path(download.removeprefix("file://")) / "MLmodel").is_file()
    # the logged model's page: "registered as sbert_sts-smoke v1, v2", not "Not registered"
    links = json.loads(client.get_logged_model(logged.model_id).tags["mlflow.modelVersions"])
    assert [(v["name"], str(v["version"])) for v in links] == [("sbert_sts-smoke", "1"), ("sbert_sts-smoke", "2")]

    # a registration that fails after the link takes it back with the version it deletes
    def refuse(*args, **kwargs):
        raise RuntimeError("alias refused")

    monkeypatch.setattr(registry, "_move_alias", refuse)
    with pytest.raises(RuntimeError, match="alias refused"):
        registry.register(name="sbert_sts-smoke", model_uri=f"models:/{logged.model_id}", run_id=run.info.run_id,
                          tags={})
    links = json.loads(client.get_logged_model(logged.model_id).tags["mlflow.modelVersions"])
    assert [str(v["version"]) for v in links] == ["1", "2"]
    store.close()
    mlflow.set_tracking_uri(None)


def test_a_new_workspace_keeps_the_default_experiments_artifacts_inside_it(tmp_path, monkeypatch):
    from paperline.core.settings import Settings
    from paperline.ops.tracking.client import connect

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    workspace = tmp_path / "ws"
    settings = Settings(root=tmp_path, workspace=workspace, tracking_uri=f"sqlite:///{workspace}/mlflow.db",
                        store_url=f"sqlite:///{workspace}/paperline.db", artifact_root=(workspace / "mlartifacts").as_uri(),
                        prefect_api_url=None)
    client = connect(settings)
    location = client.get_experiment("0").artifact_location
    assert Path(location.removeprefix("file://")).is_relative_to(workspace), location
    mlflow.set_tracking_uri(None)
