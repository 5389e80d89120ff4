"""DSE: the pair head's shapes, the loss (alpha = 0 is the task loss), a saved student, and its configs.

The flow test (tests/flows/test_distillation_flows.py) runs the whole chain, teacher flow first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project():
    from paperline.project.discovery import get_project

    return get_project(REPO / "projects", "distilled_sentence_embedding")


@pytest.fixture(scope="module")
def dse(project):
    return project.method().dse


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    from sentence_transformers import SentenceTransformer
    from tiny_models import tiny_sentence_transformer

    return SentenceTransformer(str(tiny_sentence_transformer(tmp_path_factory.mktemp("st"))), device="cpu")


def test_card_and_every_config_validate(project):
    assert project.card.paper.arxiv == "1908.05161" and project.trains
    for name in project.configs:
        cfg = project.load_config(name)
        assert 0 <= cfg.train.alpha <= 1 and cfg.upstream["teacher"].project == "cross_encoder_sts"
    assert project.load_config("default").train.alpha == 0.5
    assert project.load_config("default").train.control_alpha == 0.0


def test_alpha_outside_unit_range_is_a_config_error(project):
    from paperline.core.config import ConfigError

    with pytest.raises(ConfigError, match="train.alpha"):
        project.load_config("default", ["train.alpha=1.5"])


def test_pair_head_features_and_shapes(dse):
    head = dse.PairHead(dim=8, hidden=16)
    u, v = torch.randn(5, 8), torch.randn(5, 8)
    features = dse.PairHead.features(u, v)
    assert features.shape == (5, 32)
    assert torch.equal(features[:, 16:24], u * v) and torch.equal(features[:, 24:], (u - v).abs())
    assert head(u, v).shape == (5,)
    assert head.net[0].in_features == 32 and head.net[-1].out_features == 1
    with pytest.raises(ValueError, match=r"two \[n, 8\] embeddings"):
        head(torch.randn(5, 4), torch.randn(5, 4))


def test_alpha_zero_is_the_task_loss_and_alpha_one_pure_distillation(dse):
    pred, gold, teacher = torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0.0, 1.0, 0.6]), torch.tensor([0.3, 0.7, 0.4])
    task = torch.nn.functional.mse_loss(pred, gold)
    distill = ((pred - teacher) ** 2).mean()
    assert torch.equal(dse.dse_loss(pred, gold, teacher, 0.0), task)
    assert dse.dse_loss(pred, gold, teacher, 1.0) == pytest.approx(distill.item())
    assert dse.dse_loss(pred, gold, teacher, 0.5) == pytest.approx(0.5 * task.item() + 0.5 * distill.item())
    # With alpha = 0 the teacher's scores do not matter at all.
    assert torch.equal(dse.dse_loss(pred, gold, torch.zeros(3), 0.0), task)
    with pytest.raises(ValueError, match="alpha"):
        dse.dse_loss(pred, gold, teacher, -0.1)


def test_the_loss_module_embeds_both_columns_and_reads_gold_then_teacher(dse, tiny_st):
    head = dse.PairHead(tiny_st.get_embedding_dimension(), 8)
    loss = dse.DSELoss(tiny_st, head, alpha=0.0)
    features = [tiny_st.preprocess(["a cat", "two dogs run"]), tiny_st.preprocess(["a kitten", "a car"])]
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # [gold, teacher]
    with torch.no_grad():
        u, v = (tiny_st(f)["sentence_embedding"] for f in features)
        expected = torch.nn.functional.mse_loss(head(u, v), labels[:, 0])
        got = loss(features, labels)
        swapped = loss(features, labels[:, [1, 0]])
    assert got == pytest.approx(expected.item(), rel=1e-5)
    assert swapped != pytest.approx(got.item())  # the columns are read as [gold, teacher], not interchangeably
    loss.alpha = 1.0
    with torch.no_grad():
        assert loss(features, labels) == pytest.approx(loss(features, labels[:, [1, 1]]).item(), rel=1e-5)


def test_a_saved_student_scores_pairs_and_ranks_against_precomputed_candidates(dse, tiny_st, tmp_path):
    head = dse.PairHead(tiny_st.get_embedding_dimension(), 8)
    folder = dse.save_student(tiny_st, head, tmp_path / "student")
    encoder, loaded = dse.load_student(folder, device="cpu")
    pairs = [("a cat", "a kitten"), ("two dogs run", "a car"), ("a cat", "a car")]
    scores = dse.score_pairs(encoder, loaded, pairs)
    assert scores.shape == (3,)
    assert scores == pytest.approx(dse.score_pairs(tiny_st, head.eval(), pairs), abs=1e-5)
    candidates = dse.embed(encoder, ["a kitten", "a car", "a dog"])
    ranked = dse.rank(encoder, loaded, "a cat", candidates)
    assert ranked.shape == (3,)
    assert ranked[0].item() == pytest.approx(scores[0].item(), abs=1e-5)  # the same pair, the same score
