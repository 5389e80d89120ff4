"""A split file the reader cannot read, as one data-gate failure naming the file and the line.

A split is read with pandas (`paperline.data.datasets.read_frame`). Some files make that reader raise before the
gate sees a single row: bytes that are not UTF-8, a quoted field that is never closed (a file cut short inside a
quote, or a stray `"` at the start of a text: pandas' `EOF inside string starting at row N`), a line with more
fields than the header (`Expected 3 fields in line 7, saw 4`), an empty file. That is bad data, not a bug, so the
gate reports it like any other failure (exit 3, nothing trained) instead of a traceback from inside pandas that
names no file and counts records, not lines, from 0.

pandas' messages count records; a quoted field may hold newlines, so the line a person opens the file at is
found again here with the `csv` module, which reads the file with the same dialect (tab, QUOTE_MINIMAL). This
runs only for a file that already failed to read.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from paperline.data.gate_findings import shown
from paperline.data.quality_report import ExpectationFailure

NOT_UTF8 = "file_is_utf8_text"
NOT_TSV = "file_is_tab_separated"
ADD_AS_VERSION = "and add it as a new version"


def read_errors() -> tuple[type[BaseException], ...]:
    """What the reader raises for a file it cannot read (pandas is imported only when a split is read)."""
    from pandas.errors import EmptyDataError, ParserError

    return (UnicodeDecodeError, ParserError, EmptyDataError, csv.Error)


def unreadable_split(path: Path, split: str, error: BaseException) -> ExpectationFailure:
    """The gate's failure for `split`, whose file `path` the reader refused with `error` (one of `read_errors`)."""
    if isinstance(error, UnicodeDecodeError):
        return _not_utf8(path, split)
    raw = path.read_bytes()
    if not raw.strip():
        return _failure(split, NOT_TSV, f"{path} is empty: not even a header line; restore the file's rows "
                                        f"{ADD_AS_VERSION}", None, "")
    problem = _locate(raw.decode("utf-8", errors="replace"))
    if problem is None:  # the csv module reads what pandas could not: say what pandas said, in one line
        said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return _failure(split, NOT_TSV, f"{path} cannot be read as tab-separated text ({said}); fix the file "
                                        f"{ADD_AS_VERSION}", None, "")
    return _failure(split, NOT_TSV, f"{path} cannot be read as tab-separated text: {problem.what}; {problem.fix} "
                                    f"{ADD_AS_VERSION}", problem.line, problem.text)


@dataclass(frozen=True)
class _Problem:
    line: int  # 1-based, as an editor counts
    what: str
    fix: str
    text: str  # that line, as the report shows it


def _locate(text: str) -> _Problem | None:
    """The first record the reader cannot take: one with more fields than the header, or a quoted field that the
    file ends inside. None when the csv module finds neither."""
    lines = text.split("\n")
    records = list(_records(lines))
    if not records:
        return None
    header = records[0][1]
    for start, row in records[1:]:
        if len(row) > len(header):
            return _Problem(start, f"line {start} has {len(row)} fields where the header has {len(header)}",
                            "quote the text that holds a tab, or remove the extra field,", lines[start - 1])
    start, row = records[-1]
    if not _ends_inside_quotes(lines[start - 1:]):
        return None
    # The field the file ends inside is the last one of the last record: it starts after the newlines that the
    # record's earlier (quoted) fields hold.
    line = start + sum(field.count("\n") for field in row[:-1])
    return _Problem(line, f"the quoted field that starts on line {line} is never closed (the file ends inside it: "
                          "cut short, or a stray '\"' at the start of a text)",
                    "close or remove the quote, or export the file again,", lines[line - 1])


def _records(lines: list[str], strict: bool = False):
    """(first line, fields) of every record that is not a blank line (pandas skips those), read as the reader
    reads the file; line numbers count newlines, as an editor does."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, sum(map(len, lines)) + len(lines)))  # a never-closed field runs to the end
    try:
        reader = csv.reader(_with_newlines(lines), delimiter="\t", quoting=csv.QUOTE_MINIMAL, strict=strict)
        start = 1
        for row in reader:
            if row:
                yield start, row
            start = reader.line_num + 1
    finally:
        csv.field_size_limit(limit)


def _with_newlines(lines: list[str]):
    for index, line in enumerate(lines):
        yield line + "\n" if index < len(lines) - 1 else line


def _ends_inside_quotes(lines: list[str]) -> bool:
    """Whether `lines` (the last record to the end of the file) end inside a quoted field: the strict csv reader
    says so at the end of the data."""
    try:
        for _ in _records(lines, strict=True):
            pass
    except csv.Error as error:
        return "unexpected end of data" in str(error)
    return False


def _not_utf8(path: Path, split: str) -> ExpectationFailure:
    raw = path.read_bytes()
    try:  # the reader's error counts from its buffer, not the file: find the first bad byte in the file
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        start = error.start
    else:  # pandas' buffer ended inside a character that the whole file completes: say so without a line
        return _failure(split, NOT_UTF8, f"{path} is not UTF-8 text; re-encode the file as UTF-8 {ADD_AS_VERSION}",
                        None, "")
    line = raw.count(b"\n", 0, start) + 1
    text = raw.split(b"\n")[line - 1].decode("utf-8", errors="replace")
    detail = (f"{path} is not UTF-8 text: byte 0x{raw[start]:02x} on line {line} cannot be decoded; "
              f"re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) {ADD_AS_VERSION}")
    return _failure(split, NOT_UTF8, detail, line, text)


def _failure(split: str, expectation: str, detail: str, line: int | None, text: str) -> ExpectationFailure:
    rows = [{"line": line, "text": shown(text)}] if line is not None else []
    return ExpectationFailure(split=split, expectation=expectation, column=None, detail=detail, sample_rows=rows)
