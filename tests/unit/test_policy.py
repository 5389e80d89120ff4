"""The promotion policy: the file in the repo loads, each rule can fail alone, and bad files say what is wrong."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from paperline.ops.registry.policy import Budget, Decision, GridCell, Policy, PolicyError, choose_cell, decide, load_policy

REPO_POLICY = Path(__file__).resolve().parents[2] / "registry" / "policy.yaml"
# These tests compare with the champion's recorded number (a project without a comparison on the same rows);
# tests/unit/test_comparison.py covers the margin and the guards on a comparison.
STRICT = Policy(require_gate_passed=True, min_primary_metric=70.0, min_improvement=0.1,
                require_reference_reproduced=True, unscored_champion="recorded")
RECORDED = "(unscored_champion: recorded; this project has no comparison on the same rows)"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def _passing(**overrides) -> dict:
    return {"gate_passed": True, "metric_name": "stsb_test_spearman", "candidate": 84.0, "champion": 83.0,
            "reference_reproduced": True, **overrides}


def test_repo_policy_loads_for_every_project_and_the_default():
    default = load_policy(REPO_POLICY, "a_project_without_overrides")
    assert dataclasses.replace(default, guards=()) == Policy(
        require_gate_passed=True, min_primary_metric=70.0, min_improvement=0.3, require_reference_reproduced=False,
        unscored_champion="refuse", require_approval=False)
    assert {g.metric for g in default.guards} >= {"sts12_16_avg_spearman", "sts1?_spearman"}
    assert load_policy(REPO_POLICY, "sbert_sts") == dataclasses.replace(default, min_primary_metric=80.0,
                                                                         min_improvement=0.2)


def test_project_overrides_only_the_keys_it_names(tmp_path: Path):
    path = _write(tmp_path, """
default: {require_gate_passed: true, min_primary_metric: 70, min_improvement: 0.5}
projects:
  lenient: {require_gate_passed: false, min_primary_metric: null}
""")
    assert load_policy(path, "lenient") == Policy(require_gate_passed=False, min_primary_metric=None,
                                                  min_improvement=0.5)
    assert load_policy(path, "other") == Policy(min_primary_metric=70.0, min_improvement=0.5)


@pytest.mark.parametrize("text, message", [
    ("default: {min_primary_metrc: 70}", "unknown policy key 'min_primary_metrc' in 'default' of {path}"),
    ("projects: {sbert_sts: {margin: 1}}", "unknown policy key 'margin' in project 'sbert_sts' of {path}"),
    ("defaults: {}", "unknown top-level key 'defaults' in {path}"),
    ("default: {require_gate_passed: 'yes'}", "'require_gate_passed' in 'default' of {path} must be true or false"),
    ("default: {min_improvement: true}", "'min_improvement' in 'default' of {path} must be a number"),
    ("default: {min_improvement: -1}", "'min_improvement' in 'default' of {path} must be >= 0"),
    ("default: [1, 2]", "'default' in {path} must be a mapping"),
    ("default: {a: [", "{path} is not valid YAML"),
    ("default: {budgets: {max_layers: 3}}", "'budgets' in 'default' of {path} must be a list"),
    ("default: {guards: [{metric: sts13_spearman}]}", "must have exactly a metric (a name or pattern) and max_drop"),
    ("default: {guards: [{metric: m, max_drop: -1}]}", "must have exactly a metric (a name or pattern) and max_drop"),
    ("default: {unscored_champion: ignore}",
     "'unscored_champion' in 'default' of {path} must be one of refuse, recorded"),
    ("default: {bootstrap_resamples: 10}", "'bootstrap_resamples' in 'default' of {path} must be an integer"),
    ("default: {confidence: 1.5}", "'confidence' in 'default' of {path} must be in [0.5, 1)"),
    ("default: {approval_timeout_s: 0}", "'approval_timeout_s' in 'default' of {path} must be > 0 seconds"),
    ("default: {require_approval: 1}", "'require_approval' in 'default' of {path} must be true or false"),
    ("default: {budgets: [{max_layers: 3}]}", "must have exactly max_layers and max_dims"),
    ("default: {budgets: [{max_layers: 0, max_dims: 64}]}", "must have exactly max_layers and max_dims"),
    ("default: {budgets: [{max_layers: 3, max_dims: 64}, {max_layers: 3, max_dims: 64}]}",
     "lists a budget twice: champion-l3-d64"),
])
def test_bad_policy_files_name_the_key_and_the_file(tmp_path: Path, text: str, message: str):
    path = _write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path, "sbert_sts")
    assert message.format(path=path) in str(caught.value)


def test_a_typo_in_another_project_still_fails(tmp_path: Path):
    path = _write(tmp_path, "projects: {other: {min_improvment: 1}}")
    with pytest.raises(PolicyError, match="min_improvment"):
        load_policy(path, "sbert_sts")


def test_missing_policy_file(tmp_path: Path):
    with pytest.raises(PolicyError, match="no promotion policy at .*missing.yaml"):
        load_policy(tmp_path / "missing.yaml", "sbert_sts")


def test_every_rule_passing_promotes():
    decision = decide(STRICT, **_passing())
    assert decision.promote
    assert decision.reasons == [
        "data gate: passed",
        "floor: passed (stsb_test_spearman 84 >= 70)",
        f"margin: passed (stsb_test_spearman 84 vs the champion's recorded 83 {RECORDED}: +1 >= +0.1, higher is "
        "better)",
        "reference result: passed (reproduced within tolerance)",
    ]


@pytest.mark.parametrize("overrides, failing", [
    ({"gate_passed": False}, "data gate: failed"),
    ({"candidate": 69.5, "champion": 60.0}, "floor: failed (stsb_test_spearman 69.5 < 70)"),
    ({"candidate": 83.05}, f"margin: failed (stsb_test_spearman 83.05 vs the champion's recorded 83 {RECORDED}: "
                           "+0.05 < +0.1"),
    ({"reference_reproduced": False}, "reference result: failed (not reproduced"),
    ({"reference_reproduced": None}, "reference result: failed (not checked"),
    ({"candidate": math.nan}, "floor: failed (stsb_test_spearman is NaN)"),
])
def test_each_rule_alone_blocks_promotion(overrides: dict, failing: str):
    decision = decide(STRICT, **_passing(**overrides))
    assert not decision.promote
    failed = [line for line in decision.reasons if ": failed" in line]
    assert failed and failed[0].startswith(failing), decision.reasons


def test_by_default_a_champion_not_scored_on_the_same_rows_is_not_compared_with():
    decision = decide(dataclasses.replace(STRICT, unscored_champion="refuse"), **_passing())
    assert not decision.promote
    assert ("margin: failed (the champion was not scored in this run: this project has no comparison on the same "
            "rows; the policy (unscored_champion: refuse) does not compare with a number measured on other rows)"
            ) in decision.reasons
    assert Policy().unscored_champion == "refuse"


def test_no_champion_yet_passes_the_margin():
    decision = decide(STRICT, **_passing(champion=None))
    assert decision.promote
    assert "margin: passed (no champion yet)" in decision.reasons


def test_margin_is_inclusive_despite_float_rounding():
    # 80.1 - 80.0 is 0.0999999... in binary floating point; it is still a 0.1 improvement.
    assert decide(STRICT, **_passing(candidate=80.1, champion=80.0)).promote


def test_lower_is_better_flips_floor_and_margin():
    policy = Policy(min_primary_metric=0.5, min_improvement=0.05, unscored_champion="recorded")
    good = decide(policy, gate_passed=True, metric_name="loss", candidate=0.30, champion=0.40,
                  greater_is_better=False)
    assert good.promote, good.reasons
    assert "floor: passed (loss 0.3 <= 0.5)" in good.reasons
    assert f"margin: passed (loss 0.3 vs the champion's recorded 0.4 {RECORDED}: +0.1 >= +0.05, lower is better)" \
        in good.reasons

    above_ceiling = decide(policy, gate_passed=True, metric_name="loss", candidate=0.6, champion=None,
                           greater_is_better=False)
    assert not above_ceiling.promote and "floor: failed (loss 0.6 > 0.5)" in above_ceiling.reasons

    worse = decide(policy, gate_passed=True, metric_name="loss", candidate=0.42, champion=0.40,
                   greater_is_better=False)
    assert not worse.promote and any(line.startswith("margin: failed") for line in worse.reasons)


def test_rules_that_are_not_required_pass_but_say_so():
    lenient = Policy(require_gate_passed=False, min_primary_metric=None, require_reference_reproduced=False)
    decision = decide(lenient, gate_passed=False, metric_name="m", candidate=1.0, champion=None)
    assert decision.promote
    assert decision.reasons[0] == "data gate: passed (not required; the gate failed)"
    assert decision.reasons[1] == "floor: passed (no floor set; m 1)"
    assert decision.reasons[3] == "reference result: passed (not required; not checked)"


def test_decision_to_dict_is_json_with_the_numbers_compared():
    data = decide(STRICT, **_passing()).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["promote"] is True and data["candidate"] == 84.0 and data["champion"] == 83.0
    assert data["policy"]["min_improvement"] == 0.1
    assert Decision(promote=False, reasons=["by hand"]).to_dict() == {"promote": False, "reasons": ["by hand"]}


def test_budgets_load_and_name_their_aliases(tmp_path: Path):
    path = _write(tmp_path, "projects: {m2d: {budgets: [{max_layers: 3, max_dims: 128}, {max_layers: 1, max_dims: 32}]}}")
    policy = load_policy(path, "m2d")
    assert [b.alias for b in policy.budgets] == ["champion-l3-d128", "champion-l1-d32"]
    assert load_policy(path, "other").budgets == ()
    assert load_policy(REPO_POLICY, "matryoshka_2d").budgets  # the repo's elastic project names its budgets


def test_choose_cell_takes_the_best_cell_within_the_budget():
    grid = {"m_l1_d64": 50.0, "m_l2_d64": 49.0, "m_l2_d128": 55.0, "m_l3_d128": 55.0, "m_l3_d256": 70.0,
            "m": 80.0, "other_l1_d32": 99.0, "m_l2_d32": math.nan}
    assert choose_cell(grid, "m", Budget(3, 128)) == GridCell(2, 128, 55.0)  # a tie goes to fewer layers
    assert choose_cell(grid, "m", Budget(2, 64)) == GridCell(1, 64, 50.0)  # the grid, not the budget's corner
    assert choose_cell(grid, "m", Budget(2, 64), greater_is_better=False) == GridCell(2, 64, 49.0)
    assert choose_cell(grid, "m", Budget(1, 32)) is None
