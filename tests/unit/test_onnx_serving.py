"""`paperline export-onnx NAME@ALIAS` (paperline.ops.registry.onnx_export): a registered sentence-transformers model
becomes `<name>_onnx@<alias>`, a pyfunc whose embeddings are the PyTorch model's (cosine >= 0.999)."""

from __future__ import annotations

import numpy as np
import pytest

from paperline.core.errors import UsageError

SENTENCES = ["A man is playing a guitar.", "A woman is slicing an onion.", "no", "Kids play football in the park."]


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """MiniLM logged in the sentence_transformers flavor and registered as `mini@champion`, on a SQLite store."""
    import mlflow
    from mlflow import MlflowClient

    from paperline.ml.models import load_sentence_transformer

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = load_sentence_transformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # artifacts under tmp_path: the Default experiment's location is ./mlruns of whatever folder pytest runs in
    experiment = client.create_experiment("onnx", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sentence_transformers.log_model(model, name="mini", pip_requirements=[])
    version = mlflow.register_model(info.model_uri, "mini")
    client.set_registered_model_alias("mini", "champion", version.version)
    yield client, model
    mlflow.set_tracking_uri(None)


def test_export_onnx_registers_a_pyfunc_with_the_pytorch_embeddings(registered):
    import mlflow

    from paperline.ops.registry.onnx_export import export_registered, min_cosine

    client, model = registered
    done = export_registered(client, "mini@champion")
    assert (done.name, done.version, done.alias, done.source) == ("mini_onnx", "1", "champion", "models:/mini/1")
    assert done.min_cosine >= 0.999
    served = mlflow.pyfunc.load_model("models:/mini_onnx@champion")
    out = served.predict(SENTENCES)
    assert out.dtype == np.float32 and out.shape == (4, 384)
    assert min_cosine(out, model.encode(SENTENCES)) >= 0.999
    version = client.get_model_version("mini_onnx", "1")
    assert version.tags["paperline.onnx.source"] == "models:/mini/1"
    assert str(client.get_model_version_by_alias("mini", "champion").version) == "1"  # the source is untouched


def test_export_onnx_refuses_what_names_no_model(registered):
    from paperline.ops.registry.onnx_export import export_registered

    client, _ = registered
    with pytest.raises(UsageError, match="not <name>@<alias>"):
        export_registered(client, "mini")
    with pytest.raises(UsageError, match="cannot find mini@nope"):
        export_registered(client, "mini@nope")
