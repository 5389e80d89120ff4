"""`nli_pairs`: a premise, a hypothesis and their inference label; SNLI 1.0 (`data/snli`, dev and test only).

Columns (tab-separated, header line): `premise`, `hypothesis` (text, space-tokenized in SNLI) and `label`, one of
entailment, neutral, contradiction. A method reads `NliPair(premise, hypothesis, label)` rows (e.g. to build
(anchor, entailment, contradiction) triplets for contrastive training).

Rules, beyond the text checks every kind gets:

- `label` is non-null and one of the three labels: SNLI's raw release marks pairs without annotator consensus
  as "-", and a triplet built from one would teach noise.
- A row is its (premise, hypothesis) pair, whitespace stripped; at most 1% may repeat an earlier row of the same
  split or, for a held-out split, also occur in train (the same limits as STS-B's pairs: a copied or doubled
  split goes far beyond them).
"""

from __future__ import annotations

from dataclasses import dataclass

from paperline.data.kinds import ColumnCheck, DataKind, RowKey

NLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class NliPair:
    premise: str
    hypothesis: str
    label: str


def expectations(E, split: str, frame) -> list[ColumnCheck]:
    if "label" not in frame.columns:
        return []
    return [
        ColumnCheck("label", E.ExpectColumnValuesToNotBeNull(column="label"), "label is null"),
        ColumnCheck("label", E.ExpectColumnValuesToBeInSet(column="label", value_set=list(NLI_LABELS)),
                    f"label not in {{{', '.join(NLI_LABELS)}}}"),
    ]


def rows(frame) -> list[NliPair]:
    return [NliPair(p, h, lab) for p, h, lab in zip(frame.premise, frame.hypothesis, frame.label)]


KIND = DataKind(
    name="nli_pairs",
    columns=("premise", "hypothesis", "label"),
    text_columns=("premise", "hypothesis"),
    row_type=NliPair,
    rows=rows,
    key=RowKey("pair", ("premise", "hypothesis")),
    expectations=expectations,
    max_duplicate_fraction=0.01,
    max_leakage_fraction=0.01,
)
