"""`dialogues`: conversations, one row per turn; the BYU PCC Chit-Chat Challenge (`data/dialogues`).

Columns (tab-separated, header line): `conversation` (an id), `turn` (an integer counting from 0 within the
conversation), `speaker` (A or B: who spoke first is A) and `text` (consecutive messages of one speaker joined
with a space). A method reads `Turn(conversation, turn, speaker, text)` rows, in file order.

Rules, beyond the text checks on conversation and text:

- `turn` is read as a number (a non-number becomes null, a gate failure rather than a crash), and a
  conversation's rows come in turn order: its k-th row (in file order) has turn k. A response-selection method
  builds a context from the turns before a row, so a shuffled or cut conversation would silently train on the
  wrong context. The reader adds a column `turn_in_order` (true or false) that the gate checks.
- `speaker` is A or B. The speakers do not strictly alternate: 197 of the 122,745 real train turns follow a turn
  of the same speaker, so alternation is not a rule.
- Leakage: the splits are made by conversation, so that a held-out context and its reply never sat in train.
  A held-out row is identified by its conversation id and no held-out conversation may occur in train at all
  (a limit of 0; the published split has none by construction).
- Duplicates: a row is its (conversation, turn); a repeat means one turn with two texts (a doubled file), so
  none is allowed.
- Text length: chat users paste long texts; 9 real train turns are longer than the default 5,000 characters
  (the longest 34,632). The limit is 50,000: those pass, a file with a lost delimiter (one row holding the rest
  of the file, millions of characters) still fails. A method truncates turns to its token budget anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from paperline.data.kinds import ColumnCheck, DataKind, RowKey

SPEAKERS = ("A", "B")
ORDER_COLUMN = "turn_in_order"
NUMERIC_TYPES = ["int", "float", "int32", "int64", "float32", "float64", "Int64", "Float64"]


@dataclass(frozen=True)
class Turn:
    conversation: str
    turn: int
    speaker: str
    text: str


def prepare(frame):
    """`turn` to numbers, and the `turn_in_order` flag: a row's turn equals its position in its conversation."""
    import pandas as pd

    if "turn" in frame.columns:
        frame["turn"] = pd.to_numeric(frame["turn"], errors="coerce")
        if "conversation" in frame.columns:
            position = frame.groupby("conversation", sort=False).cumcount()
            frame[ORDER_COLUMN] = (frame["turn"] == position).astype(object)
    return frame


def expectations(E, split: str, frame) -> list[ColumnCheck]:
    checks = []
    if "turn" in frame.columns:
        checks.append(ColumnCheck("turn", E.ExpectColumnValuesToNotBeNull(column="turn"), "turn is not a number"))
    if ORDER_COLUMN in frame.columns:
        in_order = E.ExpectColumnValuesToBeInSet(column=ORDER_COLUMN, value_set=[True])
        checks.append(ColumnCheck(ORDER_COLUMN, in_order, "turn is not its position in its conversation (0, 1, ...)"))
    if "speaker" in frame.columns:
        speakers = E.ExpectColumnValuesToBeInSet(column="speaker", value_set=list(SPEAKERS))
        checks.append(ColumnCheck("speaker", speakers, f"speaker not in {{{', '.join(SPEAKERS)}}}"))
    return checks


def rows(frame) -> list[Turn]:
    return [Turn(c, int(t), s, x) for c, t, s, x in zip(frame.conversation, frame.turn, frame.speaker, frame.text)]


KIND = DataKind(
    name="dialogues",
    corpus_text="text",
    corpus_label="conversation",
    columns=("conversation", "turn", "speaker", "text"),
    text_columns=("conversation", "text"),
    row_type=Turn,
    rows=rows,
    key=RowKey("conversation", ("conversation",)),
    duplicate_key=RowKey("turn", ("conversation", "turn")),
    prepare=prepare,
    expectations=expectations,
    max_duplicate_fraction=0.0,
    max_leakage_fraction=0.0,
    max_text_length=50_000,
)
