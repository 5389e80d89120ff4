"""The data gate (paperline.data.quality) on real data and on corrupted copies, with real Great Expectations."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from paperline.data.kinds import UnknownKindError, kind_names
from paperline.data.quality import GateLimits, gate_splits
from paperline.data.quality_report import GateResult

from gate_frames import nli_frame, stsb_frame

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_MINIMAL, keep_default_na=False)


def real_splits(dataset: str, names: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    folder = DATASETS / dataset
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}")
    return {name: read_tsv(folder / f"{name}.tsv") for name in names}


@pytest.fixture
def stsb_splits() -> dict[str, pd.DataFrame]:
    return {"train": stsb_frame(40), "dev": stsb_frame(20, first_id=100)}


def failure_keys(result: GateResult) -> list[tuple[str, str, str | None]]:
    return [(f.split, f.expectation, f.column) for f in result.failures]


# ---------------------------------------------------------------------------------------------------------------
# Real data


def test_real_stsb_passes_with_default_limits():
    splits = real_splits("stsb", ("train", "dev", "test"))
    result = gate_splits("stsb", "scored_pairs", splits)
    assert result.passed, "\n".join(result.summary_lines())
    assert result.split_rows == {"train": 5749, "dev": 1500, "test": 1379}
    assert result.summary_lines() == [
        f"passed: {result.evaluated} expectations on splits train (5749 rows), dev (1500 rows), test (1379 rows)"
    ]
    # 16 per split (row count, 3 columns exist, 4 per text column, 3 for score, duplicates) + 2 leakage checks.
    assert result.evaluated == 3 * 16 + 2


def test_real_stsb_known_duplicates_and_overlap_fail_strict_limits():
    """STS-B as published repeats pairs within splits (43 train, 2 dev, 1 test rows) and shares 6 dev and 7 test
    pairs with train: the default limits tolerate them, zero limits show each."""
    splits = real_splits("stsb", ("train", "dev", "test"))
    strict = GateLimits(max_duplicate_fraction=0.0, max_leakage_fraction=0.0)
    result = gate_splits("stsb", "scored_pairs", splits, strict)
    assert failure_keys(result) == [
        ("train", "expect_column_proportion_of_unique_values_to_be_between", "pair_key"),
        ("dev", "expect_column_proportion_of_unique_values_to_be_between", "pair_key"),
        ("train+dev", "expect_column_values_to_be_in_set", "pair_in_train"),
        ("test", "expect_column_proportion_of_unique_values_to_be_between", "pair_key"),
        ("train+test", "expect_column_values_to_be_in_set", "pair_in_train"),
    ]
    train_dups, dev_dups, dev_leak, test_dups, test_leak = result.failures
    assert "repeats an earlier row in 43 of 5749 rows" in train_dups.detail
    assert "repeats an earlier row in 2 of 1500 rows" in dev_dups.detail
    assert "repeats an earlier row in 1 of 1379 rows" in test_dups.detail
    assert "in 6 of 1500 rows" in dev_leak.detail
    assert "in 7 of 1379 rows" in test_leak.detail
    train_pairs = set(zip(splits["train"]["sentence1"].str.strip(), splits["train"]["sentence2"].str.strip()))
    for row in dev_leak.sample_rows:
        assert (row["sentence1"].strip(), row["sentence2"].strip()) in train_pairs


def test_real_snli_dev_and_test_pass():
    splits = real_splits("snli", ("dev", "test"))
    result = gate_splits("snli", "nli_pairs", splits)
    assert result.passed, "\n".join(result.summary_lines())
    assert result.split_rows == {"dev": 9842, "test": 9824}
    # No train split: nothing to leak into, so no leakage check.
    assert not any(o.split.startswith("train") for o in result.outcomes)


# ---------------------------------------------------------------------------------------------------------------
# Clean and corrupted small frames


def test_clean_small_frames_pass(stsb_splits):
    assert gate_splits("stsb", "scored_pairs", stsb_splits).passed
    assert gate_splits("snli", "nli_pairs", {"train": nli_frame(30), "dev": nli_frame(15, 100)}).passed


def _scores_out_of_range(splits):
    splits["dev"].loc[[3, 5], "score"] = [7.5, -1.0]
    return ("dev", "expect_column_values_to_be_between", "score"), {"score": [7.5, -1.0]}


def _empty_sentence(splits):
    splits["dev"].loc[2, "sentence1"] = ""
    return ("dev", "expect_column_values_to_match_regex", "sentence1"), {"sentence1": [""]}


def _whitespace_sentence(splits):
    splits["train"].loc[9, "sentence2"] = "  \t "
    return ("train", "expect_column_values_to_match_regex", "sentence2"), {"sentence2": ["  \t "]}


def _null_sentence(splits):
    splits["dev"].loc[4, "sentence2"] = None
    return ("dev", "expect_column_values_to_not_be_null", "sentence2"), {"sentence2": [None]}


def _null_score(splits):
    splits["train"].loc[10, "score"] = None
    return ("train", "expect_column_values_to_not_be_null", "score"), {"score": [None]}


def _text_score(splits):
    splits["dev"]["score"] = splits["dev"]["score"].astype(object)
    splits["dev"].loc[1, "score"] = "high"
    return ("dev", "expect_column_values_to_be_in_type_list", "score"), {"score": ["high"]}


def _number_as_sentence(splits):
    splits["dev"]["sentence1"] = splits["dev"]["sentence1"].astype(object)
    splits["dev"].loc[6, "sentence1"] = 42
    return ("dev", "expect_column_values_to_be_of_type", "sentence1"), {"sentence1": [42]}


def _dev_row_copied_into_train(splits):
    splits["train"] = pd.concat([splits["train"], splits["dev"].iloc[[7]]], ignore_index=True)
    return ("train+dev", "expect_column_values_to_be_in_set", "pair_in_train"), {"sid": ["0107"]}


def _leak_hidden_by_whitespace(splits):
    leaked = splits["dev"].iloc[[7]].assign(sentence1=lambda f: "  " + f["sentence1"] + " ")
    splits["train"] = pd.concat([splits["train"], leaked], ignore_index=True)
    return ("train+dev", "expect_column_values_to_be_in_set", "pair_in_train"), {"sid": ["0107"]}


def _many_duplicates(splits):
    splits["train"] = pd.concat([splits["train"]] + [splits["train"].iloc[[0]]] * 5, ignore_index=True)
    return ("train", "expect_column_proportion_of_unique_values_to_be_between", "pair_key"), {"sid": ["0000"] * 3}


CORRUPTIONS = [
    _scores_out_of_range,
    _empty_sentence,
    _whitespace_sentence,
    _null_sentence,
    _null_score,
    _text_score,
    _number_as_sentence,
    _dev_row_copied_into_train,
    _leak_hidden_by_whitespace,
    _many_duplicates,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_each_corruption_is_one_failure_with_the_offending_rows(stsb_splits, corrupt):
    expected, sample_values = corrupt(stsb_splits)
    result = gate_splits("stsb", "scored_pairs", stsb_splits)
    assert not result.passed
    assert failure_keys(result) == [expected]
    samples = result.failures[0].sample_rows
    for column, values in sample_values.items():
        assert [row[column] for row in samples] == values
    # Sample rows keep the columns as given, extra ones included, not the gate's derived columns.
    assert set(samples[0]) == {"genre", "sid", "score", "sentence1", "sentence2"}


def test_missing_column_names_it_and_the_columns_found(stsb_splits):
    stsb_splits["dev"] = stsb_splits["dev"].rename(columns={"score": "similarity"})
    result = gate_splits("stsb", "scored_pairs", stsb_splits)
    assert failure_keys(result) == [("dev", "expect_column_to_exist", "score")]
    detail = result.failures[0].detail
    assert detail == "column 'score' is missing; found columns: genre, sid, similarity, sentence1, sentence2"
    assert result.failures[0].sample_rows == []


def test_too_few_rows(stsb_splits):
    result = gate_splits("stsb", "scored_pairs", stsb_splits, GateLimits(min_rows=25))
    assert failure_keys(result) == [("dev", "expect_table_row_count_to_be_between", None)]
    assert result.failures[0].detail == "row count outside [25, 10000000] (observed 20)"


def test_empty_split_is_one_row_count_failure(stsb_splits):
    stsb_splits["test"] = stsb_splits["dev"].iloc[:0]
    result = gate_splits("stsb", "scored_pairs", stsb_splits)
    assert failure_keys(result) == [("test", "expect_table_row_count_to_be_between", None)]


def test_bad_and_missing_nli_labels():
    dev = nli_frame(30)
    dev.loc[3, "label"] = "-"
    dev.loc[4, "label"] = None
    result = gate_splits("snli", "nli_pairs", {"dev": dev})
    assert failure_keys(result) == [
        ("dev", "expect_column_values_to_not_be_null", "label"),
        ("dev", "expect_column_values_to_be_in_set", "label"),
    ]
    assert result.failures[1].sample_rows == [dev.iloc[3].to_dict()]
    assert result.failures[1].detail == "label not in {entailment, neutral, contradiction} in 1 of 30 rows (3.33%)"


def test_sample_rows_follow_the_frames_own_index(stsb_splits):
    # A filtered frame keeps gaps in its index; the sample must still be the offending row.
    dev = stsb_splits["dev"].iloc[::2]
    dev.loc[dev.index[4], "score"] = 9.0
    result = gate_splits("stsb", "scored_pairs", {"dev": dev})
    assert result.failures[0].sample_rows == [{**dev.iloc[4].to_dict(), "score": 9.0}]


def test_all_corruptions_at_once_give_one_failure_and_one_line_each(stsb_splits):
    for corrupt in (_scores_out_of_range, _empty_sentence, _null_score, _dev_row_copied_into_train, _many_duplicates):
        corrupt(stsb_splits)
    stsb_splits["test"] = stsb_frame(20, first_id=200).drop(columns=["sentence2"])
    result = gate_splits("stsb", "scored_pairs", stsb_splits)
    assert sorted(failure_keys(result)) == sorted(
        [
            ("dev", "expect_column_values_to_be_between", "score"),
            ("dev", "expect_column_values_to_match_regex", "sentence1"),
            ("train", "expect_column_values_to_not_be_null", "score"),
            ("train+dev", "expect_column_values_to_be_in_set", "pair_in_train"),
            ("train", "expect_column_proportion_of_unique_values_to_be_between", "pair_key"),
            ("test", "expect_column_to_exist", "sentence2"),
        ]
    )
    lines = result.summary_lines()
    assert len(lines) == len(result.failures)
    assert lines[0].startswith("stsb/train: expect_column_values_to_not_be_null(score): score is null in 1 of 46 rows (2.17%)")
    assert all(line.startswith("stsb/") for line in lines)
    between = next(line for line in lines if "between(score)" in line)
    assert "score outside [0, 5] in 2 of 20 rows (10.00%); e.g. {" in between and '"score": 7.5' in between


# ---------------------------------------------------------------------------------------------------------------
# Limits and arguments


def test_leakage_check_can_be_switched_off(stsb_splits):
    _dev_row_copied_into_train(stsb_splits)
    result = gate_splits("stsb", "scored_pairs", stsb_splits, GateLimits(check_leakage=False))
    assert result.passed
    assert not any(o.split == "train+dev" for o in result.outcomes)


def test_leakage_within_its_limit_passes_and_shows_in_the_report(stsb_splits):
    _dev_row_copied_into_train(stsb_splits)
    result = gate_splits("stsb", "scored_pairs", stsb_splits, GateLimits(max_leakage_fraction=0.05))
    assert result.passed
    leak = next(o for o in result.outcomes if o.split == "train+dev")
    assert leak.observed == "1 of 20 rows unexpected"


def test_other_train_split_name_is_used_for_leakage():
    splits = {"fit": stsb_frame(40), "holdout": stsb_frame(20, first_id=100)}
    splits["fit"] = pd.concat([splits["fit"], splits["holdout"].iloc[[0]]], ignore_index=True)
    result = gate_splits("stsb", "scored_pairs", splits, train_split="fit")
    assert failure_keys(result) == [("fit+holdout", "expect_column_values_to_be_in_set", "pair_in_fit")]


def test_unknown_kind_is_one_error_naming_the_known_kinds(stsb_splits):
    with pytest.raises(UnknownKindError) as error:
        gate_splits("stsb", "triplets", stsb_splits)
    known = ", ".join(kind_names())  # every file in src/paperline/data/kinds/, whatever has been added since
    assert "scored_pairs" in known and str(error.value).startswith(
        f"unknown data kind 'triplets'; known kinds: {known} (one file each in "
    )


@pytest.mark.parametrize(
    "kwargs", [{"min_rows": 10, "max_rows": 5}, {"max_duplicate_fraction": 1.5}, {"max_leakage_fraction": -0.1}]
)
def test_inconsistent_limits_are_refused(kwargs):
    with pytest.raises(ValueError, match="GateLimits"):
        GateLimits(**kwargs)


def test_gate_prints_nothing(stsb_splits, capfd):
    gate_splits("stsb", "scored_pairs", stsb_splits)
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")


# ---------------------------------------------------------------------------------------------------------------
# Import


def test_module_imports_without_great_expectations():
    # A bare training worker has no GX: importing the module, and building results, must not need it.
    code = (
        "import sys; sys.modules['great_expectations'] = None\n"
        "import paperline.data.quality as q\n"
        "r = q.GateResult('d', 'nli_pairs', True, 0, [], {'dev': 1})\n"
        "assert r.summary_lines() == ['passed: 0 expectations on splits dev (1 rows)']\n"
        "assert 'pandas' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- data that used to pass the gate (fault-injection findings) -----------------------------------------------


def test_a_million_character_sentence_fails_the_gate_and_the_report_cuts_it(stsb_splits):
    stsb_splits["train"].loc[3, "sentence1"] = "word " * 200_000
    result = gate_splits("stsb", "scored_pairs", stsb_splits)
    assert not result.passed
    (failure,) = result.failures
    assert failure.split == "train" and failure.column == "sentence1"
    assert "longer than 5,000 characters in 1 of 40 rows" in failure.detail
    shown = failure.sample_rows[0]["sentence1"]
    assert len(shown) < 400 and shown.endswith("(1,000,000 characters)")


def test_a_split_cut_below_the_cards_floor_fails_the_gate(stsb_splits):
    assert gate_splits("stsb", "scored_pairs", stsb_splits, min_rows={"train": 30}).passed
    result = gate_splits("stsb", "scored_pairs", stsb_splits, min_rows={"train": 5000, "test": 1000})
    (failure,) = result.failures
    assert failure.split == "train" and "row count outside [5000," in failure.detail


def test_a_file_that_is_not_utf8_is_a_gate_failure_naming_the_file_and_line(tmp_path):
    from paperline.core.config import DatasetUse, ProjectConfig
    from paperline.data.datasets import DatasetRef
    from paperline.data.quality import gate_datasets

    folder = tmp_path / "stsb"
    folder.mkdir()
    for name, frame in {"train": stsb_frame(40), "dev": stsb_frame(20, first_id=100)}.items():
        frame.to_csv(folder / f"{name}.tsv", sep="\t", index=False)
    raw = (folder / "dev.tsv").read_bytes().split(b"\n")
    raw[5] = raw[5].replace(b"guitar", b"guit\xe4r")  # latin-1, not UTF-8
    (folder / "dev.tsv").write_bytes(b"\n".join(raw))
    cfg = ProjectConfig(data={"stsb": DatasetUse(kind="scored_pairs", splits=["train", "dev"])})
    outcome = gate_datasets({"stsb": DatasetRef("stsb", "scored_pairs", folder, "v")}, cfg)
    assert not outcome.passed
    (failure,) = outcome.results[0].failures
    assert failure.split == "dev" and failure.expectation == "file_is_utf8_text"
    assert f"{folder / 'dev.tsv'} is not UTF-8 text: byte 0xe4 on line 6" in failure.detail
    assert "guit\ufffdr" in failure.sample_rows[0]["text"]
    assert outcome.results[0].split_rows == {"train": 40, "dev": 0}


def _stsb_folder(tmp_path):
    folder = tmp_path / "stsb"
    folder.mkdir()
    for name, frame in {"train": stsb_frame(40), "dev": stsb_frame(20, first_id=100)}.items():
        frame.to_csv(folder / f"{name}.tsv", sep="\t", index=False)
    return folder


def _gate_dev(folder):
    from paperline.core.config import DatasetUse, ProjectConfig
    from paperline.data.datasets import DatasetRef
    from paperline.data.quality import gate_datasets

    cfg = ProjectConfig(data={"stsb": DatasetUse(kind="scored_pairs", splits=["train", "dev"])})
    outcome = gate_datasets({"stsb": DatasetRef("stsb", "scored_pairs", folder, "v")}, cfg)
    assert not outcome.passed
    (failure,) = outcome.results[0].failures
    assert failure.split == "dev" and failure.expectation == "file_is_tab_separated"
    assert outcome.results[0].split_rows == {"train": 40, "dev": 0}
    return failure


def test_a_quoted_field_the_file_ends_inside_is_a_gate_failure_naming_the_line_it_starts_on(tmp_path):
    """pandas says `EOF inside string starting at row 7` (records, from 0); the gate names the line an editor
    shows, after a quoted field that holds newlines."""
    folder = _stsb_folder(tmp_path)
    lines = (folder / "dev.tsv").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + '\t"A two-line\nquoted sentence."'  # a valid quoted field
    lines[7] = lines[7].rsplit("\t", 1)[0] + '\t"cut short'  # a quote that the file never closes
    (folder / "dev.tsv").write_text("\n".join(lines[:8]))
    failure = _gate_dev(folder)
    assert f"{folder / 'dev.tsv'} cannot be read as tab-separated text: the quoted field that starts on line 9 " \
           "is never closed" in failure.detail
    assert failure.sample_rows == [{"line": 9, "text": lines[7]}]
    assert "EOF" not in failure.detail


def test_a_line_with_more_fields_than_the_header_or_an_empty_file_is_a_gate_failure(tmp_path):
    folder = _stsb_folder(tmp_path)
    lines = (folder / "dev.tsv").read_text().splitlines()
    lines[4] += "\tstray"
    (folder / "dev.tsv").write_text("\n".join(lines) + "\n")
    failure = _gate_dev(folder)
    assert "line 5 has 6 fields where the header has 5" in failure.detail and failure.sample_rows[0]["line"] == 5
    (folder / "dev.tsv").write_text("")
    assert f"{folder / 'dev.tsv'} is empty" in _gate_dev(folder).detail
