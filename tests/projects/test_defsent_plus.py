"""defsent_plus: entries, the entry spaces, the loss, retrieval, the weaker start, and train/evaluate on tiny
inputs with a tiny random BERT (the flow test in tests/flows/test_defsent_plus_flow.py runs the smoke config)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from paperline.data.kinds.definitions import Definition
from paperline.data.kinds.scored_pairs import ScoredPair
from paperline.project.discovery import get_project

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project():
    return get_project(REPO / "projects", "defsent_plus")


@pytest.fixture(scope="module")
def method(project):
    return project.method()


@pytest.fixture(scope="module")
def ds(method):
    from paperline_projects.defsent_plus import defsent

    return defsent


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tiny_models import tiny_sentence_transformer

    return tiny_sentence_transformer(tmp_path_factory.mktemp("st"))


@pytest.fixture
def tiny(tiny_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_dir), device="cpu")


def rows(*pairs):
    return [Definition(term, definition) for term, definition in pairs]


def test_card_configs_and_metric_names(project):
    assert project.card.paper.arxiv == "2405.16153" and project.trains
    for name in ("default", "smoke", "weak_start"):
        cfg = project.load_config(name)
        names = cfg.metric_names()
        assert {"stsb_test_spearman", "revdict_test_mrr", "revdict_test_top10"} <= names
        assert {"raw_revdict_test_mrr", "isotropic_revdict_test_top10", "untrained_stsb_test_spearman"} <= names
    assert project.load_config("weak_start").start.reinit_top_layers == 3
    assert project.load_config("default").start.reinit_top_layers == 0


def test_reinit_more_layers_than_kept_is_a_config_error(project):
    from paperline.core.config import ConfigError

    with pytest.raises(ConfigError, match="reinit_top_layers"):
        project.load_config("default", ["start.keep_layers=2", "start.reinit_top_layers=3"])


def test_entries_group_senses_keep_multiword_terms_and_drop_repeats(ds):
    data = rows(("bank", "a river side"), ("bank", "a money place"), ("bank", "a river side"),
                ("ice cream", "a frozen dessert"), ("dog", "a pet"))
    entries = ds.select_entries(data, None, seed=0)
    assert sorted(entries.terms) == ["bank", "dog", "ice cream"]
    by_term = dict(zip(entries.terms, entries.definitions))
    assert by_term["bank"] == ["a river side", "a money place"]
    texts, labels = entries.rows()
    assert len(texts) == 4 and [entries.terms[i] for i in labels].count("bank") == 2
    subset = ds.select_entries(data, 2, seed=0)
    assert len(subset.terms) == 2 and subset == ds.select_entries(data, 2, seed=0)  # seeded


def test_entry_matrix_is_the_mean_of_each_entrys_definition_embeddings(ds):
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}

    class Fake:
        def encode(self, texts, **_):
            return np.array([vectors[t] for t in texts])

    entries = ds.Entries(terms=["x", "y"], definitions=[["a", "b"], ["c"]])
    np.testing.assert_allclose(ds.entry_matrix(Fake(), entries), [[0.5, 0.5], [1.0, 1.0]])


def test_whitening_gives_identity_covariance_and_no_blowup_when_rank_deficient(ds):
    rng = np.random.default_rng(0)
    cone = rng.normal(size=(500, 8)) + 5.0  # a narrow cone: every pair points the same way
    white = ds.whiten(cone)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(8), atol=1e-2)
    assert ds.anisotropy(cone) > 0.9 and abs(ds.anisotropy(white)) < 0.05
    few = ds.whiten(rng.normal(size=(4, 8)))  # 4 entries in 8 dimensions: rank 3 after centring
    assert few.shape == (4, 8) and np.abs(few).max() < 10


def test_whitening_keeps_the_encoders_coordinates(ds):
    """ZCA: data that is already uncorrelated comes out merely standardised, not rotated into principal axes
    (a rotation the encoder would first have to learn)."""
    x = np.random.default_rng(1).normal(size=(5000, 4)) * [1.0, 2.0, 3.0, 4.0] + 1.0
    np.testing.assert_allclose(ds.whiten(x), (x - x.mean(0)) / x.std(0), atol=0.1)


def test_ica_keeps_the_shape_and_decorrelates(ds):
    rng = np.random.default_rng(0)
    x = rng.laplace(size=(300, 4)) @ rng.normal(size=(4, 4))
    out = ds.isotropic(x, "ica", seed=0, max_iter=200)
    assert out.shape == (300, 4)
    np.testing.assert_allclose(np.corrcoef(out, rowvar=False), np.eye(4), atol=0.05)
    with pytest.raises(ValueError, match="isotropy"):
        ds.isotropic(x, "pca", seed=0)


def test_loss_is_cross_entropy_over_frozen_entries_and_trains_only_the_encoder(ds, tiny):
    entries = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
    loss = ds.DefSentLoss(tiny, entries, scale=20.0)
    assert not any(n.startswith("entries") for n, _ in loss.named_parameters())  # a buffer, not a weight
    unit = torch.nn.functional.normalize(torch.from_numpy(entries), dim=1)
    assert torch.allclose(loss.entries, unit)
    features = tiny.tokenize(["a small dog", "a large river"])
    labels = torch.tensor([1, 3])
    value = loss([features], labels)
    with torch.no_grad():
        emb = tiny(tiny.tokenize(["a small dog", "a large river"]))["sentence_embedding"]
    expected = torch.nn.functional.cross_entropy(20.0 * emb @ unit.T, labels)
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)
    value.backward()
    assert loss.entries.grad is None
    assert any(p.grad is not None for p in tiny.parameters())


def test_retrieval_ranks_the_gold_candidate(ds):
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 1.0]])
    scores = ds.retrieval_scores(queries, candidates, gold=[0, 1, 2])  # ranks 1, 2 and 3
    assert scores["mrr"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 3) / 3)
    assert scores["top1"] == pytest.approx(100 / 3) and scores["top10"] == pytest.approx(100.0)


def test_reverse_dictionary_candidates_are_the_terms_own_strings(ds):
    seen = []

    class Fake:
        def encode(self, texts, **_):
            seen.append(list(texts))
            return np.eye(3)[[0 if "dog" in t else 1 if "cat" in t else 2 for t in texts]]

    scores = ds.reverse_dictionary(Fake(), rows(("dog", "a dog-like pet"), ("cat", "a cat-like pet")))
    assert seen[1] == ["cat", "dog"] and scores["top1"] == 100.0


def test_weaker_start_keeps_layers_and_reinitialises_the_top(ds, tiny):
    before = [p.clone() for p in tiny[0].auto_model.encoder.layer[0].parameters()]
    top_before = [p.clone() for p in tiny[0].auto_model.encoder.layer[1].parameters()]
    ds.weaken(tiny, reinit_top_layers=1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, tiny[0].auto_model.encoder.layer[0].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(top_before, tiny[0].auto_model.encoder.layer[1].parameters()))
    ds.weaken(tiny, keep_layers=1)
    assert len(tiny[0].auto_model.encoder.layer) == 1 and tiny[0].auto_model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="reinit_top_layers"):
        ds.weaken(tiny, reinit_top_layers=2)


def test_train_and_evaluate_every_arm_from_one_start(project, method, tiny_dir, tmp_path, rows_data):
    from paperline.project.interface import RunContext

    train = rows(*[(f"word{i}", f"definition number {i} of a thing") for i in range(12)],
                 ("word0", "another sense of the first word"))
    test = rows(("apple", "a red fruit"), ("river", "flowing water"), ("apple", "a tech company"))
    sts = [ScoredPair(f"a man plays {i}", f"a person plays {i % 3}", float(i % 5)) for i in range(8)]
    data = rows_data({("definitions", "train"): train, ("definitions", "test"): test,
                     ("stsb", "dev"): sts, ("stsb", "test"): sts})
    cfg = project.load_config("smoke", [f"base_model={tiny_dir}", "entries.count=6", "start.reinit_top_layers=1"])
    ctx = RunContext(tmp_path / "work", progress=False)
    model = method.train(cfg, data, ctx)
    assert model.metrics["entries"] == 6 and model.metrics["raw_global_step"] == 2
    assert model.metrics["isotropic_global_step"] == 2
    assert set(model.outputs) == {"untrained", "raw", "isotropic"} and model.path == model.outputs["isotropic"]
    assert (tmp_path / "work" / "entries" / "isotropic-whitening.npy").is_file()
    evaluation = method.evaluate(model, cfg, data, ctx)
    assert cfg.metric_names() <= set(evaluation.metrics)
    assert evaluation.metrics["revdict_test_mrr"] == evaluation.metrics["isotropic_revdict_test_mrr"]
    assert evaluation.tables["arms"]["arm"] == ["untrained", "raw", "isotropic"]
    # a rerun finds every arm on disk and trains nothing (the reported steps come from the saved results)
    again = method.train(cfg, data, ctx)
    assert again.metrics == model.metrics
