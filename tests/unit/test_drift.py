"""Embedding drift (paperline.ml.drift) on synthetic Gaussian embeddings: the same distribution is not drift, a
shifted one is, a seed gives one answer, near-duplicates do not fake a drift, too few rows is a clear error, and
the HTML report carries the verdict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paperline.core.errors import PaperlineError
from paperline.ml.drift import MIN_ROWS, DriftInputError, drift_report_html, embedding_drift

DIM = 32


def gaussian(rows: int, seed: int, shift: float = 0.0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc=shift, size=(rows, dim))


def test_the_same_distribution_is_not_drift():
    result = embedding_drift(gaussian(300, 1), gaussian(300, 2))
    assert not result.drifted
    assert abs(result.score - 0.5) < 0.06, result
    assert result.ci_low < 0.5 < result.ci_high
    assert result.p_value > 0.05 and result.secondary["mmd_p_value"] > 0.05


def test_a_shifted_mean_is_drift():
    # a shift of 0.3 in each of 32 dimensions: the means are 1.7 standard deviations apart, an AUC near 0.88
    result = embedding_drift(gaussian(300, 1), gaussian(300, 2, shift=0.3))
    assert result.drifted
    assert result.score > 0.8 and result.ci_low > result.threshold
    assert result.p_value < 0.01 and result.secondary["mmd_p_value"] < 0.01


def test_a_threshold_above_the_score_is_no_drift():
    reference, current = gaussian(300, 1), gaussian(300, 2, shift=0.3)
    score = embedding_drift(reference, current).score
    assert not embedding_drift(reference, current, threshold=min(0.99, score + 0.05)).drifted


def test_one_seed_gives_one_answer_and_another_seed_another_sample():
    reference, current = gaussian(900, 1), gaussian(900, 2, shift=0.05)
    first = embedding_drift(reference, current, seed=3, max_rows=300)
    assert embedding_drift(reference, current, seed=3, max_rows=300) == first
    other = embedding_drift(reference, current, seed=4, max_rows=300)
    assert other.score != first.score and other.least_reference_like != first.least_reference_like


def test_the_sample_is_bounded_and_the_examples_index_the_current_rows():
    reference, current = gaussian(1500, 1), gaussian(700, 2, shift=0.3)
    result = embedding_drift(reference, current, max_rows=300)
    assert (result.reference_rows, result.current_rows) == (300, 300)
    assert (result.reference_total, result.current_total) == (1500, 700)
    assert result.least_reference_like and all(0 <= i < 700 for i in result.least_reference_like)
    # the row the classifier is surest about lies on the far side of the shift
    assert current[result.least_reference_like[0]].mean() > 0.3


def test_copies_in_the_reference_do_not_look_like_drift():
    # each reference text three times over (slightly perturbed): without near-duplicate groups kept in one fold,
    # the classifier recognises held-out copies of texts it trained on and scores 0.62-0.68 here
    rng = np.random.default_rng(0)
    base = rng.normal(size=(150, 128))
    reference = np.vstack([base + 0.01 * rng.normal(size=base.shape) for _ in range(3)])
    result = embedding_drift(reference, rng.normal(size=(450, 128)))
    assert result.score < 0.58 and not result.drifted, result
    assert result.secondary["near_duplicate_rows"] >= 300


def test_too_few_rows_is_an_error_that_says_how_many_are_needed():
    with pytest.raises(DriftInputError) as raised:
        embedding_drift(gaussian(400, 1), gaussian(20, 2))
    assert isinstance(raised.value, PaperlineError)
    message = str(raised.value)
    assert f"at least {MIN_ROWS} rows" in message and "20 current" in message
    with pytest.raises(DriftInputError, match="max_rows"):
        embedding_drift(gaussian(300, 1), gaussian(300, 2), max_rows=10)


def test_embeddings_of_different_models_or_shapes_are_refused():
    with pytest.raises(DriftInputError, match="dimensions"):
        embedding_drift(gaussian(200, 1), gaussian(200, 2, dim=16))
    with pytest.raises(DriftInputError, match="2-D"):
        embedding_drift(np.zeros(300), gaussian(200, 2))
    with pytest.raises(DriftInputError, match="NaN"):
        embedding_drift(np.full((200, DIM), np.nan), gaussian(200, 2))
    with pytest.raises(DriftInputError, match="threshold"):
        embedding_drift(gaussian(200, 1), gaussian(200, 2), threshold=0.4)


def test_the_result_is_json():
    result = embedding_drift(gaussian(200, 1), gaussian(200, 2, shift=0.3))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["drifted"] is True and data["score"] == result.score
    assert data["method"] == result.method and isinstance(data["least_reference_like"], list)
    assert set(data["secondary"]) >= {"mmd2", "mmd_p_value"}


def test_the_html_report_carries_the_verdict_and_stands_alone():
    drifted = embedding_drift(gaussian(200, 1), gaussian(200, 2, shift=0.3))
    page = drift_report_html(drifted, title="drift <check>", reference_name="stsb:dev", current_name="chats",
                             examples={"chats": ["hi <b>there</b>"]})
    assert "DRIFT: chats against stsb:dev" in page and "NO DRIFT" not in page
    assert f"{drifted.score:.4f}" in page and f"{drifted.threshold:.2f}" in page
    assert "drift &lt;check&gt;" in page and "hi &lt;b&gt;there&lt;/b&gt;" in page  # escaped, not markup
    assert "<script" not in page and "http" not in page  # no external script, style or font
    calm = embedding_drift(gaussian(200, 1), gaussian(200, 2))
    assert "NO DRIFT" in drift_report_html(calm, title="t", reference_name="a", current_name="b", examples=None)
