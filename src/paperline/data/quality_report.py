"""A data-gate result (:class:`GateResult`, made by :func:`paperline.data.quality.gate_splits`) and its renderings.

The report is what a person reads when a run stops at the gate, and what the tracking step logs with every run:
a verdict, every expectation per split with its observed value, then each failure with its offending rows.
The HTML page is standalone (inline style, no scripts or external assets) so it opens from an MLflow artifact.
For a kind whose rows are pictures, it shows each offending row's picture beside it, or a few sample pictures
when the data passed, as small inline `data:` thumbnails (the kind's `preview`); the markdown names the files.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ExpectationFailure:
    split: str  # "train", "dev", ... or "train+dev" for a cross-split check
    expectation: str  # the GX expectation type
    column: str | None
    detail: str  # one human sentence
    sample_rows: list[dict]  # up to 3 offending rows with their original columns
    # For a kind whose rows are pictures: a `data:` thumbnail per sample row (None: the file cannot be shown).
    pictures: list[str | None] = field(default_factory=list)


@dataclass
class ExpectationOutcome:
    """One evaluated expectation, passed or not: a row of the report."""

    split: str
    expectation: str
    column: str | None
    success: bool
    observed: str


@dataclass
class GateResult:
    dataset: str
    kind: str
    passed: bool
    evaluated: int
    failures: list[ExpectationFailure]
    split_rows: dict[str, int]
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    # For a kind whose rows are pictures, when it passed: {"split", "label", "uri"} of a few sample rows.
    pictures: list[dict] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """One line per failure, or a single line saying what passed."""
        if self.passed:
            splits = ", ".join(f"{name} ({rows} rows)" for name, rows in self.split_rows.items())
            return [f"passed: {self.evaluated} expectations on splits {splits}"]
        return [_failure_line(self.dataset, failure) for failure in self.failures]

    def to_markdown(self) -> str:
        return render_markdown(self)

    def to_html(self) -> str:
        return render_html(self)

    def to_dict(self) -> dict:
        return asdict(self)


def _failure_line(dataset: str, failure: ExpectationFailure) -> str:
    target = f"{failure.expectation}({failure.column})" if failure.column else failure.expectation
    line = f"{dataset}/{failure.split}: {target}: {failure.detail}"
    if failure.sample_rows:
        line += f"; e.g. {_short_row(failure.sample_rows[0])}"
    return line


def _short_row(row: dict, width: int = 80) -> str:
    # A summary line must stay one readable line; the full rows are in the report.
    shortened = {k: (v[: width - 3] + "..." if isinstance(v, str) and len(v) > width else v) for k, v in row.items()}
    return json.dumps(shortened, ensure_ascii=False, default=str)


def _verdict(result: Any) -> str:
    return "passed" if result.passed else f"FAILED ({len(result.failures)} failed)"


def _split_summary(result: Any) -> str:
    return ", ".join(f"{name} ({rows} rows)" for name, rows in result.split_rows.items())


def _sample_columns(rows: list[dict]) -> list[str]:
    # Rows of one failure share their columns; the union guards against hand-made results.
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return columns


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# --------------------------------------------------------------------------------------------------------------
# Markdown


def _md(value: Any) -> str:
    # A pipe or newline inside a cell would break the table.
    return _text(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]


def render_markdown(result: Any) -> str:
    lines = [
        f"# Data gate: {result.dataset} ({result.kind}): {_verdict(result)}",
        "",
        f"{result.evaluated} expectations on splits {_split_summary(result)}.",
        "",
        "## Expectations",
        "",
    ]
    rows = [[o.split, o.expectation, o.column or "", "yes" if o.success else "**no**", o.observed]
            for o in result.outcomes]
    lines += _md_table(["split", "expectation", "column", "success", "observed"], rows)
    if result.failures:
        lines += ["", "## Failures"]
    for failure in result.failures:
        target = f"{failure.expectation}({failure.column})" if failure.column else failure.expectation
        lines += ["", f"### {result.dataset}/{failure.split}: {target}", "", failure.detail]
        if failure.sample_rows:
            columns = _sample_columns(failure.sample_rows)
            lines += ["", *_md_table(columns, [[row.get(c) for c in columns] for row in failure.sample_rows])]
    pictures = getattr(result, "pictures", None) or []
    if pictures:  # the thumbnails themselves are in the HTML report; here, which rows they show
        lines += ["", "## Sample pictures", "", "In the HTML report: "
                  + ", ".join(f"{p.get('split')}: {p.get('label')}" for p in pictures) + "."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# HTML

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.ok { color: #17692b; } .bad { color: #b00020; font-weight: bold; }
figure { display: inline-block; margin: 0 1em 1em 0; font-size: 0.8em; max-width: 10em; }
img.thumb { image-rendering: pixelated; border: 1px solid #ccc; }
"""


def _html_table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if classes and classes[index] else ""
        cells = "".join(f"<td>{html.escape(_text(cell))}</td>" for cell in row)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_failure(dataset: str, failure: Any) -> str:
    target = f"{failure.expectation}({failure.column})" if failure.column else failure.expectation
    parts = [f"<h3>{html.escape(f'{dataset}/{failure.split}: {target}')}</h3>", f"<p>{html.escape(failure.detail)}</p>"]
    pictures = getattr(failure, "pictures", None) or []
    if any(pictures):
        shown = "".join(_thumbnail(uri, f"row {index + 1}") for index, uri in enumerate(pictures))
        parts.append(f"<p>{shown}</p>")
    if failure.sample_rows:
        columns = _sample_columns(failure.sample_rows)
        parts.append(_html_table(columns, [[row.get(c) for c in columns] for row in failure.sample_rows]))
    return "\n".join(parts)


def _thumbnail(uri: str | None, caption: str) -> str:
    """One picture with its caption; a row whose file cannot be shown (missing, broken) says so in words."""
    shown = (f'<img class="thumb" src="{html.escape(uri)}" alt="{html.escape(caption)}">' if uri
             else "<span>(no picture: see the row below)</span>")
    return f"<figure>{shown}<figcaption>{html.escape(caption)}</figcaption></figure>"


def render_html(result: Any) -> str:
    title = f"Data gate: {result.dataset} ({result.kind}): {_verdict(result)}"
    verdict_class = "ok" if result.passed else "bad"
    rows = [[o.split, o.expectation, o.column or "", "yes" if o.success else "no", o.observed] for o in result.outcomes]
    classes = ["" if o.success else "bad" for o in result.outcomes]
    body = [
        f'<h1 class="{verdict_class}">{html.escape(title)}</h1>',
        f"<p>{result.evaluated} expectations on splits {html.escape(_split_summary(result))}.</p>",
        "<h2>Expectations</h2>",
        _html_table(["split", "expectation", "column", "success", "observed"], rows, classes),
    ]
    if result.failures:
        body.append("<h2>Failures</h2>")
        body += [_html_failure(result.dataset, failure) for failure in result.failures]
    pictures = getattr(result, "pictures", None) or []
    if pictures:
        body.append("<h2>Sample pictures</h2>")
        body.append("<p>" + "".join(_thumbnail(p.get("uri"), f"{p.get('split')}: {p.get('label')}")
                                    for p in pictures) + "</p>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


@dataclass
class GateOutcome:
    """The data gate over every dataset a run reads."""

    results: list[GateResult]  # one per dataset
    # Findings across datasets that fail nothing (an evaluation suite's pairs that are also training pairs): shown
    # in the report, never part of the verdict. Added by the run after the gate, so a cached verdict has none.
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def summary_lines(self) -> list[str]:
        return [line for r in self.results for line in r.summary_lines()] + self.notes

    def to_markdown(self) -> str:
        notes = ["## Across datasets\n\n" + "\n".join(f"- {note}" for note in self.notes)] if self.notes else []
        return "\n\n".join([*(r.to_markdown() for r in self.results), *notes])

    def to_html(self) -> str:
        return "\n".join(r.to_html() for r in self.results)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "datasets": [r.to_dict() for r in self.results], "notes": self.notes}
