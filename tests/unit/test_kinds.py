"""Data kinds as plug-ins (paperline.data.kinds): the folder scan, the one-line unknown-kind error, and the
`definitions`, `texts` and `dialogues` kinds through the real reader and the real GX gate, on fixture files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import paperline.data.kinds as kinds
from paperline.core.errors import PaperlineError
from paperline.data.datasets import DatasetRef, read_frame, read_split
from paperline.data.kinds import KindDefinitionError, UnknownKindError, get_kind, kind_names
from paperline.data.kinds.definitions import Definition
from paperline.data.kinds.texts import Text
from paperline.data.quality import GateLimits, gate_splits

REPO = Path(__file__).resolve().parents[2]
KINDS_DIR = REPO / "src" / "paperline" / "data" / "kinds"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kinds"
SHARED_DEFINITIONS = REPO.parent / "shared" / "datasets" / "definitions"
SPLITS = ("train", "dev", "test")


def fixture_splits(kind: str, **replaced: str) -> dict:
    """The clean train/dev/test fixture splits of `kind`, read as the pipeline reads them; `split=name` swaps in
    the broken variant `broken/<name>.tsv` for that split."""
    folder = FIXTURES / kind
    paths = {split: folder / f"{split}.tsv" for split in SPLITS}
    paths.update({split: folder / "broken" / f"{name}.tsv" for split, name in replaced.items()})
    return {split: read_frame(path, kind) for split, path in paths.items()}


def failure_keys(result) -> list[tuple[str, str, str | None]]:
    return [(f.split, f.expectation, f.column) for f in result.failures]


# ---------------------------------------------------------------------------------------------------------------
# The registry


def test_registry_finds_every_kind_file_by_scanning():
    files = sorted(p.stem for p in KINDS_DIR.glob("*.py") if not p.name.startswith("_"))
    assert files == ["captioned_images", "definitions", "dialogues", "nli_generated", "nli_pairs", "scored_pairs",
                     "texts"]
    assert kind_names() == files
    for name in files:
        assert get_kind(name).name == name


def test_unknown_kind_is_one_line_naming_the_known_kinds(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(UnknownKindError) as error:
        get_kind("foo")
    assert isinstance(error.value, PaperlineError)
    assert str(error.value) == ("unknown data kind 'foo'; known kinds: captioned_images, definitions, dialogues, "
                                "nli_generated, nli_pairs, scored_pairs, texts "
                                "(one file each in src/paperline/data/kinds/)")


TRIPLETS = '''"""`triplets`: an anchor, a positive and a negative sentence (a test kind)."""

from dataclasses import dataclass

from paperline.data.kinds import DataKind, RowKey


@dataclass(frozen=True)
class Triplet:
    anchor: str
    positive: str
    negative: str


KIND = DataKind(
    name="triplets",
    columns=("anchor", "positive", "negative"),
    text_columns=("anchor", "positive", "negative"),
    row_type=Triplet,
    rows=lambda frame: [Triplet(*row) for row in zip(frame.anchor, frame.positive, frame.negative)],
    key=RowKey("triplet", ("anchor", "positive", "negative")),
)
'''


@pytest.fixture
def kinds_copy(tmp_path, monkeypatch):
    """The registry pointed at a copy of the kinds folder, as if files were dropped into the real one."""
    folder = tmp_path / "kinds"
    shutil.copytree(KINDS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(kinds, "__path__", [str(folder)])
    kinds.clear_cache()
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("paperline.data.kinds."):
            del sys.modules[name]
    kinds.clear_cache()


def test_a_kind_dropped_into_the_folder_is_found_with_no_other_file_edited(kinds_copy, tmp_path):
    (kinds_copy / "triplets.py").write_text(TRIPLETS)
    assert kind_names() == ["captioned_images", "definitions", "dialogues", "nli_generated", "nli_pairs",
                            "scored_pairs", "texts", "triplets"]
    # The reader and the gate take it by name: nothing central lists kinds.
    path = tmp_path / "train.tsv"
    path.write_text("anchor\tpositive\tnegative\na dog runs\ta dog is running\ta cat sleeps\n"
                    "kids swim\tchildren are swimming\tthe market fell\n")
    rows = read_split(DatasetRef("t", "triplets", tmp_path, "-"), "train")
    assert [type(row).__name__ for row in rows] == ["Triplet", "Triplet"] and rows[1].negative == "the market fell"
    frame = read_frame(path, "triplets")
    assert gate_splits("t", "triplets", {"train": frame}).passed
    frame.loc[1, "negative"] = " "
    result = gate_splits("t", "triplets", {"train": frame})
    assert failure_keys(result) == [("train", "expect_column_values_to_match_regex", "negative")]


def test_a_kind_file_without_kind_is_one_clear_error(kinds_copy):
    (kinds_copy / "helpers.py").write_text("SEPARATOR = ' | '\n")
    with pytest.raises(KindDefinitionError, match=r"helpers\.py defines no `KIND = DataKind\(...\)`.*start a "
                                                  r"helper's name with _"):
        kind_names()
    (kinds_copy / "helpers.py").rename(kinds_copy / "_helpers.py")
    kinds.clear_cache()
    assert "_helpers" not in kind_names() and len(kind_names()) == 7


def test_a_kind_named_unlike_its_file_is_refused(kinds_copy):
    (kinds_copy / "triplet.py").write_text(TRIPLETS)
    with pytest.raises(KindDefinitionError, match="KIND is named 'triplets'; name it after its file, 'triplet'"):
        get_kind("triplet")


def test_a_kind_whose_key_is_not_among_its_columns_is_refused():
    with pytest.raises(KindDefinitionError, match="key names title, which are not among its columns text"):
        kinds.DataKind(name="x", columns=("text",), text_columns=("text",), row_type=Text, rows=list,
                       key=kinds.RowKey("title", ("title",)))


def test_kind_files_and_the_reader_module_import_nothing_heavy():
    # A training worker imports the row classes and the reader; neither may pull in GX, pandas or torch.
    code = (
        "import sys\n"
        "import paperline.data.kinds.scored_pairs, paperline.data.datasets\n"
        "from paperline.data.kinds import kind_names\n"
        "assert kind_names()  # the scan imports every kind file\n"
        "heavy = [m for m in ('great_expectations', 'pandas', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------------------------------------
# definitions


def test_definitions_fixtures_pass_the_gate():
    result = gate_splits("definitions", "definitions", fixture_splits("definitions"))
    assert result.passed, "\n".join(result.summary_lines())
    assert result.split_rows == {"train": 6, "dev": 5, "test": 5}
    # Per split: row count, 2 columns exist, 4 per text column, pos in set, duplicates; plus 2 leakage checks.
    assert result.evaluated == 3 * 13 + 2
    assert {o.column for o in result.outcomes if "+" in o.split} == {"term_in_train"}


def test_definitions_reader_gives_typed_rows():
    rows = read_split(DatasetRef("definitions", "definitions", FIXTURES / "definitions", "-"), "train")
    assert len(rows) == 6 and all(isinstance(row, Definition) for row in rows)
    assert rows[1] == Definition("dog", "go after with the intent to catch", "v", "02001876-v",
                                 ("The policeman chased the mugger down the alley", "the dog chased the rabbit"))
    assert rows[3].examples == ()  # an empty examples field is no example


def test_definitions_reader_without_the_optional_columns(tmp_path):
    (tmp_path / "dev.tsv").write_text("term\tdefinition\nriver\ta large natural stream of water\n")
    assert read_split(DatasetRef("d", "definitions", tmp_path, "-"), "dev") == [
        Definition("river", "a large natural stream of water", None, None, ())
    ]


BROKEN_DEFINITIONS = [
    ("dev_blank_definition", ("dev", "expect_column_values_to_match_regex", "definition"),
     "definition is empty or whitespace-only in 1 of 5 rows (20.00%)"),
    ("dev_unknown_pos", ("dev", "expect_column_values_to_be_in_set", "pos"), "pos not in {n, v, a, r} in 1 of 5 rows"),
    ("test_term_in_train", ("train+test", "expect_column_values_to_be_in_set", "term_in_train"),
     "term (ignoring case) shared with train in 1 of 6 rows (16.67%)"),
    ("test_without_definition", ("test", "expect_column_to_exist", "definition"),
     "column 'definition' is missing; found columns: term, pos, synset, gloss, examples"),
]


@pytest.mark.parametrize("variant, expected, detail", BROKEN_DEFINITIONS, ids=[v[0] for v in BROKEN_DEFINITIONS])
def test_broken_definitions_fail_naming_the_split_and_column(variant, expected, detail):
    split = variant.split("_")[0]
    result = gate_splits("definitions", "definitions", fixture_splits("definitions", **{split: variant}))
    assert failure_keys(result) == [expected]
    assert result.failures[0].detail.startswith(detail)


def test_a_term_in_train_and_test_is_found_whatever_its_case():
    result = gate_splits("definitions", "definitions", fixture_splits("definitions", test="test_term_in_train"))
    assert [row["term"] for row in result.failures[0].sample_rows] == ["Happy"]  # "happy" is in train
    # The kind's default leakage limit is 0; a limit given on purpose overrides it.
    relaxed = gate_splits("definitions", "definitions", fixture_splits("definitions", test="test_term_in_train"),
                          GateLimits(max_leakage_fraction=0.2))
    assert relaxed.passed


def test_one_leaked_term_in_a_large_test_split_fails_as_the_kind_allows_none():
    # 1 leaked row of 201 (0.5%) would pass a pair kind's 1% limit; a split by term admits no shared term at all.
    import pandas as pd

    splits = fixture_splits("definitions")
    filler = pd.DataFrame({"term": [f"term{i}" for i in range(195)], "pos": "n", "synset": "00000000-n",
                           "definition": [f"gloss number {i}" for i in range(195)], "examples": ""})
    leaked = splits["train"].iloc[[0]].assign(definition="a sense train does not have")
    splits["test"] = pd.concat([splits["test"], filler, leaked], ignore_index=True)
    result = gate_splits("definitions", "definitions", splits)
    assert failure_keys(result) == [("train+test", "expect_column_values_to_be_in_set", "term_in_train")]
    assert result.failures[0].detail == "term (ignoring case) shared with train in 1 of 201 rows (0.50%)"


def test_real_wordnet_definitions_pass_with_the_kinds_default_limits():
    # ../shared sits beside every clone (README: requirements); without it the data cannot be pulled either
    assert SHARED_DEFINITIONS.is_dir(), f"real data not found at {SHARED_DEFINITIONS}"
    splits = {split: read_frame(SHARED_DEFINITIONS / f"{split}.tsv", "definitions") for split in SPLITS}
    result = gate_splits("definitions", "definitions", splits)
    assert result.passed, "\n".join(result.summary_lines())
    assert result.split_rows == {"train": 198542, "dev": 4179, "test": 4220}
    # WordNet repeats 30 (term, definition) pairs in train (one gloss, several synsets): zero tolerance shows them.
    strict = gate_splits("definitions", "definitions", {"train": splits["train"]}, GateLimits(max_duplicate_fraction=0))
    assert [f.detail.split(";")[0] for f in strict.failures] == [
        "(term, definition) pair repeats an earlier row in 30 of 198542 rows (0.02%)"
    ]


# ---------------------------------------------------------------------------------------------------------------
# texts


def test_texts_fixtures_pass_the_gate_and_read_as_typed_rows():
    result = gate_splits("sentences", "texts", fixture_splits("texts"))
    assert result.passed, "\n".join(result.summary_lines())
    # Per split: row count, the column exists, 4 text checks, duplicates; plus 2 leakage checks.
    assert result.evaluated == 3 * 7 + 2
    rows = read_split(DatasetRef("sentences", "texts", FIXTURES / "texts", "-"), "dev")
    assert rows == [Text("A man with a hard hat is dancing."), Text("A young child is riding a horse."),
                    Text("A man is feeding a mouse to a snake."), Text("A woman is playing the guitar.")]


def test_a_duplicate_text_fails_even_with_other_whitespace():
    result = gate_splits("sentences", "texts", fixture_splits("texts", train="train_duplicate_text"))
    assert failure_keys(result) == [("train", "expect_column_proportion_of_unique_values_to_be_between", "text_key")]
    assert result.failures[0].detail == ("text repeats an earlier row in 1 of 7 rows (14.29%); at most 1.00% allowed")
    assert [row["text"] for row in result.failures[0].sample_rows] == ["Three men are playing chess.",
                                                                       "  Three men are playing chess. "]


def test_a_held_out_text_also_in_train_fails():
    result = gate_splits("sentences", "texts", fixture_splits("texts", dev="dev_text_in_train"))
    assert failure_keys(result) == [("train+dev", "expect_column_values_to_be_in_set", "text_in_train")]
    assert result.failures[0].sample_rows == [{"text": "A man is smoking."}]


# ---------------------------------------------------------------------------------------------------------------
# dialogues

SHARED_DIALOGUES = REPO.parent / "shared" / "datasets" / "dialogues"


def test_dialogues_fixtures_pass_the_gate_and_read_as_typed_turns():
    from paperline.data.kinds.dialogues import Turn

    result = gate_splits("dialogues", "dialogues", fixture_splits("dialogues"))
    assert result.passed, "\n".join(result.summary_lines())
    assert result.split_rows == {"train": 7, "dev": 3, "test": 4}
    # Per split: row count, 4 columns exist, 4 per text column (2), turn not null, turn order, speaker set,
    # duplicates; plus 2 leakage checks.
    assert result.evaluated == 3 * 17 + 2
    rows = read_split(DatasetRef("dialogues", "dialogues", FIXTURES / "dialogues", "-"), "test")
    assert rows[2] == Turn("c-test-1", 2, "A", "Which one?")
    assert [r.turn for r in rows] == [0, 1, 2, 3] and all(isinstance(r.turn, int) for r in rows)


BROKEN_DIALOGUES = [
    ("dev_turns_shuffled", [("dev", "expect_column_values_to_be_in_set", "turn_in_order")],
     "turn is not its position in its conversation (0, 1, ...) in 2 of 3 rows"),
    ("dev_unknown_speaker", [("dev", "expect_column_values_to_be_in_set", "speaker")], "speaker not in {A, B} in 1 of 3"),
    ("test_conversation_in_train", [("train+test", "expect_column_values_to_be_in_set", "conversation_in_train")],
     "conversation shared with train in 1 of 5 rows (20.00%)"),
    ("train_blank_text", [("train", "expect_column_values_to_match_regex", "text")],
     "text is empty or whitespace-only in 1 of 7 rows"),
    ("test_turn_not_a_number", [("test", "expect_column_values_to_not_be_null", "turn"),
                                ("test", "expect_column_values_to_be_in_set", "turn_in_order")],
     "turn is not a number in 1 of 4 rows"),
]


@pytest.mark.parametrize("variant, expected, detail", BROKEN_DIALOGUES, ids=[v[0] for v in BROKEN_DIALOGUES])
def test_broken_dialogues_fail_naming_the_split_and_column(variant, expected, detail):
    split = variant.split("_")[0]
    result = gate_splits("dialogues", "dialogues", fixture_splits("dialogues", **{split: variant}))
    assert sorted(failure_keys(result)) == sorted(expected)
    assert any(f.detail.startswith(detail) for f in result.failures), [f.detail for f in result.failures]


def test_a_conversation_id_in_two_splits_fails_even_once_in_a_large_split():
    # One leaked turn in 301 (0.3%) would pass a pair kind's 1% limit; a split by conversation admits none.
    import pandas as pd

    splits = fixture_splits("dialogues")
    filler = pd.DataFrame({"conversation": [f"c-{i // 3}" for i in range(300)], "turn": [i % 3 for i in range(300)],
                           "speaker": ["A" if i % 3 != 1 else "B" for i in range(300)],
                           "text": [f"message {i}" for i in range(300)]})
    leaked = splits["train"].iloc[[0]]
    splits["test"] = get_kind("dialogues").prepare(pd.concat([filler, leaked], ignore_index=True))
    result = gate_splits("dialogues", "dialogues", splits)
    assert failure_keys(result) == [("train+test", "expect_column_values_to_be_in_set", "conversation_in_train")]
    assert result.failures[0].sample_rows[0]["conversation"] == "c-train-1"


def test_a_repeated_turn_is_a_duplicate_the_kind_does_not_allow():
    import pandas as pd

    splits = fixture_splits("dialogues")
    doubled = pd.concat([splits["train"], splits["train"].iloc[[6]].assign(text="another text")], ignore_index=True)
    splits["train"] = get_kind("dialogues").prepare(doubled.drop(columns="turn_in_order"))
    result = gate_splits("dialogues", "dialogues", splits)
    assert ("train", "expect_column_proportion_of_unique_values_to_be_between", "turn_key") in failure_keys(result)


def test_real_chitchat_dialogues_pass_with_the_kinds_default_limits():
    assert SHARED_DIALOGUES.is_dir(), f"real data not found at {SHARED_DIALOGUES}"
    splits = {split: read_frame(SHARED_DIALOGUES / f"{split}.tsv", "dialogues") for split in SPLITS}
    result = gate_splits("dialogues", "dialogues", splits)
    assert result.passed, "\n".join(result.summary_lines())
    assert result.split_rows == {"train": 122745, "dev": 6614, "test": 6215}
    # 9 train turns are longer than the default 5,000 characters (the kind's limit is 50,000)
    assert (splits["train"].text.str.len() > 5_000).sum() == 9
