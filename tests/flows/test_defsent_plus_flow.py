"""defsent_plus end to end through `paperline run --config smoke`: the data gate on `definitions` and STS-B, the
three arms trained and scored in one run, the headline arm's metrics under the names the reverse-dictionary
leaderboard reads, and the trained encoder registered and loadable as a sentence-transformers model."""

from __future__ import annotations

import mlflow
from contract_check import check_contract

MODEL = "defsent_plus-smoke"


def test_smoke_run_scores_every_arm_and_registers_a_sentence_encoder(workspace):
    result = workspace.paperline("run", "defsent_plus", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{MODEL} v1" in result.stdout and "data gate: passed" in result.stdout
    check_contract(workspace, "defsent_plus", result)

    client = workspace.client()
    (run,) = client.search_runs([client.get_experiment_by_name("defsent_plus").experiment_id])
    metrics = run.data.metrics
    names = ["stsb_dev_spearman", "stsb_test_spearman", "revdict_test_mrr", "revdict_test_top10"]
    assert set(names) <= set(metrics)
    assert {f"{arm}_{name}" for arm in ("untrained", "raw", "isotropic") for name in names} <= set(metrics)
    assert metrics["revdict_test_mrr"] == metrics["isotropic_revdict_test_mrr"]  # the headline arm, unprefixed
    assert metrics["entries"] == 24 and metrics["raw_global_step"] == metrics["isotropic_global_step"] == 2
    assert run.data.params["entries.isotropy"] == "whitening"

    mlflow.set_tracking_uri(workspace.tracking_uri)
    encoder = mlflow.sentence_transformers.load_model(f"models:/{MODEL}@challenger")
    assert encoder.encode(["a domesticated carnivorous mammal"]).shape == (1, 384)
