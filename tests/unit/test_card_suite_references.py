"""The method contract's card checks, without a run: which reference-result metrics a card may name."""

from __future__ import annotations

from pathlib import Path

from paperline.ops.compare.suite import SUITE_AVERAGE, SUITE_YEARS
from paperline.project.card import SUITE_METRICS, ReferenceResult
from paperline.project.contract import check_project
from paperline.project.discovery import Project, discover

REPO = Path(__file__).resolve().parents[2]


def test_suite_metrics_are_the_names_the_comparison_reports():
    assert SUITE_METRICS == (*(f"{year}_spearman" for year in SUITE_YEARS), SUITE_AVERAGE)


def test_a_suite_metric_reference_passes_only_for_a_compare_sts_card():
    project = discover(REPO / "projects")["sbert_sts"]
    assert project.card.compare == "sts"
    paper = ReferenceResult(metric="sts14_spearman", value=70.0, tolerance=0.0, checked=False,
                            provenance="a paper's table, under a setup we deviate from")
    assert paper.checked is False and ReferenceResult(metric="m", value=1, tolerance=0, provenance="p").checked
    own = [r for r in project.card.reference_results if r.metric not in SUITE_METRICS]
    card = project.card.model_copy(update={"reference_results": [*own, paper]})
    assert check_project(Project(project.name, project.root, card)) == []

    without = card.model_copy(update={"compare": None})
    problems = check_project(Project(project.name, project.root, without))
    assert len(problems) == 1 and problems[0].startswith(
        "config default: Config.metric_names() does not include sts14_spearman (")
