"""The classical_baselines project: SIF's pieces on hand-made vectors, prepare/evaluate on a few real STS-B-like
rows with the GloVe package, WordLlama offline, and the pyfunc serving the same embeddings as the method."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from paperline.data.kinds.scored_pairs import ScoredPair
from paperline.project.interface import RunContext

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [
    ScoredPair("A man is playing a guitar.", "A man plays the guitar.", 4.8),
    ScoredPair("A woman is slicing an onion.", "A woman cuts an onion.", 4.2),
    ScoredPair("A dog runs on the beach.", "The stock market fell today.", 0.1),
    ScoredPair("Two children are playing football.", "Kids play soccer in a park.", 3.6),
    ScoredPair("A cat sleeps on the sofa.", "A plane is taking off.", 0.0),
    ScoredPair("The man is riding a horse.", "A man rides a horse.", 5.0),
]


@pytest.fixture(scope="module")
def method():
    from paperline_projects.classical_baselines import method

    return method


@pytest.fixture(scope="module")
def sv():
    from paperline_projects.classical_baselines import static_vectors

    return static_vectors


def test_the_project_satisfies_the_contract():
    from paperline.project.contract import check_project
    from paperline.project.discovery import get_project

    assert check_project(get_project(ROOT / "projects", "classical_baselines")) == []


def test_tokens_are_lowercased_words_and_numbers(sv):
    assert sv.tokenize("A Man's 2 GUITARS, played!") == ["a", "man", "s", "2", "guitars", "played"]


def test_sif_weights_are_a_over_a_plus_p(sv):
    weights = sv.sif_weights(["the", "cat", "unseen"], Counter({"the": 3, "cat": 1}), a=0.25)
    # p(the) = 3/4, p(cat) = 1/4, an unseen word p = 0: weight 1
    assert np.allclose(weights, [0.25 / 1.0, 0.25 / 0.5, 1.0])


def test_average_weights_known_words_and_divides_by_their_count(sv):
    enc = sv.StaticEncoder(["a", "b"], np.array([[1.0, 0.0], [0.0, 2.0]], np.float32),
                           weights=np.array([0.5, 1.0], np.float32))
    out = enc.average(["a b zzz", "zzz", "B"])
    assert np.allclose(out, [[0.25, 1.0], [0.0, 0.0], [0.0, 2.0]])  # (0.5*[1,0] + [0,2]) / 2; none; one word
    plain = sv.StaticEncoder(["a", "b"], enc.vectors)
    assert np.allclose(plain.average(["a b"]), [[0.5, 1.0]])


def test_removing_the_first_component_leaves_embeddings_orthogonal_to_it(sv):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    enc = sv.StaticEncoder(words, rng.normal(size=(50, 8)).astype(np.float32) + 3.0)  # a shared direction
    texts = [" ".join(rng.choice(words, 5)) for _ in range(40)]
    pc = enc.fit_pc(texts)
    assert np.isclose(np.linalg.norm(pc), 1.0, atol=1e-5)
    assert np.allclose(enc.embed(texts) @ pc, 0.0, atol=1e-4)
    assert not np.allclose(enc.average(texts) @ pc, 0.0, atol=1e-2)


def test_cosine_rows_of_a_zero_row_is_zero(sv):
    assert np.allclose(sv.cosine_rows(np.array([[1.0, 0], [0, 0]]), np.array([[1.0, 0], [1, 1]])), [1.0, 0.0])


def test_save_and_load_give_the_same_encoder(sv, tmp_path):
    enc = sv.StaticEncoder(["x", "y", "z"], np.eye(3, dtype=np.float32), np.array([1, 0.5, 0.2], np.float32))
    enc.fit_pc(["x y", "y z", "x z z"])
    loaded = sv.StaticEncoder.load(**enc.save(tmp_path / "m"))
    assert loaded.words == enc.words
    assert np.array_equal(loaded.embed(["x y z", "z"]), enc.embed(["x y z", "z"]))
    plain = sv.StaticEncoder.load(**sv.StaticEncoder(["x"], np.ones((1, 2), np.float32)).save(tmp_path / "p"))
    assert plain.weights is None and plain.pc is None


def test_the_served_arm_is_required(method):
    with pytest.raises(ValueError, match="arms must include sif_glove"):
        method.Config(arms=["tfidf"])


@pytest.fixture(scope="module")
def prepared(method, tmp_path_factory, rows_data):
    """prepare on six pairs (the real GloVe vectors), and evaluate of the three fast arms."""
    cfg = method.Config(arms=["tfidf", "glove_avg", "sif_glove"])
    data = rows_data({("stsb", "train"): PAIRS, ("stsb", "dev"): PAIRS, ("stsb", "test"): PAIRS[::-1]})
    ctx = RunContext(workdir=tmp_path_factory.mktemp("cb"), progress=False)
    model = method.prepare(cfg, data, ctx)
    return cfg, data, ctx, model


def test_prepare_writes_the_sif_model_and_evaluate_scores_each_arm(method, prepared):
    cfg, data, ctx, model = prepared
    assert model.flavor == "pyfunc" and model.serving is not None
    assert set(model.outputs) == {"vocab", "vectors", "sif"}
    evaluation = method.evaluate(model, cfg, data, ctx)
    metrics = evaluation.metrics
    assert cfg.metric_names() <= set(metrics)
    assert metrics["stsb_test_spearman"] == metrics["sif_glove_stsb_test_spearman"]
    assert metrics["encode_ms_per_1k"] == metrics["sif_glove_encode_ms_per_1k"] > 0
    for arm in ("tfidf", "glove_avg", "sif_glove"):
        assert metrics[f"{arm}_stsb_dev_spearman"] > 50  # paraphrases above unrelated pairs, even with six rows
    assert evaluation.tables["arms"]["arm"] == ["tfidf", "glove_avg", "sif_glove"]
    assert evaluation.tags["best_classical_arm"].endswith("(by stsb_dev_spearman)")


def test_the_pyfunc_serves_the_methods_embeddings(method, sv, prepared, tmp_path):
    import mlflow

    _, _, _, model = prepared
    target = tmp_path / "served"
    mlflow.pyfunc.save_model(str(target), **model.serving.log_model_kwargs())
    served = mlflow.pyfunc.load_model(str(target))
    sentences = ["A man is playing a flute.", "Nothing here is known: qwxz.", PAIRS[0].sentence1]
    expected = sv.StaticEncoder.load(**{k: model.output(k) for k in ("vocab", "vectors", "sif")}).embed(sentences)
    got = served.predict(sentences)
    assert got.dtype == np.float32 and got.shape == (3, 50)
    assert np.array_equal(got, expected)


def test_wordllama_loads_offline_from_its_wheel(method, monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("WordLlama tried to download")

    monkeypatch.setattr(requests, "get", no_network)
    from paperline_projects.classical_baselines.arms import wordllama_model

    embeddings = wordllama_model().embed(["A man is playing a guitar.", "A dog runs."])
    assert embeddings.shape == (2, 256)
