"""Data kinds as plug-ins: one file per kind in this folder, found by scanning it (no central list to edit).

A data *kind* is the shape of a dataset's splits: its columns, the typed row a method reads, how the file's text
is coerced before the data gate, the gate's kind-specific expectations, and which rows count as the same row for
the duplicate and leakage checks. Project cards name a kind per dataset (`data: [{dataset: stsb, kind:
scored_pairs}]`); the reader (`paperline.data.datasets`) and the gate (`paperline.data.quality`) look it up here
by name and know no kind themselves.

Adding a kind is adding one file `<name>.py` beside this one that defines `KIND = DataKind(name="<name>", ...)`.
Its docstring says which dataset it serves, its columns and its rules, and why. A kind file imports nothing heavy
at module level (no pandas, GX or torch): a training worker imports the row classes, and the registry imports
every kind file on first use. Files whose name starts with `_` are helpers, not kinds.

The folder is scanned once, on the first `get_kind` or `kind_names` call; nothing happens at import time.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from paperline.core.errors import PaperlineError


class UnknownKindError(PaperlineError, LookupError):
    """A data kind no file in this folder defines; the message lists the kinds there are."""

    exit_code = 2  # the user named something that does not exist (paperline.core.errors.USAGE)


class KindDefinitionError(PaperlineError):
    """A kind file that breaks the contract (no KIND, a KIND named unlike its file, two files with one name)."""


@dataclass(frozen=True)
class RowKey:
    """Which columns identify a row, for the duplicate check or for the leakage check.

    Values are compared after stripping surrounding whitespace, as a tokenizer sees them, and lower-cased when
    `ignore_case` (a dictionary split by lower-cased term must not hold "Dog" in train and "dog" in test).
    `name` names the key in reports and in the gate's derived columns (`<name>_key`, `<name>_in_train`);
    `label`, when given, is what a report calls one key where its column names would not say it (a picture's
    perceptual hash is a "picture", not an "image_hash").
    """

    name: str
    columns: tuple[str, ...]
    ignore_case: bool = False
    label: str | None = None

    def describe(self) -> str:
        """What one key is, for a report sentence: `text`, `(sentence1, sentence2) pair`, `term (ignoring case)`."""
        what = self.label or (self.columns[0] if len(self.columns) == 1 else f"({', '.join(self.columns)}) pair")
        return f"{what} (ignoring case)" if self.ignore_case else what


@dataclass(frozen=True)
class ColumnCheck:
    """A kind-specific GX expectation and what an offending value is (e.g. "score outside [0, 5]")."""

    column: str
    expectation: Any  # a great_expectations.expectations.Expectation
    phrase: str


def _unchanged(frame):
    return frame


def _no_expectations(E, split: str, frame) -> list[ColumnCheck]:
    return []


@dataclass(frozen=True)
class DataKind:
    """Everything kind-specific the reader and the data gate need; the generic checks live in the gate.

    - `columns`: the required columns, in order; extra columns are kept and ignored.
    - `text_columns`: columns that must hold non-null strings with at least one non-space character.
    - `row_type` and `rows(frame) -> list[row_type]`: the typed rows a method reads, built after the gate passed.
    - `prepare(frame) -> frame`: coercions after reading a file and before the gate, e.g. a score column to
      numbers with `errors="coerce"`, so that a non-number is a gate failure and not a crash.
    - `expectations(E, split, frame) -> list[ColumnCheck]`: the kind's own GX expectations beyond the text checks;
      `E` is `great_expectations.expectations`, passed in so that kind files never import GX. A check on a column
      that `frame` lacks is left out: the gate already reports the missing column once.
    - `key`: the row identity for leakage (a held-out row that is also in train); `duplicate_key`: the identity
      for duplicates within a split, `key` when not given.
    - `max_duplicate_fraction`, `max_leakage_fraction`: the kind's default limits; `GateLimits` may override them.
    - `max_text_length`: the longest value a text column may hold, in characters. The default (5,000) is 13 times
      the longest STS-B sentence and 10 times the longest WordNet gloss; a million-character row is a broken
      file (a lost delimiter or quote), not a sentence, and would only be truncated by the tokenizer unseen.
    - `max_shrink_fraction`: how much of a split's rows a new dataset version may lose against the last version
      that passed the gate (0.2: a fifth). More is a truncated export or a lost file part far more often than a
      deliberate cut; a cut that is meant says so in the config (`data.<name>.allow_shrink: true`), and a card
      may set its own fraction per dataset (`max_shrink`).
    - `corpus_text`, `corpus_label`: what a batch encode (`paperline encode`) embeds by default, and the column
      that names each row in search results (a gloss and its term); None: every text column, rows named by number.
    - `derive(frame, folder) -> frame`: for a kind whose rows name files beside the split (a picture; audio or
      video next): the gate calls it once per split, after `prepare`, with the dataset folder, and it adds
      `derived_columns` computed from those files (what is wrong with a file, a perceptual hash). The kind's
      expectations and keys are then ordinary checks on those columns, so a broken file is a report line like
      any other. None (the text kinds): the gate reads nothing but the split. The reader of typed rows does not
      call it: a training job does not pay to open every file a second time.
    - `derived_columns`: the columns `derive` adds; `key` and `duplicate_key` may name them.
    - `preview(row, folder) -> str | None`: a small picture of a sample row for the HTML report, as a `data:` URI
      (None where it cannot be shown); None (the text kinds): the report shows rows as text only.
    """

    name: str
    columns: tuple[str, ...]
    text_columns: tuple[str, ...]
    row_type: type
    rows: Callable[[Any], list]
    key: RowKey
    duplicate_key: RowKey | None = None
    prepare: Callable[[Any], Any] = _unchanged
    expectations: Callable[..., list[ColumnCheck]] = _no_expectations
    max_duplicate_fraction: float = 0.01
    max_leakage_fraction: float = 0.01
    max_text_length: int = 5_000
    max_shrink_fraction: float = 0.2
    corpus_text: str | None = None
    corpus_label: str | None = None
    derive: Callable[[Any, Path], Any] | None = None
    derived_columns: tuple[str, ...] = ()
    preview: Callable[[dict, Path], str | None] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise KindDefinitionError(f"data kind name '{self.name}' must be a Python identifier (its file name)")
        if self.derived_columns and self.derive is None:
            raise KindDefinitionError(f"data kind '{self.name}': derived_columns without a derive function")
        used = {"text_columns": self.text_columns, "corpus columns": tuple(c for c in (self.corpus_text,
                                                                                       self.corpus_label) if c)}
        for what, columns in used.items():
            stray = [column for column in columns if column not in self.columns]
            if stray:
                raise KindDefinitionError(f"data kind '{self.name}': {what} names {', '.join(stray)}, which are "
                                          f"not among its columns {', '.join(self.columns)}")
        keys = {"key": self.key.columns, "duplicate_key": self.identity_for_duplicates.columns}
        for what, columns in keys.items():
            stray = [column for column in columns if column not in self.columns + self.derived_columns]
            if stray:
                raise KindDefinitionError(f"data kind '{self.name}': {what} names {', '.join(stray)}, which are "
                                          f"not among its columns {', '.join(self.columns + self.derived_columns)}")
        if self.max_text_length < 1:
            raise KindDefinitionError(f"data kind '{self.name}': max_text_length must be at least 1")
        for limit in ("max_duplicate_fraction", "max_leakage_fraction", "max_shrink_fraction"):
            if not 0.0 <= getattr(self, limit) <= 1.0:
                raise KindDefinitionError(f"data kind '{self.name}': {limit} must be in [0, 1]")

    @property
    def identity_for_duplicates(self) -> RowKey:
        return self.duplicate_key or self.key


# ---- the registry ------------------------------------------------------------------------------------------


def get_kind(name: str) -> DataKind:
    """The kind called `name`; an unknown name is one `UnknownKindError` line listing the known kinds."""
    kinds = _registry()
    if name not in kinds:
        raise UnknownKindError(f"unknown data kind '{name}'; known kinds: {', '.join(kinds)} "
                               f"(one file each in {_display(_folders(sys.modules[__name__]))})")
    return kinds[name]


def kind_names() -> list[str]:
    """The names of every kind in this folder, sorted."""
    return list(_registry())


def scan_kinds(package: ModuleType) -> dict[str, DataKind]:
    """Import every module of `package` (not starting with `_`) and collect its `KIND`, by name, sorted.

    Scanning the package's `__path__` rather than a fixed list is what lets a new kind be one new file.
    """
    kinds: dict[str, DataKind] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        kind = getattr(module, "KIND", None)
        where = getattr(module, "__file__", None) or info.name
        if not isinstance(kind, DataKind):
            raise KindDefinitionError(f"{where} defines no `KIND = DataKind(...)`; every module in "
                                      f"{_display(_folders(package))} is a data kind (start a helper's name with _)")
        if kind.name != info.name:
            raise KindDefinitionError(f"{where}: KIND is named '{kind.name}'; name it after its file, '{info.name}'")
        kinds[kind.name] = kind
    return kinds


@lru_cache(maxsize=1)
def _registry() -> dict[str, DataKind]:
    return scan_kinds(sys.modules[__name__])


def clear_cache() -> None:
    """Forget the scanned kinds, so that the next lookup scans the folder again (for tests and notebooks)."""
    _registry.cache_clear()


def _folders(package: ModuleType) -> list[Path]:
    return [Path(entry) for entry in package.__path__]


def _display(folders: list[Path]) -> str:
    """The kinds folder as a user would type it: relative to the working directory when below it."""
    shown = []
    for folder in folders:
        try:
            shown.append(f"{folder.resolve().relative_to(Path.cwd().resolve())}{os.sep}")
        except ValueError:
            shown.append(f"{folder}{os.sep}")
    return ", ".join(shown)
