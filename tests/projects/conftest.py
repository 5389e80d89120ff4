"""What the project tests share: every project importable by its package name, and data in memory.

`register_projects` makes each folder under projects/ the package `paperline_projects.<name>`, as discovery does
for a run, so a test imports a project's files by the names the project itself uses
(`from paperline_projects.multicsr import generation`). `rows_data` gives a method `ProjectData` over rows in
memory (`ProjectData.from_rows`), keyed by (dataset, split).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from paperline.project.discovery import register_projects
from paperline.project.interface import ProjectData

REPO = Path(__file__).resolve().parents[2]
register_projects(REPO / "projects")


def data_of(rows: dict[tuple[str, str], list]) -> ProjectData:
    """`ProjectData` over in-memory rows: {("stsb", "test"): [ScoredPair(...), ...], ...}."""
    nested: dict[str, dict[str, list]] = {}
    for (dataset, split), split_rows in rows.items():
        nested.setdefault(dataset, {})[split] = split_rows
    return ProjectData.from_rows(nested)


@pytest.fixture(scope="session")
def rows_data():
    """`data_of` as a fixture: `rows_data({("stsb", "train"): rows})` -> ProjectData."""
    return data_of
