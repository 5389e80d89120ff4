"""The layer x dimension grid: one forward pass must equal re-encoding with each truncated model."""

from __future__ import annotations

import copy

import pytest
import torch

from paperline.data.kinds.scored_pairs import ScoredPair

PAIRS = [
    ScoredPair("A plane is taking off.", "An air plane is taking off.", 5.0),
    ScoredPair("A man is playing a large flute.", "A man is playing a flute.", 3.8),
    ScoredPair("A man is spreading shredded cheese on a pizza.", "A man is spreading cheese on an uncooked pizza.", 3.8),
    ScoredPair("Three men are playing chess.", "Two men are playing chess.", 2.6),
    ScoredPair("A man is playing the cello.", "A man seated is playing the cello.", 4.25),
    ScoredPair("Some men are fighting.", "Two men are fighting.", 4.25),
    ScoredPair("A man is smoking.", "A man is skating.", 0.5),
    ScoredPair("The man is playing the piano.", "The man is playing the guitar.", 1.6),
]


@pytest.fixture(scope="module")
def model():
    from paperline.ml.models import load_sentence_transformer

    return load_sentence_transformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


def test_every_layer_equals_reencoding_with_the_truncated_model(model):
    from paperline.ml.export import truncate_layers
    from paperline.ml.layer_grid import encode_layers

    sentences = [p.sentence1 for p in PAIRS] + [p.sentence2 for p in PAIRS]
    per_layer = encode_layers(model, sentences, batch_size=5)  # several batches, so the unsorting is checked
    assert len(per_layer) == 7
    for layers in range(1, 7):
        cut = copy.deepcopy(model)
        truncate_layers(cut, layers)
        direct = cut.encode(sentences, convert_to_tensor=True, batch_size=5).cpu()
        assert torch.allclose(per_layer[layers], direct, atol=1e-5), layers


def test_grid_cells_equal_spearman_of_truncated_models(model):
    from paperline.ml.evaluation import sts_spearman
    from paperline.ml.export import truncate_layers
    from paperline.ml.layer_grid import grid_spearman

    grid = grid_spearman(model, PAIRS, dims=[32, 384])
    assert sorted(grid) == [(layer, d) for layer in range(1, 7) for d in (32, 384)]
    assert grid[(6, 384)] == pytest.approx(sts_spearman(model, PAIRS), abs=1e-6)
    cut = copy.deepcopy(model)
    truncate_layers(cut, 2)
    cut.truncate_dim = 32
    assert grid[(2, 32)] == pytest.approx(sts_spearman(cut, PAIRS), abs=1e-6)


def test_metrics_table_and_heatmap(tmp_path):
    from paperline.ml.layer_grid import format_grid, grid_metrics, grid_table, plot_grids

    model_grid = {(layer, d): 50.0 + layer + d / 100 for layer in (1, 2) for d in (32, 64)}
    base_grid = {cell: value - 1.0 for cell, value in model_grid.items()}
    metrics = grid_metrics(model_grid, "stsb_test_spearman")
    assert metrics["stsb_test_spearman_l2_d64"] == pytest.approx(52.64)
    table = grid_table({"st": model_grid, "baseline": base_grid})
    assert set(table) == {"layers", "dims", "st", "baseline", "difference"}
    assert table["difference"] == [1.0] * 4 and len(table["layers"]) == 4
    assert "52.64" in format_grid(model_grid)
    png = plot_grids(model_grid, base_grid, tmp_path / "grid.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_pairs_is_a_clear_error(model):
    from paperline.ml.layer_grid import grid_spearman

    with pytest.raises(ValueError, match="no pairs"):
        grid_spearman(model, [])
