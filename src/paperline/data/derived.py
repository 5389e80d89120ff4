"""Data a method derives during a run (pseudo-labels, a teacher's scores): a TSV whose sha256 is its version.

Written once, read back from the file (so what a model learned from is exactly what was hashed), and recorded on
the run by its hash: derived data is versioned by content, like the DVC data it came from.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Write a header line and rows (Python's csv quoting, tab-separated); returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    return sha256_file(path)


def read_tsv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))
