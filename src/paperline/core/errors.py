"""The one base class of errors a user can cause (bad config, missing data, failed gate, unreachable service).

The CLI prints such an error as one line and exits with the error's `exit_code`: 2 when what the user typed is
wrong (a name, a config, a path, a URL in an environment variable: fix it and rerun), 1 when a service or the job
failed, 3 when a data gate refused the data (`paperline.ops.runs.summary.GateFailure`). Anything that is not a
PaperlineError is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

USAGE = 2  # fix what you typed (command line, config, environment variable) and rerun
FAILURE = 1  # a service or the job failed; the message says what to check
BAD_DATA = 3  # a data gate refused the data: fix the data (the gate report names each failure), nothing ran


class PaperlineError(Exception):
    """An error whose message alone tells the user what is wrong and what to do."""

    exit_code: int = FAILURE


class UsageError(PaperlineError):
    """Something the user typed names nothing or is malformed: the CLI exits with 2."""

    exit_code = USAGE


def yaml_problem(error: Any) -> str:
    """One line for a YAML error (PyYAML's own message spans several lines, with a caret under the column)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"
