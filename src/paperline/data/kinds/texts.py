"""`texts`: one sentence a row, unlabelled; the corpus of unsupervised methods (e.g. SimCSE-style training).

Columns (tab-separated, header line): `text`; any other column is kept and ignored. A method reads `Text(text)`
rows. No dataset of this kind is in data/ yet; a corpus is written as `data/<name>/{train,dev,test}.tsv` with a
`text` header, and a project card names it as `{dataset: <name>, kind: texts}`.

Rules, beyond the text checks on `text` (a string with at least one non-space character):

- A row is its text, whitespace stripped. At most 1% of a split may repeat an earlier row: an unsupervised
  objective that contrasts a sentence with the rest of its batch is hurt by copies of it (a false negative), and
  a doubled file is the commonest break. A corpus of chat turns ("ok", "lol") repeats far more often, and needs
  deduplicating, or a higher limit given on purpose, before it is gated as `texts`.
- At most 1% of a held-out split's texts may also occur in train: the model saw those sentences while training,
  so a metric over them measures recall, not generalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

from paperline.data.kinds import DataKind, RowKey


@dataclass(frozen=True)
class Text:
    text: str


def rows(frame) -> list[Text]:
    return [Text(text) for text in frame.text]


KIND = DataKind(
    name="texts",
    columns=("text",),
    text_columns=("text",),
    row_type=Text,
    rows=rows,
    key=RowKey("text", ("text",)),
    max_duplicate_fraction=0.01,
    max_leakage_fraction=0.01,
)
