"""sbert_sts: how configs become training data and losses (the flow tests run it end to end)."""

from pathlib import Path

import pytest

from paperline.data.kinds.nli_pairs import NliPair
from paperline.data.kinds.scored_pairs import ScoredPair
from paperline.project.discovery import discover

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def method():
    return discover(REPO / "projects")["sbert_sts"].method()


def test_scored_pairs_are_scaled_to_unit_similarity(method, rows_data):
    stage = method.Stage(name="sts", dataset="stsb", loss="cosent")
    data = rows_data({("stsb", "train"): [ScoredPair("a", "b", 5.0), ScoredPair("c", "d", 2.5)]})
    rows = method.training_rows(stage, data, seed=0)
    assert rows.column_names == ["sentence1", "sentence2", "score"]
    assert rows["score"] == [1.0, 0.5]


def test_nli_rows_become_triplets_with_contradictions_as_hard_negatives(method, rows_data):
    stage = method.Stage(name="nli", dataset="snli", loss="mnrl", max_rows=10)
    dev = [NliPair("p1", "e1", "entailment"), NliPair("p1", "c1", "contradiction"), NliPair("p1", "n1", "neutral"),
           NliPair("p2", "e2", "entailment")]  # p2 has no contradiction: no triplet
    test = [NliPair("p3", "e3", "entailment"), NliPair("p3", "e3b", "entailment"), NliPair("p3", "c3", "contradiction")]
    rows = method.training_rows(stage, rows_data({("snli", "dev"): dev, ("snli", "test"): test}), seed=0)
    triplets = sorted(zip(rows["anchor"], rows["positive"], rows["negative"]))
    assert triplets == [("p1", "e1", "c1"), ("p3", "e3", "c3"), ("p3", "e3b", "c3")]


def test_each_loss_name_maps_to_the_sentence_transformers_loss(method):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, CosineSimilarityLoss, MultipleNegativesRankingLoss

    from paperline.ml.models import resolve_model_path

    model = SentenceTransformer(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    expected = {"cosent": CoSENTLoss, "cosine": CosineSimilarityLoss, "mnrl": MultipleNegativesRankingLoss}
    for name, cls in expected.items():
        assert isinstance(method.make_loss(name, model), cls)


def test_nli_then_sts_trains_both_stages_on_the_real_data(tmp_path, pulled_data):
    """The two-stage recipe on a few rows of SNLI and STS-B: the MNRL stage, then CoSENT from its weights."""
    from paperline.data.datasets import dataset_ref
    from paperline.project.interface import ProjectData, RunContext

    project = discover(REPO / "projects")["sbert_sts"]
    small = ["evaluate.max_rows=24", "evaluate.baseline=false"]
    for i in (0, 1):
        small += [f"train.stages.{i}.max_rows=24", f"train.stages.{i}.max_steps=2", f"train.stages.{i}.batch_size=8",
                  f"train.stages.{i}.checkpoint_every=2"]
    cfg = project.load_config("nli_then_sts", small)
    data = ProjectData({name: dataset_ref(pulled_data, name, use.kind) for name, use in cfg.data.items()})
    method = project.method()
    model = method.train(cfg, data, RunContext(tmp_path / "work", progress=False))
    assert model.metrics["nli_global_step"] == 2 and model.metrics["sts_global_step"] == 2
    assert (tmp_path / "work" / "stage0-nli" / "model" / "config.json").is_file()
    metrics = method.evaluate(model, cfg, data, RunContext(tmp_path / "work", progress=False)).metrics
    assert set(metrics) == {"stsb_dev_spearman", "stsb_test_spearman"}


def test_evaluate_on_onnx_scores_with_it_and_says_so(method, tmp_path, monkeypatch, rows_data):
    """`evaluate.backend=onnx`: the dev check passes on MiniLM (fp32 ONNX is exact to ~1e-5), the numbers are the
    PyTorch ones within 0.1, and the tags say ONNX produced them."""
    from paperline.ml.models import resolve_model_path
    from paperline.project.interface import RunContext, TrainedModel

    monkeypatch.setenv("PAPERLINE_ONNX_CACHE", str(tmp_path / "onnx"))
    rows = [ScoredPair("A plane is taking off.", "An air plane is taking off.", 5.0),
            ScoredPair("A man is playing a flute.", "A man is playing a large flute.", 3.8),
            ScoredPair("Three men are playing chess.", "Two men are playing chess.", 2.6),
            ScoredPair("A man is smoking.", "A man is skating.", 0.5),
            ScoredPair("A woman is slicing an onion.", "A dog runs on the beach.", 0.0)]
    data = rows_data({("stsb", "dev"): rows, ("stsb", "test"): rows[::-1]})
    project = discover(REPO / "projects")["sbert_sts"]
    model = TrainedModel(path=Path(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")))
    ctx = RunContext(tmp_path / "work", progress=False)
    torch_run = method.evaluate(model, project.load_config("smoke"), data, ctx)
    onnx_run = method.evaluate(model, project.load_config("smoke", ["evaluate.backend=onnx"]), data, ctx)
    assert onnx_run.tags["stsb_encode_backend"] == "onnx" and torch_run.tags["stsb_encode_backend"] == "torch"
    assert onnx_run.tags["baseline_stsb_encode_backend"] == "onnx"  # the base model: the same export, reused
    assert len(list((tmp_path / "onnx").iterdir())) == 1
    assert "tolerance 0.1" in onnx_run.tags["stsb_encode_check"]
    assert onnx_run.metrics == pytest.approx(torch_run.metrics, abs=0.1)
    assert set(onnx_run.predictions) == {"stsb_dev", "stsb_test"}
