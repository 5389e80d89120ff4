"""Small clean frames of the data kinds for the data-gate tests: distinct rows, valid values, no leakage."""

from __future__ import annotations

import pandas as pd


def stsb_frame(rows: int, first_id: int = 0) -> pd.DataFrame:
    """A small clean STS-B-like split: distinct pairs, scores spread over [0, 5], STS-B's extra columns."""
    ids = range(first_id, first_id + rows)
    return pd.DataFrame(
        {
            "genre": "main-captions",
            "sid": [f"{i:04d}" for i in ids],
            "score": [(i % 11) / 2 for i in ids],
            "sentence1": [f"A man number {i} is playing a guitar." for i in ids],
            "sentence2": [f"Person {i} plays an instrument." for i in ids],
        }
    )


def nli_frame(rows: int, first_id: int = 0) -> pd.DataFrame:
    labels = ["entailment", "neutral", "contradiction"]
    ids = range(first_id, first_id + rows)
    return pd.DataFrame(
        {
            "premise": [f"Two dogs number {i} run on grass ." for i in ids],
            "hypothesis": [f"Animal {i} is outside ." for i in ids],
            "label": [labels[i % 3] for i in ids],
        }
    )
