"""The matryoshka_2d project: its card and configs, the paper loss, and a smoke train + evaluate."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project():
    from paperline.project.discovery import get_project

    return get_project(ROOT / "projects", "matryoshka_2d")


@pytest.fixture(scope="module")
def paper_loss():
    from paperline_projects.matryoshka_2d import paper_loss

    return paper_loss


@pytest.fixture(scope="module")
def model():
    from paperline.ml.models import load_sentence_transformer

    return load_sentence_transformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


def test_card_and_every_config_validate(project):
    assert project.card.primary_metric.name == "stsb_test_spearman"
    assert project.card.reference_implementation.commit.startswith("74e5ba2")
    assert project.trains
    for name in project.configs:
        cfg = project.load_config(name)
        assert cfg.train.objective in ("st", "paper", "ese")
    assert project.load_config("default", ["train.objective=paper"]).train.objective == "paper"


def test_unknown_objective_is_a_clear_config_error(project):
    from paperline.core.config import ConfigError

    with pytest.raises(ConfigError, match="train.objective"):
        project.load_config("default", ["train.objective=nope"])


def test_paper_dims_are_powers_of_two_below_hidden(paper_loss):
    assert paper_loss.paper_dims(384) == [8, 16, 32, 64, 128, 256]
    assert paper_loss.paper_dims(768) == [8, 16, 32, 64, 128, 256, 512]


def test_kl_term_is_zero_for_equal_embeddings_and_positive_otherwise(paper_loss):
    x = torch.randn(6, 32)
    assert paper_loss.kl_to_last(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert paper_loss.kl_to_last(x, torch.randn(6, 32)).item() > 0


def _features(model, texts):
    return model.preprocess(texts)


def test_loss_shapes_and_gradients_reach_layer_i_and_the_last_layer(paper_loss, model):
    loss_fn = paper_loss.TwoDMatryoshkaPaperLoss(model, angle_weight=0.02, rng=random.Random(3))
    model.train()
    model.zero_grad()
    a = _features(model, ["A plane is taking off.", "A man plays a flute.", "Two men play chess.", "hi"])
    b = _features(model, ["An air plane is taking off.", "A man plays music.", "Men fight.", "hello"])
    labels = torch.tensor([1.0, 0.7, 0.2, 0.8])
    loss = loss_fn([a, b], labels)
    assert loss.shape == () and torch.isfinite(loss)
    layer, dim = loss_fn.last_choice
    assert 1 <= layer <= 5 and dim in [8, 16, 32, 64, 128, 256]
    loss.backward()
    stack = model[0].auto_model.encoder.layer

    def grad_norm(module):
        return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)

    assert grad_norm(stack[layer - 1]) > 0  # hidden state i is the output of layer i (1-based)
    assert grad_norm(stack[5]) > 0  # the last layer gets gradient from its own terms
    model.zero_grad()


def test_kl_gradient_reaches_the_last_layer(paper_loss, model):
    """The reference does not detach the last layer: the KL term alone moves it."""
    loss_fn = paper_loss.TwoDMatryoshkaPaperLoss(model, cosent_weight=0.0, rng=random.Random(0))
    model.zero_grad()
    a = _features(model, ["A plane is taking off.", "A man plays a flute."])
    b = _features(model, ["An air plane is taking off.", "A man plays music."])
    loss = loss_fn([a, b], torch.tensor([1.0, 0.6]))
    loss.backward()
    last = model[0].auto_model.encoder.layer[5]
    assert sum(p.grad.abs().sum().item() for p in last.parameters() if p.grad is not None) > 0
    model.zero_grad()


def test_layer_and_dim_sampling_is_reproducible(paper_loss, model):
    picks = []
    for _ in range(2):
        loss_fn = paper_loss.TwoDMatryoshkaPaperLoss(model, rng=random.Random(7))
        a = _features(model, ["one", "two"])
        b = _features(model, ["uno", "dos"])
        with torch.no_grad():
            loss_fn([a, b], torch.tensor([1.0, 0.5]))
        picks.append(loss_fn.last_choice)
    assert picks[0] == picks[1]


@pytest.mark.parametrize("objective", ["st", "paper"])
def test_smoke_train_and_evaluate(project, tmp_path, objective, pulled_data):
    from paperline.data.datasets import dataset_ref
    from paperline.project.interface import ProjectData, RunContext

    cfg = project.load_config("smoke", [f"train.objective={objective}", "train.max_steps=1", "evaluate.max_rows=24"])
    data = ProjectData({"stsb": dataset_ref(pulled_data, "stsb", "scored_pairs")})
    ctx = RunContext(workdir=tmp_path, progress=False)
    method = project.method()
    trained = method.train(cfg, data, ctx)
    assert (trained.path / "config.json").is_file()
    assert trained.metrics["train_global_step"] == 1 and trained.metrics["baseline_global_step"] == 1
    assert "trained in this run" in trained.notes["baseline_source"]
    result = method.evaluate(trained, cfg, data, ctx)
    for prefix in ("stsb_test_spearman", "baseline_stsb_test_spearman"):
        assert all(f"{prefix}_l{layer}_d{d}" in result.metrics for layer in range(1, 7) for d in (32, 64, 128, 256, 384))
    assert result.metrics["stsb_test_spearman"] == result.metrics["stsb_test_spearman_l6_d384"]
    table = result.tables["layer_dim_grid"]
    assert set(table) == {"layers", "dims", objective, "baseline", "difference"} and len(table["dims"]) == 30
    assert result.artifacts["layer_dim_grid.png"].is_file()
    # a second train() reuses both finished models instead of training again
    again = method.train(cfg, data, ctx)
    assert "reused" in again.notes["baseline_source"] and "reused" in again.notes


def test_grid_on_onnx_equals_the_pytorch_grid_and_says_so(project, tmp_path, monkeypatch, rows_data):
    """`evaluate.backend=onnx`: the grid comes from an all-layers ONNX export once the dev check passes, within
    0.1 of the PyTorch grid in every cell, and the run's tags say which backend scored."""
    from paperline.data.kinds.scored_pairs import ScoredPair
    from paperline.ml.models import resolve_model_path
    from paperline.project.interface import RunContext, TrainedModel

    rows = [ScoredPair("A plane is taking off.", "An air plane is taking off.", 5.0),
            ScoredPair("A man is playing a flute.", "A man is playing a large flute.", 3.8),
            ScoredPair("Three men are playing chess.", "Two men are playing chess.", 2.6),
            ScoredPair("A man is smoking.", "A man is skating.", 0.5),
            ScoredPair("A woman is slicing an onion.", "A dog runs on the beach.", 0.0)]
    data = rows_data({("stsb", "dev"): rows, ("stsb", "test"): rows[1:] + rows[:1]})

    monkeypatch.setenv("PAPERLINE_ONNX_CACHE", str(tmp_path / "onnx"))
    model = TrainedModel(path=Path(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")))
    ctx = RunContext(workdir=tmp_path, progress=False)
    method = project.method()
    torch_run = method.evaluate(model, project.load_config("smoke", ["evaluate.dims=[32,384]"]), data, ctx)
    cfg = project.load_config("smoke", ["evaluate.dims=[32,384]", "evaluate.backend=onnx"])
    onnx_run = method.evaluate(model, cfg, data, ctx)
    assert onnx_run.tags["model_encode_backend"] == "onnx" and torch_run.tags["model_encode_backend"] == "torch"
    assert onnx_run.metrics == pytest.approx(torch_run.metrics, abs=0.1)
