"""`paperline run pixel_linguist --config smoke` through the real flow: DVC pulls STS-B and SNLI, the GX gate checks
them as `scored_pairs` and `nli_pairs`, the pixel student is distilled onto MiniLM and trained on entailment pairs,
STS-B is scored clean and under each kind of character noise for the student and MiniLM, the metrics and the noise
example picture reach MLflow, and the student is registered (a 3-step smoke student stays under the policy's floor,
so it stays challenger) and served as a pyfunc: a list of sentences -> one normalised embedding each."""

from __future__ import annotations

import numpy as np
import pytest
from contract_check import check_contract

MODEL = "pixel_linguist-smoke"


def test_pixel_linguist_smoke_runs_registers_and_serves_embeddings(workspace):
    import mlflow

    result = workspace.paperline("run", "pixel_linguist", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{MODEL} v1, alias challenger" in result.stdout, result.stdout
    assert "stsb_test_spearman" in result.stdout and "primary" in result.stdout, result.stdout
    check_contract(workspace, "pixel_linguist", result)

    client = workspace.client()
    run = client.search_runs([client.get_experiment_by_name("pixel_linguist").experiment_id])[0]
    metrics = run.data.metrics
    for kind in ("typos", "swaps", "lookalikes"):
        for name in (f"stsb_test_spearman_noise_{kind}", f"baseline_stsb_test_spearman_noise_{kind}",
                     f"distill_stsb_test_spearman_drop_{kind}", f"robustness_gain_{kind}"):
            assert name in metrics, name
        drop = metrics["baseline_stsb_test_spearman"] - metrics[f"baseline_stsb_test_spearman_noise_{kind}"]
        assert metrics[f"baseline_stsb_test_spearman_drop_{kind}"] == pytest.approx(drop)
        assert 0.05 < metrics[f"noise_changed_fraction_{kind}"] < 0.2  # rate 0.1 of the eligible characters
    assert "pixel_linguist.noise" in run.data.tags
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "evaluation")]
    assert "evaluation/noise_example.png" in artifacts, artifacts
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert client.get_run(version.run_id).data.metrics["stsb_test_spearman"] == pytest.approx(
        metrics["stsb_test_spearman"])

    mlflow.set_tracking_uri(workspace.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger")
        embeddings = model.predict(["A man is playing a guitar.", "A woman is slicing an onion."])
    finally:
        mlflow.set_tracking_uri(None)
    embeddings = np.asarray(embeddings)
    assert embeddings.shape == (2, 384) and np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(embeddings[0], embeddings[1])
