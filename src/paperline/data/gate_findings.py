"""How the gate explains an expectation's result: the outcome row, and for a failure its sentence and sample rows.

Kept apart from `paperline.data.quality` (which plans and runs the expectations) so each stays one concept.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from paperline.data.quality_report import ExpectationFailure, ExpectationOutcome

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_ROWS = 3


def outcome(check: Any, result) -> ExpectationOutcome:
    return ExpectationOutcome(check.split, result.expectation_config.type, check.column, bool(result.success),
                              observed(check, result))


def observed(check: Any, result) -> str:
    error = exception_message(result)
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


def failure(check: Any, result, frame: pd.DataFrame) -> ExpectationFailure:
    values = result.result or {}
    positions = check.samples or values.get("partial_unexpected_index_list") or []
    return ExpectationFailure(
        split=check.split,
        expectation=result.expectation_config.type,
        column=check.column,
        detail=check.detail or detail(check, result),
        sample_rows=sample_rows(frame, positions[:SAMPLE_ROWS]),
    )


def detail(check: Any, result) -> str:
    error = exception_message(result)
    if error:
        return f"{check.phrase}: could not be evaluated ({error})"
    values = result.result or {}
    if "unexpected_count" in values:
        count, total = values["unexpected_count"], values["element_count"]
        sentence = f"{check.phrase} in {count} of {total} rows ({percent(count, total)})"
        mostly = result.expectation_config.kwargs.get("mostly")
        if mostly is not None and mostly < 1.0:
            sentence += f"; at most {1.0 - mostly:.2%} allowed"
        return sentence
    return f"{check.phrase} (observed {observed(check, result)})"


def exception_message(result) -> str | None:
    info = result.exception_info or {}
    # A failed metric is reported as {metric id: {...}}, an expectation-level error as a flat dict.
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error")
    return None


def percent(count: int, total: int) -> str:
    return f"{count / total:.2%}" if total else "n/a"


def sample_rows(frame: pd.DataFrame, positions: list[int]) -> list[dict]:
    return [{str(k): shown(plain(v)) for k, v in frame.iloc[int(p)].items()} for p in positions]


def shown(value: Any, limit: int = 300) -> Any:
    """A sample value as the report shows it: a text over `limit` characters is cut, with its length said."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... ({len(value):,} characters)"
    return value


def plain(value: Any) -> Any:
    """A JSON-serialisable Python value: numpy scalars unwrapped, NaN/NA as None, anything else as text."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return None if isinstance(value, float) and math.isnan(value) else value
    import pandas as pd

    return None if pd.isna(value) is True else str(value)


# --------------------------------------------------------------------------------------------------------------
# Every dataset of a run
