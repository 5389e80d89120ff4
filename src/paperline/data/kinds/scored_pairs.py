"""`scored_pairs`: two sentences and a similarity score; the STS Benchmark (`data/stsb`).

Columns (tab-separated, header line; STS-B's genre, source, year and sid are kept and ignored):
`sentence1`, `sentence2` (text) and `score`, a float in [0, 5] (0: unrelated, 5: same meaning). A method reads
`ScoredPair(sentence1, sentence2, score)` rows.

Rules, beyond the text checks every kind gets:

- `score` is read as a number, a non-number becoming null (so a stray "five" is a gate failure, not a crash),
  then must be non-null, numeric and within [0, 5]: a rescaled or shifted file trains a model that looks fine
  and is wrong.
- A row is its (sentence1, sentence2) pair, whitespace stripped. Duplicates and leakage are limited by a
  fraction, not forbidden, because the real STS Benchmark has both: 43 of its 5,749 train rows (0.75%) repeat
  an earlier train pair, and 6 dev and 7 test pairs (0.40% and 0.51%) also occur in train (the SemEval years it
  was built from reused some pairs). A limit of 1% lets the published data through and still stops a split that
  was copied or concatenated twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from paperline.data.kinds import ColumnCheck, DataKind, RowKey

SCORE_MIN, SCORE_MAX = 0.0, 5.0
# numpy/pandas dtype names and Python type names GX accepts for a numeric score column.
NUMERIC_TYPES = ["int", "float", "int32", "int64", "float32", "float64", "Int64", "Float64"]


@dataclass(frozen=True)
class ScoredPair:
    sentence1: str
    sentence2: str
    score: float


def prepare(frame):
    import pandas as pd

    if "score" in frame.columns:
        frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame


def expectations(E, split: str, frame) -> list[ColumnCheck]:
    if "score" not in frame.columns:
        return []
    checks = [
        ColumnCheck("score", E.ExpectColumnValuesToNotBeNull(column="score"), "score is null"),
        ColumnCheck("score", E.ExpectColumnValuesToBeInTypeList(column="score", type_list=NUMERIC_TYPES),
                    "score is not a number"),
    ]
    # GX's range check raises on strings; a non-numeric score is already one failure, of the type check.
    if _is_numeric(frame["score"]):
        between = E.ExpectColumnValuesToBeBetween(column="score", min_value=SCORE_MIN, max_value=SCORE_MAX)
        checks.append(ColumnCheck("score", between, f"score outside [{SCORE_MIN:g}, {SCORE_MAX:g}]"))
    return checks


def rows(frame) -> list[ScoredPair]:
    return [ScoredPair(a, b, float(s)) for a, b, s in zip(frame.sentence1, frame.sentence2, frame.score)]


def _is_numeric(values) -> bool:
    import pandas as pd

    return pd.api.types.infer_dtype(values, skipna=True) in {"integer", "floating", "mixed-integer-float", "empty"}


KIND = DataKind(
    name="scored_pairs",
    columns=("sentence1", "sentence2", "score"),
    text_columns=("sentence1", "sentence2"),
    row_type=ScoredPair,
    rows=rows,
    key=RowKey("pair", ("sentence1", "sentence2")),
    prepare=prepare,
    expectations=expectations,
    max_duplicate_fraction=0.01,
    max_leakage_fraction=0.01,
)
