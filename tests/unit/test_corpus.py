"""A dataset split or a folder of text files read as a corpus: the kind's columns, a limit, a seeded sample."""

from pathlib import Path

import pytest

from paperline.data.corpus import CorpusSpec, corpus_rows, folder_rows, sample
from paperline.data.datasets import DataError, DatasetRef


def _ref(tmp_path: Path, kind: str, files: dict[str, str]) -> DatasetRef:
    folder = tmp_path / "data" / "d"
    folder.mkdir(parents=True)
    for split, text in files.items():
        (folder / f"{split}.tsv").write_text(text)
    return DatasetRef("d", kind, folder, "x.dir")


def test_definitions_give_the_gloss_labelled_by_its_term_train_first(tmp_path):
    ref = _ref(tmp_path, "definitions", {"test": "term\tdefinition\nzebra\tstriped horse\n",
                                          "train": 'term\tdefinition\ndog\t"a domestic\tanimal"\ncat\ta feline\n'})
    assert list(corpus_rows(ref, CorpusSpec("d"))) == [("dog", "a domestic\tanimal"), ("cat", "a feline"),
                                                       ("zebra", "striped horse")]
    assert list(corpus_rows(ref, CorpusSpec("d", "train", text="term"), limit=1)) == [("dog", "dog")]
    with pytest.raises(DataError, match="no split 'dev'"):
        list(corpus_rows(ref, CorpusSpec.parse("d:dev")))
    with pytest.raises(DataError, match="no column nope"):
        list(corpus_rows(ref, CorpusSpec("d", text="nope")))


def test_a_quote_the_file_ends_inside_is_one_error_naming_the_file_and_line_not_one_long_text(tmp_path):
    # the csv module's default reads on to the end of the file: every later row would have become one "gloss"
    ref = _ref(tmp_path, "definitions", {"train": 'term\tdefinition\ndog\ta pet\ncat\t"a feline\nox\tan ox\n'})
    with pytest.raises(DataError, match=r"train.tsv cannot be read as tab-separated text: the quoted field that "
                                        r"starts on line 3 is never closed"):
        list(corpus_rows(ref, CorpusSpec("d")))


def test_a_pair_dataset_gives_both_sentences_each_labelled_by_its_line(tmp_path):
    ref = _ref(tmp_path, "scored_pairs", {"dev": "sentence1\tsentence2\tscore\nA b.\tC d.\t3.0\n"})
    assert list(corpus_rows(ref, CorpusSpec("d"))) == [("dev:2", "A b."), ("dev:2", "C d.")]


def test_a_folder_of_text_files_and_a_seeded_bounded_sample(tmp_path):
    (tmp_path / "b.txt").write_text("two\n\nthree\n")
    (tmp_path / "a.txt").write_text("one\n")
    rows = list(folder_rows(tmp_path))
    assert rows == [("a.txt:1", "one"), ("b.txt:1", "two"), ("b.txt:3", "three")]
    with pytest.raises(DataError, match="no .txt files"):
        list(folder_rows(tmp_path / "empty"))
    many = [(str(i), str(i)) for i in range(1000)]
    assert sample(iter(many), 10, seed=1) == sample(iter(many), 10, seed=1) != sample(iter(many), 10, seed=2)
    assert len(sample(iter(many), 10)) == 10 and len(sample(iter(many[:3]), 10)) == 3
