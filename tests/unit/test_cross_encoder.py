"""The cross-encoder building block on a tiny random BERT: rows, training, scores, the MLflow folder it reads."""

from __future__ import annotations

import pytest

from paperline.ml import cross_encoder
from paperline.ml.models import ModelError
from paperline.ml.training import TrainSettings

PAIRS = [("a man plays a guitar", "a person plays guitar"), ("a dog runs", "the market fell"),
         ("two kids swim", "children are swimming"), ("a cat sleeps", "a cat is asleep")]


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory):
    from tiny_models import tiny_bert

    return cross_encoder.load_cross_encoder(str(tiny_bert(tmp_path_factory.mktemp("ce"))), max_length=32, device="cpu")


def test_pair_rows_both_orders_and_targets_in_unit_range():
    rows = cross_encoder.pair_dataset(PAIRS[:2], [1.0, 0.25], both_orders=True)
    assert rows.column_names == ["sentence1", "sentence2", "score"]
    assert list(zip(rows["sentence1"], rows["sentence2"], rows["score"])) == [
        (PAIRS[0][0], PAIRS[0][1], 1.0), (PAIRS[1][0], PAIRS[1][1], 0.25),
        (PAIRS[0][1], PAIRS[0][0], 1.0), (PAIRS[1][1], PAIRS[1][0], 0.25)]
    assert len(cross_encoder.pair_dataset(PAIRS[:2], [1.0, 0.25], both_orders=False)) == 2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cross_encoder.pair_dataset(PAIRS[:1], [4.2])  # a raw STS score, not divided by 5
    with pytest.raises(ValueError, match="2 pairs but 1 scores"):
        cross_encoder.pair_dataset(PAIRS[:2], [0.5])


def test_a_cross_encoder_from_an_encoder_has_one_logit_and_scores_in_unit_range(tiny_ce):
    assert tiny_ce.num_labels == 1
    scores = cross_encoder.predict(tiny_ce, PAIRS, batch_size=2)
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 1)).all()
    both = cross_encoder.predict(tiny_ce, PAIRS, batch_size=2, both_orders=True)
    swapped = cross_encoder.predict(tiny_ce, [(b, a) for a, b in PAIRS], batch_size=2)
    assert both == pytest.approx((scores + swapped) / 2, abs=1e-6)  # symmetric by averaging
    assert cross_encoder.predict(tiny_ce, []).shape == (0,)


def test_training_moves_the_scores_towards_the_targets_and_checkpoints(tiny_ce, tmp_path):
    import copy

    model = copy.deepcopy(tiny_ce)
    targets = [1.0, 0.0, 1.0, 1.0]
    before = cross_encoder.predict(model, PAIRS)
    result = cross_encoder.train(model, PAIRS, targets, TrainSettings(
        output_dir=tmp_path / "ckpt", batch_size=4, learning_rate=5e-3, warmup_ratio=0.0, max_steps=8,
        checkpoint_every=4, progress=False, device="cpu"))
    after = cross_encoder.predict(model, PAIRS)
    assert result.global_step == 8 and (tmp_path / "ckpt" / "checkpoint-8").is_dir()
    error = lambda s: sum((x - y) ** 2 for x, y in zip(s, targets))  # noqa: E731
    assert error(after) < error(before)


def test_spearman_is_x100_and_needs_matching_lists():
    assert cross_encoder.spearman([0.1, 0.2, 0.3], [1, 2, 3]) == pytest.approx(100.0)
    assert cross_encoder.spearman([0.3, 0.2, 0.1], [1, 2, 3]) == pytest.approx(-100.0)
    with pytest.raises(ValueError):
        cross_encoder.spearman([0.1], [1, 2])


def test_a_folder_that_is_not_a_logged_cross_encoder_is_one_clear_error(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors:\n  sentence_transformers: {}\n")
    with pytest.raises(ModelError, match="not a cross-encoder logged by paperline"):
        cross_encoder.logged_folder(tmp_path)
    with pytest.raises(ModelError, match="not a cross-encoder"):
        cross_encoder.logged_folder(tmp_path / "missing")


def test_pyfunc_round_trip_scores_pairs(tiny_ce, tmp_path):
    """Logged the way the flow logs it, loaded back as a pyfunc and as a CrossEncoder: the same scores."""
    import mlflow
    import numpy as np

    folder = tmp_path / "saved"
    tiny_ce.save(str(folder))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # Artifacts in the test's folder: the default experiment would write ./mlruns into the checkout.
        experiment = mlflow.create_experiment("ce", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.pyfunc.log_model(name="model", **cross_encoder.pyfunc_kwargs(folder, 32))
        served = mlflow.pyfunc.load_model(info.model_uri).predict([list(p) for p in PAIRS])
        local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "download"))
        reloaded = cross_encoder.load_logged(local, device="cpu")
    finally:
        mlflow.set_tracking_uri(None)
    expected = cross_encoder.predict(tiny_ce, PAIRS)
    assert served.dtype == np.float32 and served == pytest.approx(expected, abs=1e-5)
    assert cross_encoder.predict(reloaded, PAIRS) == pytest.approx(expected, abs=1e-5)
