"""cross_encoder_sts: configs, and train + evaluate on a tiny random encoder (the flow tests run the real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from paperline.data.kinds.scored_pairs import ScoredPair

REPO = Path(__file__).resolve().parents[2]
ROWS = [ScoredPair("a man plays a guitar", "a person plays guitar", 4.6), ScoredPair("a dog runs", "the market fell", 0.2),
        ScoredPair("two kids swim", "children are swimming", 4.0), ScoredPair("a cat sleeps", "a car", 1.0)]


@pytest.fixture(scope="module")
def project():
    from paperline.project.discovery import get_project

    return get_project(REPO / "projects", "cross_encoder_sts")


def test_card_and_every_config_validate(project):
    assert project.card.primary_metric.name == "stsb_test_spearman" and project.trains
    for name in project.configs:
        cfg = project.load_config(name)
        assert cfg.train.both_orders and cfg.data["stsb"].kind == "scored_pairs"
    assert project.load_config("smoke").model_name == "cross_encoder_sts-smoke"


def test_train_logs_a_pyfunc_and_evaluate_scores_the_pairs(project, tmp_path, rows_data):
    from tiny_models import tiny_bert

    from paperline.project.interface import RunContext

    cfg = project.load_config("smoke", [f"base_model={tiny_bert(tmp_path)}", "train.max_steps=2",
                                        "evaluate.baseline=false"])
    ctx = RunContext(tmp_path / "work", progress=False)
    model = project.method().train(cfg, rows_data({("stsb", split): ROWS for split in ("train", "dev", "test")}), ctx)
    assert model.flavor == "pyfunc" and (model.path / "config.json").is_file()
    assert model.metrics["train_pairs"] == 2 * len(ROWS)  # both orders
    assert model.serving.artifacts == {"cross_encoder": str(model.path)}
    assert str(model.serving.python_model).endswith("cross_encoder_pyfunc.py")
    metrics = project.method().evaluate(model, cfg, rows_data({("stsb", split): ROWS for split in ("train", "dev", "test")}), ctx).metrics
    assert -100 <= metrics["stsb_test_spearman"] <= 100 and "stsb_dev_spearman" in metrics
