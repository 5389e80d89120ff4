"""Trans-Encoder on a tiny random encoder: pseudo-labels round trip through versioned files, cycles, selection.

The flow test (tests/flows/test_distillation_flows.py) runs the smoke config end to end with the real MiniLM.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from paperline.data.kinds.scored_pairs import ScoredPair

REPO = Path(__file__).resolve().parents[2]
PAIRS = [("a man plays a guitar", "a person plays guitar"), ("a dog runs", "the market fell"),
         ("two kids swim", "children are swimming"), ("a cat sleeps", "a cat is asleep"),
         ("the sun is up", "it is night"), ("she reads a book", "a woman is reading")]


@pytest.fixture(scope="module")
def project():
    from paperline.project.discovery import get_project

    return get_project(REPO / "projects", "trans_encoder")


@pytest.fixture(scope="module")
def method(project):
    return project.method()


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory):
    from tiny_models import tiny_sentence_transformer

    return tiny_sentence_transformer(tmp_path_factory.mktemp("st"))


def unlabelled_train():
    """Train pairs whose scores are NaN: any use of them would fail the cross-encoder's [0, 1] target check."""
    from paperline.project.interface import ProjectData

    scored = [ScoredPair(a, b, float(i % 5)) for i, (a, b) in enumerate(PAIRS)]
    return ProjectData.from_rows({"stsb": {"train": [ScoredPair(a, b, float("nan")) for a, b in PAIRS],
                                           "dev": scored, "test": scored}})


def test_card_and_every_config_validate(project):
    assert project.card.paper.arxiv == "2109.13059" and project.trains
    assert project.load_config("default").train.cycles == 3
    assert project.load_config("smoke").train.cycles == 1
    for name in project.configs:
        assert project.load_config(name).train.cross.both_orders


def test_pseudo_labels_round_trip_through_a_hashed_file(method, tiny_st_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(tiny_st_dir), device="cpu")
    labels = method.bi_labels([encoder], PAIRS, batch_size=4)
    assert labels.shape == (len(PAIRS),) and ((labels >= 0) & (labels <= 1)).all()  # clipped cosines
    again = method.bi_labels([encoder, encoder], PAIRS, batch_size=4)  # mutual: the mean of identical labels
    assert again == pytest.approx(labels, abs=1e-6)
    path = tmp_path / "cycle1" / "bi_labels.tsv"
    digest = method.write_labels(path, PAIRS, labels)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    pairs, read = method.read_labels(path)
    assert pairs == PAIRS and read == pytest.approx(labels.tolist(), abs=1e-6)
    assert method.write_labels(tmp_path / "copy.tsv", pairs, read) == digest  # same content, same version


def test_two_cycles_without_labels_record_both_encoders_and_pick_by_dev(project, method, tiny_st_dir, tmp_path):
    from paperline.project.interface import RunContext

    cfg = project.load_config("smoke", [f"base_model={tiny_st_dir}", "train.cycles=2", "train.cross.max_steps=2",
                                        "train.bi.max_steps=2", "train.cross.batch_size=4", "train.bi.batch_size=4"])
    ctx = RunContext(tmp_path / "work", progress=False)
    model = method.train(cfg, unlabelled_train(), ctx)
    records = json.loads(model.output("cycles").read_text())["records"]
    assert [r["cycle"] for r in records] == [0, 1, 2]
    best = max(records[1:], key=lambda r: r["bi"]["dev"])
    assert model.metrics["best_cycle"] == best["cycle"] and model.path == tmp_path / "work" / f"cycle{best['cycle']}" / "bi"
    assert {"cycle1_bi_dev_spearman", "cycle2_cross_test_spearman", "cycle0_bi_test_spearman"} <= set(model.metrics)
    for r in records[1:]:  # each cycle's training data is versioned by content
        for side in ("bi", "cross"):
            path = tmp_path / "work" / f"cycle{r['cycle']}" / f"{side}_labels.tsv"
            assert r[f"{side}_labels_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    evaluation = method.evaluate(model, cfg, unlabelled_train(), ctx)
    assert evaluation.metrics["best_cycle"] == best["cycle"]
    assert evaluation.tables["cycles"]["cycle"] == [0, 1, 2]
    assert evaluation.tags["trans_encoder.cycle2.cross_labels.sha256"] == records[2]["cross_labels_sha256"]
    assert sorted(evaluation.artifacts) == ["cycle1_bi_labels.tsv", "cycle1_cross_labels.tsv",
                                            "cycle2_bi_labels.tsv", "cycle2_cross_labels.tsv"]

    # A resumed job reuses finished cycles instead of training them again.
    (tmp_path / "work" / "cycle2" / "bi_labels.tsv").write_text("not read again\n")
    assert method.train(cfg, unlabelled_train(), ctx).metrics["best_cycle"] == best["cycle"]


def test_mutual_models_label_with_the_main_encoder_and_are_not_trained_in_the_last_cycle(
        project, method, tiny_st_dir, tmp_path):
    """Mutual distillation: the extra bi-encoder's cosines are averaged into the labels and it trains on the cross
    labels like the main one, except in the last cycle, where its model would label nothing."""
    from sentence_transformers import SentenceTransformer

    from paperline.project.interface import RunContext

    cfg = project.load_config("smoke", [f"base_model={tiny_st_dir}", f"train.mutual_models=[{tiny_st_dir}]",
                                        "train.cycles=2", "train.cross.max_steps=2", "train.bi.max_steps=2",
                                        "train.cross.batch_size=4", "train.bi.batch_size=4"])
    work = tmp_path / "work"
    method.train(cfg, unlabelled_train(), RunContext(work, progress=False))
    assert (work / "cycle1" / "bi1").is_dir() and not (work / "cycle2" / "bi1").exists()
    # cycle 2's labels are the mean of both cycle-1 bi-encoders' clipped cosines, as written in its file
    both = [SentenceTransformer(str(work / "cycle1" / name), device="cpu") for name in ("bi", "bi1")]
    _, written = method.read_labels(work / "cycle2" / "bi_labels.tsv")
    assert written == pytest.approx(method.bi_labels(both, PAIRS, batch_size=4).tolist(), abs=1e-5)
    # resuming after the last cycle finds no bi1 there and keeps cycle 1's
    assert method.train(cfg, unlabelled_train(), RunContext(work, progress=False)).metrics["best_cycle"] in (1, 2)
