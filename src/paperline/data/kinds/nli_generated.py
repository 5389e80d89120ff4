"""`nli_generated`: NLI triplets a language model wrote for premises, with its own similarity ratings (MultiCSR).

Not a DVC dataset: `projects/multicsr` generates it during a run (one TSV, split `train`), and its sha256 is its
version. The data gate checks it like any other dataset before anything trains on it.

Columns (tab-separated, header line): `premise`, `entailment`, `contradiction` (text) and `entailment_score`,
`contradiction_score`: the LM's rating of each pair's similarity in [0, 5], or -1 where the LM gave no number
(kept so the unfiltered arm sees every generated row; curation drops it). A method reads
`GeneratedTriplet(premise, entailment, contradiction, entailment_score, contradiction_score)` rows.

Rules, beyond the text checks every kind gets:

- both scores are numbers in [-1, 5] (a non-number is read as null, and a null is a failure): a rating outside
  that range is a parsing bug in the generator, and curation by thresholds would silently misread it;
- a row is its premise, whitespace stripped: generation writes one row per premise and resumes by skipping the
  premises already written, so a repeated premise means a resume that redid rows; at most 1% may repeat;
- the leakage rule is the same key: a premise in a held-out split must not be a training premise (at most 1%);
  a generated set has one split, `train`, so the rule matters only if a dev split is ever generated.
"""

from __future__ import annotations

from dataclasses import dataclass

from paperline.data.kinds import ColumnCheck, DataKind, RowKey

SCORES = ("entailment_score", "contradiction_score")
SCORE_MIN, SCORE_MAX = -1.0, 5.0


@dataclass(frozen=True)
class GeneratedTriplet:
    premise: str
    entailment: str
    contradiction: str
    entailment_score: float
    contradiction_score: float


def prepare(frame):
    import pandas as pd

    for column in SCORES:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def expectations(E, split: str, frame) -> list[ColumnCheck]:
    import pandas as pd

    checks = []
    for column in SCORES:
        if column not in frame.columns:
            continue
        checks.append(ColumnCheck(column, E.ExpectColumnValuesToNotBeNull(column=column), f"{column} is null"))
        if pd.api.types.is_numeric_dtype(frame[column]):  # prepare made it numeric; a string column is null above
            checks.append(ColumnCheck(column, E.ExpectColumnValuesToBeBetween(
                column=column, min_value=SCORE_MIN, max_value=SCORE_MAX),
                f"{column} outside [{SCORE_MIN:g}, {SCORE_MAX:g}]"))
    return checks


def rows(frame) -> list[GeneratedTriplet]:
    return [GeneratedTriplet(p, e, c, float(se), float(sc)) for p, e, c, se, sc in
            zip(frame.premise, frame.entailment, frame.contradiction, frame.entailment_score,
                frame.contradiction_score)]


KIND = DataKind(
    name="nli_generated",
    columns=("premise", "entailment", "contradiction", *SCORES),
    text_columns=("premise", "entailment", "contradiction"),
    row_type=GeneratedTriplet,
    rows=rows,
    key=RowKey("premise", ("premise",)),
    prepare=prepare,
    expectations=expectations,
    max_duplicate_fraction=0.01,
    max_leakage_fraction=0.01,
)
