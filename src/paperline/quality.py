"""The data gate: Great Expectations (GX 1.x) checks that a dataset's splits are fit to train on.

A run of the pipeline reads a dataset version (a DVC md5) and, before any GPU time is spent, passes every split
the project reads through :func:`gate_splits`. The gate knows two data *kinds*:

- ``scored_pairs`` (e.g. STS-B): ``sentence1``, ``sentence2`` and a similarity ``score`` in [0, 5];
- ``nli_pairs`` (e.g. SNLI): ``premise``, ``hypothesis`` and a ``label`` in {entailment, neutral, contradiction}.

Per split it expects, each as one GX expectation so that every check shows up in the same report:

- the split has between ``min_rows`` and ``max_rows`` rows (an empty or truncated file is the commonest break);
- every required column exists (a renamed header silently becomes a missing column);
- text columns hold strings, are never null and never empty or whitespace-only (a tokenizer happily embeds "");
- ``score`` is numeric, not null and within [0, 5] / ``label`` is not null and one of the three NLI labels
  (a rescaled or mislabelled file trains a model that looks fine and is wrong);
- few (text1, text2) pairs repeat an earlier row of the same split (a botched concatenation doubles rows and
  weights them twice);
- few pairs of a held-out split also appear in the train split (leakage inflates every reported metric).

Pairs are compared after stripping surrounding whitespace, as a tokenizer would see them. Duplicates and leakage
are limited by a fraction, not forbidden, because the real STS Benchmark has both: 43 of its 5,749 train rows
(0.75%) repeat an earlier train pair, and 6 dev and 7 test pairs also occur in train (the SemEval years it was
built from reused some pairs). A fraction of 1% lets the published data through and still stops a split that was
copied or concatenated twice.

The result is a :class:`GateResult`: ``passed``, one :class:`ExpectationFailure` per failed expectation (with up to
three offending rows as they were given, extra columns included), and a markdown/HTML/dict report of every
expectation evaluated. GX is imported only when a gate runs, so importing this module stays cheap and works
where GX is not installed (e.g. a bare GPU training worker).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paperline.quality_report import ExpectationFailure, ExpectationOutcome, GateResult

if TYPE_CHECKING:
    import pandas as pd

DATA_KINDS = ("scored_pairs", "nli_pairs")
NLI_LABELS = ("entailment", "neutral", "contradiction")
SCORE_MIN, SCORE_MAX = 0.0, 5.0
SAMPLE_ROWS = 3

# Derived column that holds a split's normalised (text1, text2) pair, so that GX reports duplicates and leakage
# like any other column check.
PAIR_KEY = "pair_key"
# numpy/pandas dtype names and Python type names GX accepts for a numeric score column.
_NUMERIC_TYPES = ["int", "float", "int32", "int64", "float32", "float64", "Int64", "Float64"]


@dataclass(frozen=True)
class _KindSpec:
    text_columns: tuple[str, str]
    target: str

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.text_columns, self.target)


_KINDS = {
    "scored_pairs": _KindSpec(("sentence1", "sentence2"), "score"),
    "nli_pairs": _KindSpec(("premise", "hypothesis"), "label"),
}


@dataclass(frozen=True)
class GateLimits:
    min_rows: int = 1
    max_rows: int = 10_000_000
    max_duplicate_fraction: float = 0.01  # fraction of rows whose (text1, text2) pair repeats an earlier row
    check_leakage: bool = True  # no dev/test pair may appear in train (beyond max_leakage_fraction)
    # STS-B as published has 0.40% of dev and 0.51% of test pairs in train; see the module docstring.
    max_leakage_fraction: float = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.min_rows <= self.max_rows:
            raise ValueError(f"GateLimits: need 0 <= min_rows <= max_rows, got {self.min_rows}, {self.max_rows}")
        for name in ("max_duplicate_fraction", "max_leakage_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"GateLimits: {name} must be in [0, 1], got {getattr(self, name)}")


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
) -> GateResult:
    """Validate every split of ``dataset`` as data of ``kind``; never raises for bad data, only for bad arguments."""
    spec = _kind_spec(kind)
    if not splits:
        raise ValueError(f"no splits given to gate for dataset '{dataset}'")
    limits = limits or GateLimits()
    gx = _import_gx()
    batch_definition = _batch_definition(gx)
    train_keys = _train_keys(splits, spec, limits, train_split)

    outcomes: list[ExpectationOutcome] = []
    failures: list[ExpectationFailure] = []
    for name, frame in splits.items():
        leak_keys = None if name == train_split else train_keys
        work, checks = _plan_split(gx, name, frame, spec, limits, leak_keys, train_split)
        for check, result in _validate(gx, batch_definition, work, checks):
            outcomes.append(_outcome(check, result))
            if not result.success:
                failures.append(_failure(check, result, frame))
    return GateResult(
        dataset=dataset,
        kind=kind,
        passed=not failures,
        evaluated=len(outcomes),
        failures=failures,
        split_rows={name: len(frame) for name, frame in splits.items()},
        outcomes=outcomes,
    )


def _kind_spec(kind: str) -> _KindSpec:
    if kind not in _KINDS:
        raise ValueError(f"unknown data kind '{kind}': expected one of {', '.join(DATA_KINDS)}")
    return _KINDS[kind]


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


def _plan_split(gx, name, frame, spec, limits, leak_keys, train_split) -> tuple[pd.DataFrame, list[_Check]]:
    """The frame GX validates (positional index, derived pair key) and the checks to run on it."""
    E = gx.expectations
    work = frame.reset_index(drop=True)
    row_count = E.ExpectTableRowCountToBeBetween(min_value=limits.min_rows, max_value=limits.max_rows)
    checks = [_Check(name, None, row_count, f"row count outside [{limits.min_rows}, {limits.max_rows}]")]
    checks += [_column_exists(E, name, column, frame) for column in spec.columns]
    # A column that is missing is reported once, by its existence check, not again by every check that needs it.
    for column in spec.text_columns:
        if column in work.columns:
            checks += _text_checks(E, name, column)
    if spec.target in work.columns:
        checks += _target_checks(E, name, spec.target, work[spec.target])
    if all(column in work.columns for column in spec.text_columns):
        work = _with_pair_columns(work, spec, leak_keys, train_split)
        checks += _pair_checks(E, name, work, spec, limits, leak_keys is not None, train_split)
    return work, checks


def _column_exists(E, split: str, column: str, frame: pd.DataFrame) -> _Check:
    found = ", ".join(map(str, frame.columns)) or "none"
    detail = None if column in frame.columns else f"column '{column}' is missing; found columns: {found}"
    return _Check(split, column, E.ExpectColumnToExist(column=column), f"column '{column}' missing", detail)


def _text_checks(E, split: str, column: str) -> list[_Check]:
    return [
        _Check(split, column, E.ExpectColumnValuesToNotBeNull(column=column), f"{column} is null"),
        _Check(split, column, E.ExpectColumnValuesToBeOfType(column=column, type_="str"), f"{column} is not a string"),
        # Search for one non-space character: "" and "  " fail, nulls are left to the null check.
        _Check(split, column, E.ExpectColumnValuesToMatchRegex(column=column, regex=r"\S"),
               f"{column} is empty or whitespace-only"),
    ]


def _target_checks(E, split: str, column: str, values: pd.Series) -> list[_Check]:
    checks = [_Check(split, column, E.ExpectColumnValuesToNotBeNull(column=column), f"{column} is null")]
    if column == "label":
        in_set = E.ExpectColumnValuesToBeInSet(column=column, value_set=list(NLI_LABELS))
        return checks + [_Check(split, column, in_set, f"{column} not in {{{', '.join(NLI_LABELS)}}}")]
    checks.append(_Check(split, column, E.ExpectColumnValuesToBeInTypeList(column=column, type_list=_NUMERIC_TYPES),
                         f"{column} is not a number"))
    # GX's range check raises on strings; a non-numeric score is already one failure, of the type check.
    if _is_numeric(values):
        between = E.ExpectColumnValuesToBeBetween(column=column, min_value=SCORE_MIN, max_value=SCORE_MAX)
        checks.append(_Check(split, column, between, f"{column} outside [{SCORE_MIN:g}, {SCORE_MAX:g}]"))
    return checks


def _with_pair_columns(work: pd.DataFrame, spec: _KindSpec, train_keys: set[str] | None, train_split: str):
    keys = pair_keys(work, spec.text_columns)
    derived = {PAIR_KEY: keys}
    if train_keys is not None:
        # The membership test is done here and GX checks its outcome: passed as a value_set, thousands of train
        # keys are copied through pydantic for every metric GX derives, which costs seconds per split.
        derived[_in_train(train_split)] = keys.isin(train_keys).where(keys.notna(), None)
    return work.assign(**derived)


def _in_train(train_split: str) -> str:
    return f"pair_in_{train_split}"


def _pair_checks(E, split, work, spec, limits, check_leakage, train_split) -> list[_Check]:
    pair = f"({', '.join(spec.text_columns)}) pair"
    checks = []
    keys = work[PAIR_KEY]
    # GX reports the unique fraction of an all-null or empty column as 0; there is then nothing to duplicate.
    if keys.notna().any():
        checks.append(_duplicate_check(E, split, keys, pair, limits.max_duplicate_fraction))
    if check_leakage:
        column = _in_train(train_split)
        leak = E.ExpectColumnValuesToBeInSet(column=column, value_set=[False],
                                             mostly=1.0 - limits.max_leakage_fraction)
        checks.append(_Check(f"{train_split}+{split}", column, leak, f"{pair} shared with {train_split}"))
    return checks


def _duplicate_check(E, split: str, keys: pd.Series, pair: str, max_fraction: float) -> _Check:
    # The unique fraction of the keys is 1 - (rows repeating an earlier row) / rows, the pandas notion of
    # duplicates; GX's uniqueness expectations would instead count every copy, the first included.
    expectation = E.ExpectColumnProportionOfUniqueValuesToBeBetween(column=PAIR_KEY, min_value=1.0 - max_fraction)
    present = keys.dropna()
    repeats = int(present.duplicated().sum())
    detail = (f"{pair} repeats an earlier row in {repeats} of {len(present)} rows "
              f"({_percent(repeats, len(present))}); at most {max_fraction:.2%} allowed")
    # Show one repeated pair with all its copies, so the sample explains itself.
    copies = present[present.duplicated(keep=False)].sort_values(kind="stable")
    return _Check(split, PAIR_KEY, expectation, f"{pair} repeated", detail, list(copies.index[:SAMPLE_ROWS]))


def pair_keys(frame: pd.DataFrame, text_columns: tuple[str, str]) -> pd.Series:
    """The normalised (text1, text2) key of each row; null where either text is null or blank.

    Blank texts are already one failure of their own, and are no pair worth calling a duplicate or a leak.
    """
    first, second = (frame[column] for column in text_columns)
    valid = first.notna() & second.notna()
    first, second = first.astype(str).str.strip(), second.astype(str).str.strip()
    valid &= (first != "") & (second != "")
    return (first + "\t" + second).where(valid, None)


def _train_keys(splits, spec: _KindSpec, limits: GateLimits, train_split: str) -> set[str] | None:
    train = splits.get(train_split)
    if not limits.check_leakage or train is None or not all(c in train.columns for c in spec.text_columns):
        return None
    return set(pair_keys(train, spec.text_columns).dropna())


def _is_numeric(values: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.infer_dtype(values, skipna=True) in {"integer", "floating", "mixed-integer-float", "empty"}


# --------------------------------------------------------------------------------------------------------------
# Turning GX results into the gate's result


def _outcome(check: _Check, result) -> ExpectationOutcome:
    return ExpectationOutcome(check.split, result.expectation_config.type, check.column, bool(result.success),
                              _observed(check, result))


def _observed(check: _Check, result) -> str:
    error = _exception_message(result)
    if error:
        return f"error: {error}"
    values = result.result or {}
    if "unexpected_count" in values:
        return f"{values['unexpected_count']} of {values['element_count']} rows unexpected"
    if "observed_value" in values:
        observed = values["observed_value"]
        return f"{observed:.4f}" if isinstance(observed, float) else str(observed)
    if result.expectation_config.type == "expect_column_to_exist":
        return "present" if result.success else "missing"
    return ""


def _failure(check: _Check, result, frame: pd.DataFrame) -> ExpectationFailure:
    values = result.result or {}
    positions = check.samples or values.get("partial_unexpected_index_list") or []
    return ExpectationFailure(
        split=check.split,
        expectation=result.expectation_config.type,
        column=check.column,
        detail=check.detail or _detail(check, result),
        sample_rows=_rows(frame, positions[:SAMPLE_ROWS]),
    )


def _detail(check: _Check, result) -> str:
    error = _exception_message(result)
    if error:
        return f"{check.phrase}: could not be evaluated ({error})"
    values = result.result or {}
    if "unexpected_count" in values:
        count, total = values["unexpected_count"], values["element_count"]
        sentence = f"{check.phrase} in {count} of {total} rows ({_percent(count, total)})"
        mostly = result.expectation_config.kwargs.get("mostly")
        if mostly is not None and mostly < 1.0:
            sentence += f"; at most {1.0 - mostly:.2%} allowed"
        return sentence
    return f"{check.phrase} (observed {_observed(check, result)})"


def _exception_message(result) -> str | None:
    info = result.exception_info or {}
    # A failed metric is reported as {metric id: {...}}, an expectation-level error as a flat dict.
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error")
    return None


def _percent(count: int, total: int) -> str:
    return f"{count / total:.2%}" if total else "n/a"


def _rows(frame: pd.DataFrame, positions: list[int]) -> list[dict]:
    return [{str(k): _plain(v) for k, v in frame.iloc[int(p)].items()} for p in positions]


def _plain(value: Any) -> Any:
    """A JSON-serialisable Python value: numpy scalars unwrapped, NaN/NA as None, anything else as text."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return None if isinstance(value, float) and math.isnan(value) else value
    import pandas as pd

    return None if pd.isna(value) is True else str(value)
