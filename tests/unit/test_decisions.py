"""The decisions a run makes, as plain functions (paperline.ops.registry.decisions): no Prefect needed to test them."""

from pathlib import Path
from types import SimpleNamespace

from paperline.ops.registry.decisions import Lineage, promotion_decision, reference_reproduced, version_tags
from paperline.ops.registry.policy import Policy
from paperline.project.discovery import discover
from paperline.project.interface import UpstreamModel

REPO = Path(__file__).resolve().parents[2]
CARD = discover(REPO / "projects")["sbert_sts"].card
# the card's reference for the default config, and a run that reproduces it (0.1 below, within its tolerance)
REFERENCE = next(r.value for r in CARD.reference_results if r.metric == "stsb_test_spearman" and r.config == "default")
GOOD = {"stsb_test_spearman": round(REFERENCE - 0.1, 2), "baseline_stsb_test_spearman": 82.03}


def _version(number: str, value: float | None = None):
    tags = {} if value is None else {"paperline.metric.stsb_test_spearman": f"{value:.4f}"}
    return SimpleNamespace(version=number, tags=tags)


def test_reference_results_of_the_card_are_checked_against_a_run():
    assert reference_reproduced(CARD, "default", GOOD) is True
    assert reference_reproduced(CARD, "default", {**GOOD, "stsb_test_spearman": REFERENCE - 0.4}) is False
    assert reference_reproduced(CARD, "smoke", GOOD) is None  # no reference for that config


def test_promotion_compares_with_the_champion_by_its_recorded_metric_only_if_the_policy_says_so():
    refusing = promotion_decision(Policy(min_primary_metric=80.0), CARD, "default", GOOD, "2", _version("1", 70.0))
    assert not refusing.promote and any("unscored_champion: refuse" in r for r in refusing.reasons)
    policy = Policy(min_primary_metric=80.0, min_improvement=0.1, unscored_champion="recorded")
    assert promotion_decision(policy, CARD, "default", GOOD, "2", None).promote
    assert promotion_decision(policy, CARD, "default", GOOD, "2", _version("1", GOOD["stsb_test_spearman"] - 0.5)).promote
    worse = promotion_decision(policy, CARD, "default", GOOD, "2", _version("1", GOOD["stsb_test_spearman"] - 0.01))
    assert not worse.promote and any(r.startswith("margin: failed") for r in worse.reasons)
    below = promotion_decision(policy, CARD, "smoke", {"stsb_test_spearman": 40.0}, "1", None)
    assert not below.promote and any(r.startswith("floor: failed") for r in below.reasons)


def test_a_version_that_is_already_champion_is_not_moved_again():
    decision = promotion_decision(Policy(), CARD, "default", GOOD, "3", _version("3", 83.8))
    assert not decision.promote and decision.reasons[-1] == "v3 is already champion"


def test_lineage_gives_the_run_tags_and_the_store_record_from_one_place(tmp_path):
    teacher = UpstreamModel(role="teacher", project="cross_encoder_sts", name="ce", alias="champion", version="4",
                            run_id="r1", cache_key="k", path=tmp_path)
    lineage = Lineage(project="p", config="smoke", git_commit="abc", dataset_md5="m", flow_run_id="f",
                      flow_run_url="u", model_name="p-smoke", upstream={"teacher": teacher})
    tags = lineage.tags()
    assert tags["paperline.config"] == "smoke" and tags["paperline.upstream.teacher.version"] == "4"
    record = lineage.record(status="failed", mlflow_run_id="run", gate_passed=True, cache_key="key",
                            details={"error": "boom"})
    assert record["config_name"] == "smoke" and record["model_version"] is None
    assert record["details"] == {"error": "boom", "upstream": {"teacher": teacher.record()}}
    assert version_tags(CARD, "key", GOOD, tags)["paperline.metric.stsb_test_spearman"] == f"{GOOD['stsb_test_spearman']:.4f}"
