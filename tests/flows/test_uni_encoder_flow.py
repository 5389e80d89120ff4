"""`paperline run uni_encoder --config smoke` through the real flow: DVC pulls `dialogues`, the GX gate checks it
as the `dialogues` kind, three arms train, the metrics and the candidate sets' sha256 reach MLflow, and the arrow
model is registered (the policy's floor for R10@1 keeps a 2-step smoke model from champion) and served as a pyfunc: [context, candidates...] -> one score per candidate."""

from __future__ import annotations

import pytest
from contract_check import check_contract

MODEL = "uni_encoder-smoke"


def test_uni_encoder_smoke_runs_registers_and_serves_scores(workspace):
    import mlflow

    result = workspace.paperline("run", "uni_encoder", "--config", "smoke", "threads=1")
    assert result.returncode == 0, result.stderr[-3000:]
    # 2 training steps leave the heads near chance: under the policy's floor (20), so v1 stays challenger
    assert f"{MODEL} v1, alias challenger" in result.stdout and "floor: failed" in result.stdout, result.stdout
    assert "test_r10_at_1" in result.stdout and "primary" in result.stdout, result.stdout
    check_contract(workspace, "uni_encoder", result)

    client = workspace.client()
    run = client.search_runs([client.get_experiment_by_name("uni_encoder").experiment_id])[0]
    metrics, tags = run.data.metrics, run.data.tags
    for name in ("test_r10_at_1", "test_r10_at_2", "test_mrr", "square_test_r10_at_1", "diag_test_mrr",
                 "arrow_candidates_per_s", "square_candidates_per_s", "diag_candidates_per_s"):
        assert name in metrics, name
    assert metrics["test_r10_at_1"] == metrics["arrow_test_r10_at_1"]
    assert len(tags["uni_encoder.candidate_sets_sha256"]) == 64
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert client.get_run(version.run_id).data.metrics["test_mrr"] == pytest.approx(metrics["test_mrr"])

    mlflow.set_tracking_uri(workspace.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger")
        scores = model.predict([["Do you like hiking?\nYes, every weekend", "Where do you go?", "I love tacos",
                                 "The market fell"], ["What is your favourite food?", "Tacos", "Westerns"]])
    finally:
        mlflow.set_tracking_uri(None)
    assert [len(row) for row in scores] == [3, 2] and all(isinstance(s, float) for row in scores for s in row)
