"""The data gate: Great Expectations (GX 1.x) checks that a dataset's splits are fit to train on.

A run of the pipeline reads a dataset version (a DVC md5) and, before any GPU time is spent, passes every split
the project reads through :func:`gate_splits`, as data of the *kind* its project card names. What is specific
to a kind (its columns, its value rules, which rows count as the same row, its default limits) is in that kind's
file under ``paperline/data/kinds/``, with the reasons; this module holds only the generic machinery and knows no
kind by name.

Per split it expects, each as one GX expectation so that every check shows up in the same report:

- the split has between ``min_rows`` and ``max_rows`` rows (an empty or truncated file is the commonest break);
- the split kept enough of the rows it had in the last version that passed the gate (see ``shrink.py``);
- every column the kind requires exists (a renamed header silently becomes a missing column);
- the kind's text columns hold strings, are never null and never empty or whitespace-only (a tokenizer happily
  embeds "");
- the kind's own expectations (a score range, a label set, ...; for a kind whose rows name files, such as
  pictures, on columns its ``derive`` computed from those files: a missing or broken picture is a row like any);
- few rows repeat an earlier row of the same split, by the kind's duplicate key (a botched concatenation
  doubles rows and weights them twice);
- few rows of a held-out split also appear in the train split, by the kind's key (leakage inflates every
  reported metric).

Keys are compared after stripping surrounding whitespace, as a tokenizer would see them. Duplicates and leakage
are limited by fractions, not forbidden, because real data has some (see ``kinds/scored_pairs.py`` for STS-B's);
each kind sets its default fractions and :class:`GateLimits` may override them.

The result is a :class:`GateResult`: ``passed``, one :class:`ExpectationFailure` per failed expectation (with up to
three offending rows as they were given, extra columns included), and a markdown/HTML/dict report of every
expectation evaluated. GX is imported only when a gate runs, so importing this module stays cheap and works
where GX is not installed (e.g. a bare GPU training worker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperline.data.datasets import DatasetRef, read_frame
from paperline.data.gate_findings import SAMPLE_ROWS, failure, outcome, percent, sample_rows
from paperline.data.kinds import DataKind, RowKey, get_kind
from paperline.data.quality_report import (
    ExpectationFailure,
    ExpectationOutcome,
    GateOutcome,
    GateResult,
)
from paperline.data.shrink import shrink_expectation
from paperline.data.unreadable import read_errors, unreadable_split

if TYPE_CHECKING:
    import pandas as pd

    from paperline.core.config import ProjectConfig

SAMPLE_PICTURES = 2  # per split, in a passed report of a kind whose rows are pictures


@dataclass(frozen=True)
class GateLimits:
    """How much the gate tolerates; a fraction left at None is the data kind's default (see its file)."""

    min_rows: int = 1
    max_rows: int = 10_000_000
    max_duplicate_fraction: float | None = None  # rows whose duplicate key repeats an earlier row of the split
    check_leakage: bool = True  # held-out rows whose key is also in train count against max_leakage_fraction
    max_leakage_fraction: float | None = None
    max_shrink_fraction: float | None = None  # rows a split may lose against the last version that passed

    def __post_init__(self) -> None:
        if not 0 <= self.min_rows <= self.max_rows:
            raise ValueError(f"GateLimits: need 0 <= min_rows <= max_rows, got {self.min_rows}, {self.max_rows}")
        for name in ("max_duplicate_fraction", "max_leakage_fraction", "max_shrink_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"GateLimits: {name} must be in [0, 1], got {value}")

    def for_kind(self, kind: DataKind) -> GateLimits:
        """These limits with every fraction left open filled in from the kind's defaults."""
        return replace(
            self,
            max_duplicate_fraction=_given(self.max_duplicate_fraction, kind.max_duplicate_fraction),
            max_leakage_fraction=_given(self.max_leakage_fraction, kind.max_leakage_fraction),
            max_shrink_fraction=_given(self.max_shrink_fraction, kind.max_shrink_fraction),
        )


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


# --------------------------------------------------------------------------------------------------------------
# Running the gate


@dataclass
class _Check:
    """An expectation together with what the gate needs to explain its failure."""

    split: str
    column: str | None
    expectation: Any  # a gx.expectations.Expectation
    phrase: str  # what an offending row or value is, e.g. "score outside [0, 5]"
    detail: str | None = None  # a complete sentence, when the gate computes it itself
    samples: list[int] = field(default_factory=list)  # row positions, for checks GX reports no rows for


def gate_splits(
    dataset: str,
    kind: str,
    splits: dict[str, pd.DataFrame],
    limits: GateLimits | None = None,
    train_split: str = "train",
    unreadable: dict[str, ExpectationFailure] | None = None,
    min_rows: dict[str, int] | None = None,
    previous_rows: dict[str, int] | None = None,
    allow_shrink: bool = False,
    folder: Path | None = None,
) -> GateResult:
    """Validate every split of ``dataset`` as data of ``kind``; never raises for bad data, only for bad arguments
    (an unknown kind is an ``UnknownKindError``). ``unreadable`` holds the splits whose file could not be read
    (see ``read_split_file``): each is a failed expectation of the result. ``min_rows`` raises the row
    floor of named splits (a project card's bound for its dataset: a split cut to 10 rows must not train).
    ``previous_rows`` holds each split's row count in the last version that passed the gate: a split that lost
    more than ``max_shrink_fraction`` of them fails, unless ``allow_shrink`` (the config says the cut is meant).
    ``folder`` is the dataset folder, needed by a kind whose rows name files beside the split (its ``derive``)."""
    data_kind = get_kind(kind)
    unreadable = unreadable or {}
    if not splits and not unreadable:
        raise ValueError(f"no splits given to gate for dataset '{dataset}'")
    if data_kind.derive is not None:
        if folder is None:
            raise ValueError(f"data kind '{kind}' reads the files its rows name: pass the dataset folder (folder=)")
        # Once per split, before any key is computed: the keys and the kind's checks may use the derived columns.
        splits = {name: data_kind.derive(frame, Path(folder)) for name, frame in splits.items()}
    limits = (limits or GateLimits()).for_kind(data_kind)
    gx = _import_gx()
    batch_definition = _batch_definition(gx)
    train_keys = _train_keys(splits, data_kind, limits, train_split)

    failures: list[ExpectationFailure] = list(unreadable.values())
    outcomes = [ExpectationOutcome(f.split, f.expectation, None, False, f.detail) for f in failures]
    for name, frame in splits.items():
        leak_keys = None if name == train_split else train_keys
        floor = max(limits.min_rows, (min_rows or {}).get(name, 0))
        work, checks = _plan_split(gx, name, frame, data_kind, replace(limits, min_rows=floor, max_rows=max(
            floor, limits.max_rows)), leak_keys, train_split)
        before = (previous_rows or {}).get(name, 0)
        if before > 0 and not allow_shrink:  # right after the row count check, where a reader looks for it
            shrink, detail = shrink_expectation(gx.expectations, dataset, name, len(frame), before,
                                                limits.max_shrink_fraction)
            checks.insert(1, _Check(name, None, shrink, "row count shrank", detail))
        for check, result in _validate(gx, batch_definition, work, checks):
            outcomes.append(outcome(check, result))
            if not result.success:
                found = failure(check, result, frame)
                if data_kind.preview is not None and folder is not None:
                    found.pictures = [data_kind.preview(row, Path(folder)) for row in found.sample_rows]
                failures.append(found)
    return GateResult(
        dataset=dataset,
        kind=kind,
        passed=not failures,
        evaluated=len(outcomes),
        failures=failures,
        split_rows={name: len(frame) for name, frame in splits.items()} | {name: 0 for name in unreadable},
        outcomes=outcomes,
        pictures=[] if failures else _sample_pictures(data_kind, splits, folder),
    )


def _sample_pictures(kind: DataKind, splits: dict[str, pd.DataFrame], folder: Path | None) -> list[dict]:
    """For a kind that can preview its rows, the first few rows of each split as small pictures, so that a
    passed report still shows what the data looks like (a failed one shows the offending rows' pictures)."""
    if kind.preview is None or folder is None:
        return []
    label = kind.corpus_label or kind.columns[0]
    pictures = []
    for name, frame in splits.items():
        for row in sample_rows(frame, list(range(min(SAMPLE_PICTURES, len(frame))))):
            pictures.append({"split": name, "label": str(row.get(label, "")), "uri": kind.preview(row, Path(folder))})
    return pictures


def _import_gx():
    # GX sends usage analytics unless told not to; a gate must work offline and say nothing.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def _batch_definition(gx):
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        # In memory, without the temporary Data Docs site GX's default ephemeral context sets up: the gate's own
        # report is the artifact, and a gate must leave nothing behind.
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        # GX draws a tqdm bar per validation on stderr: noise in flow logs for a sub-second check.
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas(name="paperline").add_dataframe_asset(name="split")
    return asset.add_batch_definition_whole_dataframe("whole split")


def _validate(gx, batch_definition, work: pd.DataFrame, checks: list[_Check]):
    suite = gx.ExpectationSuite(name="paperline data gate")
    for index, check in enumerate(checks):
        check.expectation.meta = {"check": index}
        suite.add_expectation(check.expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": work})
    # SUMMARY returns the row indices of the first few offending values: enough for sample rows, cheap on big splits.
    run = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_ROWS})
    # GX does not keep suite order in its results; the report does.
    results = sorted(run.results, key=lambda r: r.expectation_config.meta["check"])
    return zip(checks, results, strict=True)


# --------------------------------------------------------------------------------------------------------------
# The expectations of one split


def _plan_split(gx, name, frame, kind: DataKind, limits, leak_keys, train_split) -> tuple[pd.DataFrame, list[_Check]]:
    """The frame GX validates (positional index, derived key columns) and the checks to run on it."""
    E = gx.expectations
    work = frame.reset_index(drop=True)
    row_count = E.ExpectTableRowCountToBeBetween(min_value=limits.min_rows, max_value=limits.max_rows)
    checks = [_Check(name, None, row_count, f"row count outside [{limits.min_rows}, {limits.max_rows}]")]
    checks += [_column_exists(E, name, column, frame) for column in kind.columns]
    # A column that is missing is reported once, by its existence check, not again by every check that needs it.
    for column in kind.text_columns:
        if column in work.columns:
            checks += _text_checks(E, name, column, kind.max_text_length)
    checks += [_Check(name, c.column, c.expectation, c.phrase) for c in kind.expectations(E, name, work)]
    duplicate_key = kind.identity_for_duplicates
    if _has_columns(work, duplicate_key):
        keys = row_keys(work, duplicate_key)
        work = work.assign(**{_key_column(duplicate_key): keys})
        # GX reports the unique fraction of an all-null or empty column as 0; there is then nothing to duplicate.
        if keys.notna().any():
            checks.append(_duplicate_check(E, name, keys, duplicate_key, limits.max_duplicate_fraction))
    if leak_keys is not None and _has_columns(work, kind.key):
        work = work.assign(**{_in_train(kind.key, train_split): _in_train_flags(work, kind.key, leak_keys)})
        checks.append(_leakage_check(E, name, kind.key, limits.max_leakage_fraction, train_split))
    return work, checks


def _column_exists(E, split: str, column: str, frame: pd.DataFrame) -> _Check:
    found = ", ".join(map(str, frame.columns)) or "none"
    detail = None if column in frame.columns else f"column '{column}' is missing; found columns: {found}"
    return _Check(split, column, E.ExpectColumnToExist(column=column), f"column '{column}' missing", detail)


def _text_checks(E, split: str, column: str, max_length: int) -> list[_Check]:
    return [
        _Check(split, column, E.ExpectColumnValuesToNotBeNull(column=column), f"{column} is null"),
        _Check(split, column, E.ExpectColumnValuesToBeOfType(column=column, type_="str"), f"{column} is not a string"),
        # Search for one non-space character: "" and "  " fail, nulls are left to the null check.
        _Check(split, column, E.ExpectColumnValuesToMatchRegex(column=column, regex=r"\S"),
               f"{column} is empty or whitespace-only"),
        _Check(split, column, E.ExpectColumnValueLengthsToBeBetween(column=column, max_value=max_length),
               f"{column} longer than {max_length:,} characters"),
    ]


def _duplicate_check(E, split: str, keys: pd.Series, key: RowKey, max_fraction: float) -> _Check:
    # The unique fraction of the keys is 1 - (rows repeating an earlier row) / rows, the pandas notion of
    # duplicates; GX's uniqueness expectations would instead count every copy, the first included.
    column = _key_column(key)
    expectation = E.ExpectColumnProportionOfUniqueValuesToBeBetween(column=column, min_value=1.0 - max_fraction)
    present = keys.dropna()
    repeats = int(present.duplicated().sum())
    what = key.describe()
    detail = (f"{what} repeats an earlier row in {repeats} of {len(present)} rows "
              f"({percent(repeats, len(present))}); at most {max_fraction:.2%} allowed")
    # Show one repeated key with all its copies, so the sample explains itself (a second pass only when any repeat).
    copies = present[present.duplicated(keep=False)].sort_values(kind="stable") if repeats else present.iloc[:0]
    return _Check(split, column, expectation, f"{what} repeated", detail, list(copies.index[:SAMPLE_ROWS]))


def _leakage_check(E, split: str, key: RowKey, max_fraction: float, train_split: str) -> _Check:
    column = _in_train(key, train_split)
    leak = E.ExpectColumnValuesToBeInSet(column=column, value_set=[False], mostly=1.0 - max_fraction)
    return _Check(f"{train_split}+{split}", column, leak, f"{key.describe()} shared with {train_split}")


def _in_train_flags(work: pd.DataFrame, key: RowKey, train_keys: set[str]) -> pd.Series:
    # The membership test is done here and GX checks its outcome: passed as a value_set, thousands of train keys
    # are copied through pydantic for every metric GX derives, which costs seconds per split.
    keys = row_keys(work, key)
    return keys.isin(train_keys).where(keys.notna(), None)


def _key_column(key: RowKey) -> str:
    """The derived column holding a split's normalised keys, so that GX reports duplicates like any column."""
    return f"{key.name}_key"


def _in_train(key: RowKey, train_split: str) -> str:
    return f"{key.name}_in_{train_split}"


def _has_columns(frame: pd.DataFrame, key: RowKey) -> bool:
    return all(column in frame.columns for column in key.columns)


def row_keys(frame: pd.DataFrame, key: RowKey) -> pd.Series:
    """The normalised key of each row: its key columns stripped (lower-cased when the key ignores case) and
    joined by a tab; null where any of them is null or blank.

    Blank texts are already one failure of their own, and are no row worth calling a duplicate or a leak.
    """
    joined, valid = None, None
    for column in key.columns:
        text = frame[column].astype(str).str.strip()
        present = frame[column].notna() & (text != "")
        text = text.str.lower() if key.ignore_case else text
        joined = text if joined is None else joined + "\t" + text
        valid = present if valid is None else valid & present
    return joined.where(valid, None)


def _train_keys(splits, kind: DataKind, limits: GateLimits, train_split: str) -> set[str] | None:
    train = splits.get(train_split)
    if not limits.check_leakage or train is None or not _has_columns(train, kind.key):
        return None
    return set(row_keys(train, kind.key).dropna())


# --------------------------------------------------------------------------------------------------------------
# Turning GX results into the gate's result


def gate_datasets(refs: dict[str, DatasetRef], cfg: ProjectConfig, limits: dict | None = None,
                  min_rows: dict[str, dict[str, int]] | None = None,
                  previous_rows: dict[str, dict[str, int]] | None = None,
                  dataset_limits: dict[str, dict[str, float]] | None = None) -> GateOutcome:
    """Validate every split of every dataset the config reads, with the GX suite of its data kind; `min_rows`
    gives per dataset the smallest row count of each split (from the project cards), `previous_rows` per dataset
    each split's row count in the last version that passed the gate (from the audit store; a config's
    `allow_shrink` waives that check), and `dataset_limits` a card's own `GateLimits` fractions per dataset
    (`MethodCard.limits`)."""
    results = []
    for name, use in cfg.data.items():
        ref = refs[name]
        frames, unreadable = {}, {}
        for split in use.splits:
            frame, failure = read_split_file(ref.split_path(split), ref.kind, split)
            if failure is None:
                frames[split] = frame
            else:
                unreadable[split] = failure
        own_limits = replace(GateLimits(**(limits or {})), **(dataset_limits or {}).get(name, {}))
        results.append(gate_splits(name, ref.kind, frames, own_limits, unreadable=unreadable,
                                   min_rows=(min_rows or {}).get(name), previous_rows=(previous_rows or {}).get(name),
                                   allow_shrink=use.allow_shrink, folder=ref.path))
    return GateOutcome(results)


def gate_files(files: list[tuple[str, str, Path, str]]) -> GateOutcome:
    """Validate files that are not in the DVC dataset (what a method's `generate` wrote), each given as
    (dataset name, data kind, path, split), with their kind's GX suite and the default limits."""
    results = []
    for name, kind, path, split in files:
        frame, failure = read_split_file(Path(path), kind, split)
        frames, unreadable = ({split: frame}, {}) if failure is None else ({}, {split: failure})
        results.append(gate_splits(name, kind, frames, GateLimits(), train_split=split, unreadable=unreadable,
                                   folder=Path(path).parent))
    return GateOutcome(results)


def read_split_file(path: Path, kind: str, split: str) -> tuple[pd.DataFrame | None, ExpectationFailure | None]:
    """The split's frame, or, for a file the reader cannot read (not UTF-8, a quoted field never closed, a line
    with more fields than the header, empty), the gate's failure naming the file and the line
    (`paperline.data.unreadable`), so the run stops at the gate and not in a reader."""
    try:
        return read_frame(path, kind), None
    except read_errors() as error:
        return None, unreadable_split(path, split, error)
