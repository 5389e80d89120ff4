"""The data gate's reports (paperline.data.quality_report): markdown, standalone HTML and JSON of one gate result."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from paperline.data.quality import gate_splits
from paperline.data.quality_report import GateResult

from gate_frames import stsb_frame


@pytest.fixture
def stsb_splits() -> dict[str, pd.DataFrame]:
    return {"train": stsb_frame(40), "dev": stsb_frame(20, first_id=100)}


@pytest.fixture
def failed_result(stsb_splits) -> GateResult:
    stsb_splits["dev"].loc[[3, 5], "score"] = [7.5, -1.0]
    stsb_splits["dev"].loc[8, "sentence1"] = "Tom said <b>hi</b> | bye"
    stsb_splits["dev"].loc[8, "score"] = 11.0
    return gate_splits("stsb", "scored_pairs", stsb_splits)


def test_markdown_report_lists_every_expectation_and_the_failure(failed_result):
    text = failed_result.to_markdown()
    assert text.startswith("# Data gate: stsb (scored_pairs): FAILED (1 failed)\n")
    table_rows = [line for line in text.splitlines() if line.startswith(("| train |", "| dev |", "| train+dev |"))]
    assert len(table_rows) == failed_result.evaluated
    assert "| dev | expect_column_values_to_be_between | score | **no** | 3 of 20 rows unexpected |" in text
    assert "### stsb/dev: expect_column_values_to_be_between(score)" in text
    assert "Tom said <b>hi</b> \\| bye" in text  # the pipe is escaped so that the sample table holds


def test_html_report_is_standalone_and_escaped(failed_result):
    page = failed_result.to_html()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Tom said &lt;b&gt;hi&lt;/b&gt; | bye" in page and "<b>hi</b>" not in page
    assert "<script" not in page and "http" not in page
    assert page.count("<tr") == 1 + failed_result.evaluated + 1 + 3  # headers, outcomes, sample rows


def test_dict_report_is_json_serialisable(failed_result):
    data = json.loads(json.dumps(failed_result.to_dict()))
    assert data["passed"] is False and data["dataset"] == "stsb" and data["kind"] == "scored_pairs"
    assert data["failures"][0]["sample_rows"][0]["score"] == 7.5
    assert len(data["outcomes"]) == data["evaluated"]
    assert data["split_rows"] == {"train": 40, "dev": 20}


def test_passed_report(stsb_splits):
    result = gate_splits("stsb", "scored_pairs", stsb_splits)
    assert result.to_markdown().startswith("# Data gate: stsb (scored_pairs): passed\n")
    assert "## Failures" not in result.to_markdown() and "<h2>Failures</h2>" not in result.to_html()
