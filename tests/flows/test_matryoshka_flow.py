"""matryoshka_2d through the flow: the layers x dims grid in MLflow, budget aliases, and export by alias."""

from __future__ import annotations

import pytest
from contract_check import check_contract

MODEL = "matryoshka_2d-smoke"
BUDGETS = [(4, 384), (3, 128), (2, 64), (1, 32)]


@pytest.fixture
def elastic_workspace(workspace):
    # The smoke model (2 steps on 32 rows) is not a real encoder: the policy's floor is lifted for this copy, the
    # budgets stay as the repository's policy names them.
    policy = workspace.root / "registry" / "policy.yaml"
    policy.write_text(policy.read_text().replace("    min_primary_metric: 80.0\n    budgets:",
                                                 "    min_primary_metric: null\n    budgets:"))
    return workspace


def test_smoke_run_logs_the_grid_and_sets_one_alias_per_budget(elastic_workspace, tmp_path):
    from sentence_transformers import SentenceTransformer

    from paperline.data.datasets import dataset_ref, read_split, resolve_data_version
    from paperline.ml.evaluation import sts_spearman

    ws = elastic_workspace
    result = ws.paperline("run", "matryoshka_2d", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{MODEL} v1, alias champion (promoted)" in result.stdout
    assert "budget alias: champion-l3-d128 -> l" in result.stdout
    check_contract(ws, "matryoshka_2d", result)

    client = ws.client()
    (run,) = client.search_runs([client.get_experiment_by_name("matryoshka_2d").experiment_id])
    metrics = run.data.metrics
    cells = {(layers, dims) for layers in range(1, 7) for dims in (32, 64, 128, 256, 384)}
    assert {f"stsb_test_spearman_l{l}_d{d}" for l, d in cells} <= set(metrics)
    assert {f"baseline_stsb_test_spearman_l{l}_d{d}" for l, d in cells} <= set(metrics)
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/layer_dim_grid.png" in evaluation

    aliases = client.get_registered_model(MODEL).aliases
    assert {f"champion-l{l}-d{d}" for l, d in BUDGETS} | {"champion", "challenger"} == set(aliases)
    assert set(aliases.values()) == {1}

    # Export by the budget alias alone: the registry knows the cell the grid picked for it.
    exported = ws.paperline("export", f"{MODEL}@champion-l3-d128", str(tmp_path / "l3"))
    assert exported.returncode == 0, exported.stderr[-3000:]
    model = SentenceTransformer(str(tmp_path / "l3"), device="cpu")
    layers = model[0].auto_model.config.num_hidden_layers
    dims = model.get_embedding_dimension()
    assert layers <= 3 and dims <= 128 and f"cut to {layers} layers x {dims} dims" in exported.stdout
    # ... and it scores what the grid said, on the same rows the smoke config evaluates (its first 40).
    test = read_split(dataset_ref(resolve_data_version(ws.root), "stsb", "scored_pairs"), "test")[:40]
    assert sts_spearman(model, test) == pytest.approx(metrics[f"stsb_test_spearman_l{layers}_d{dims}"], abs=1e-3)

    missing = ws.paperline("export", f"{MODEL}@champion", str(tmp_path / "x"))
    assert missing.returncode == 2 and "pass --layers K and --dim D" in missing.stderr  # what was typed is incomplete
