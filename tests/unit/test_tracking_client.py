"""paperline.ops.tracking.client against a real MLflow store (SQLite)."""

from __future__ import annotations

from mlflow import MlflowClient

from paperline.ops.tracking.client import experiment_id


def test_two_first_runs_of_a_project_at_once_share_its_experiment(tmp_path, monkeypatch):
    """Both find no experiment and both create it: the second create is refused (RESOURCE_ALREADY_EXISTS) and that
    run uses the experiment the first one created, instead of failing."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    first = experiment_id(client, "sbert_sts", (tmp_path / "artifacts").as_uri())
    real_lookup, calls = client.get_experiment_by_name, []

    def lookup(name):  # the second run's first look came before the first one's create committed
        calls.append(name)
        return None if len(calls) == 1 else real_lookup(name)

    monkeypatch.setattr(client, "get_experiment_by_name", lookup)
    assert experiment_id(client, "sbert_sts", (tmp_path / "artifacts").as_uri()) == first
