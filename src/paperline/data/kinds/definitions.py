"""`definitions`: a term and its dictionary gloss; WordNet 3.0 (`data/definitions`), one row per (term, synset).

Columns (tab-separated, header line): `term` and `definition` are required text; `pos` (n, v, a or r), `synset`
(`<offset>-<pos>`) and `examples` (the gloss's usage examples joined by " | ", often empty) are optional, since
another dictionary may not have them. A method reads `Definition(term, definition, pos, synset, examples)` rows,
with `examples` split into a tuple and the optional fields None where the file has no such column. A term has
one row per sense, so it may repeat within a split.

Rules, beyond the text checks on term and definition:

- `pos`, when the column is present, is one of n, v, a, r (WordNet's satellite adjectives "s" are folded into
  "a" in this data): another value means a shifted column or a different source.
- Leakage: the splits are made by a hash of the lower-cased term, so that a model evaluated on dev or test
  meets only terms it never saw defined. A held-out row is therefore identified by its lower-cased term, and no
  held-out term may occur in train at all (a limit of 0; the published split has none by construction). A
  per-row check would miss a term that sits in test with one sense and in train with another.
- Duplicates: a row is its (term, definition) pair. WordNet itself repeats a few, a term with two synsets of
  the same gloss ("irregularly": "in an irregular manner" in three adverb synsets): 30 of the 198,542 train rows,
  1 of dev's 4,179 and 3 of test's 4,220. The 1% limit lets those through and stops a doubled file.
"""

from __future__ import annotations

from dataclasses import dataclass

from paperline.data.kinds import ColumnCheck, DataKind, RowKey

PARTS_OF_SPEECH = ("n", "v", "a", "r")
EXAMPLE_SEPARATOR = " | "


@dataclass(frozen=True)
class Definition:
    term: str
    definition: str
    pos: str | None = None
    synset: str | None = None
    examples: tuple[str, ...] = ()


def expectations(E, split: str, frame) -> list[ColumnCheck]:
    if "pos" not in frame.columns:
        return []
    in_set = E.ExpectColumnValuesToBeInSet(column="pos", value_set=list(PARTS_OF_SPEECH))
    return [ColumnCheck("pos", in_set, f"pos not in {{{', '.join(PARTS_OF_SPEECH)}}}")]


def rows(frame) -> list[Definition]:
    size = len(frame)
    pos = frame["pos"] if "pos" in frame.columns else [None] * size
    synset = frame["synset"] if "synset" in frame.columns else [None] * size
    examples = frame["examples"] if "examples" in frame.columns else [""] * size
    return [
        Definition(term, definition, p or None, s or None, _split_examples(e))
        for term, definition, p, s, e in zip(frame.term, frame.definition, pos, synset, examples)
    ]


def _split_examples(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(EXAMPLE_SEPARATOR) if part.strip()) if text else ()


KIND = DataKind(
    name="definitions",
    corpus_text="definition",
    corpus_label="term",
    columns=("term", "definition"),
    text_columns=("term", "definition"),
    row_type=Definition,
    rows=rows,
    key=RowKey("term", ("term",), ignore_case=True),
    duplicate_key=RowKey("entry", ("term", "definition")),
    expectations=expectations,
    max_duplicate_fraction=0.01,
    max_leakage_fraction=0.0,
)
