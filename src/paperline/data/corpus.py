"""A dataset split, or a folder of text files, read as a corpus of (label, text) rows: what a batch encode embeds
and what a drift monitor samples.

A split is streamed row by row with the csv module (the files are the TSVs `read_frame` reads, QUOTE_MINIMAL),
so memory stays bounded whatever its size; which column is the text and which labels a row comes from the kind
(`DataKind.corpus_text`, `corpus_label`: a gloss and its term) unless the caller names them. A kind with no
corpus column (a pair dataset) gives every text column, each value one row, labelled `<split>:<line>`.
"""

from __future__ import annotations

import csv
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from paperline.data.datasets import DataError, DatasetRef
from paperline.data.kinds import get_kind
from paperline.data.unreadable import unreadable_split

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the gate bounds a text's length, not the csv module


@dataclass(frozen=True)
class CorpusSpec:
    """`definitions`, `definitions:test`, `stsb:dev`: a dataset, its split (None: every split) and the columns."""

    dataset: str
    split: str | None = None
    text: str | None = None  # None: the kind's corpus_text, else every text column
    label: str | None = None  # None: the kind's corpus_label, else `<split>:<line>`

    @classmethod
    def parse(cls, value: str, text: str | None = None, label: str | None = None) -> CorpusSpec:
        dataset, _, split = value.partition(":")
        if not dataset:
            raise DataError(f"'{value}' names no dataset; write <dataset>[:<split>], e.g. definitions:test")
        return cls(dataset, split or None, text, label)

    def describe(self) -> str:
        return self.dataset + (f":{self.split}" if self.split else "")


def splits_of(ref: DatasetRef, spec: CorpusSpec) -> list[str]:
    if not ref.path.is_dir():
        raise DataError(f"no dataset '{spec.dataset}' in {ref.path.parent} (datasets: "
                        f"{', '.join(sorted(p.name for p in ref.path.parent.iterdir() if p.is_dir()))})")
    found = sorted(p.stem for p in ref.path.glob("*.tsv"))
    # train first: the corpus order a user expects (and what `--limit` keeps)
    found.sort(key=lambda s: (s != "train", s != "dev", s))
    if spec.split is None:
        return found
    if spec.split not in found:
        raise DataError(f"dataset '{spec.dataset}' has no split '{spec.split}' (splits: {', '.join(found)})")
    return [spec.split]


def corpus_rows(ref: DatasetRef, spec: CorpusSpec, limit: int | None = None) -> Iterator[tuple[str, str]]:
    """(label, text) rows of the chosen splits, streamed; at most `limit` rows."""
    kind = get_kind(ref.kind)
    texts = [spec.text] if spec.text else [kind.corpus_text] if kind.corpus_text else list(kind.text_columns)
    label = spec.label or kind.corpus_label
    count = 0
    for split in splits_of(ref, spec):
        path = ref.split_path(split)
        with open(path, encoding="utf-8", newline="") as f, _unreadable_as_data_error(path, split):
            # strict: a quoted field the file ends inside is an error, not one long text holding every later row
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, strict=True)
            missing = [c for c in [*texts, *([label] if label else [])] if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path} has no column {', '.join(missing)} (columns: "
                                f"{', '.join(reader.fieldnames or [])}); name one with --text / --label")
            for line, row in enumerate(reader, start=2):
                for column in texts:
                    text = (row[column] or "").strip()
                    if not text:
                        continue
                    yield (row[label] if label else f"{split}:{line}"), text
                    count += 1
                    if limit is not None and count >= limit:
                        return


@contextmanager
def _unreadable_as_data_error(path: Path, split: str) -> Iterator[None]:
    """A file the csv module refuses (bytes that are not UTF-8, a quote never closed) as the gate names it."""
    try:
        yield
    except (csv.Error, UnicodeDecodeError) as error:
        raise DataError(unreadable_split(path, split, error).detail) from None


def folder_rows(folder: Path, limit: int | None = None) -> Iterator[tuple[str, str]]:
    """Every non-empty line of the `*.txt` files in `folder` (sorted by name), labelled `<file>:<line>`."""
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(f"{folder} holds no .txt files; give a folder of text files (one text per line) or a "
                        "dataset name")
    count = 0
    for path in files:
        for line, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if text.strip():
                yield f"{path.name}:{line}", text.strip()
                count += 1
                if limit is not None and count >= limit:
                    return


def sample(rows: Iterator[tuple[str, str]], size: int, seed: int = 0) -> list[tuple[str, str]]:
    """A uniform sample of `size` rows in one pass (reservoir sampling), seeded: bounded memory on any corpus."""
    rng = random.Random(seed)
    chosen: list[tuple[str, str]] = []
    for seen, row in enumerate(rows):
        if seen < size:
            chosen.append(row)
        else:
            slot = rng.randint(0, seen)
            if slot < size:
                chosen[slot] = row
    return chosen
