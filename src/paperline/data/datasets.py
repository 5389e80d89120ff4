"""Datasets: which files a project reads, at which DVC version, and readers per data kind.

The version of the data is the md5 in `data.dvc` at the repository root. `resolve_data_version` checks that
`data/` holds exactly that version (pulling it from the DVC remote when files are missing) and refuses to go
on when it differs: a run never trains on unversioned data. The readers know nothing of DVC.

Every split is a tab-separated file with a header line, fields quoted as Python's csv writes. What its columns
are, and the typed rows a method reads, is its data *kind*: one file each in `paperline/data/kinds/` (e.g.
`scored_pairs` for STS-B, `nli_pairs` for SNLI); the readers here only look the kind up by name.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from paperline.core.errors import PaperlineError
from paperline.data.kinds import get_kind


class DataError(PaperlineError):
    """Data that is missing, unreachable or not the versioned one; the message says what to do."""


@dataclass(frozen=True)
class DatasetRef:
    """One dataset at one version: `path` is its folder under data/, `md5` the DVC version of data/."""

    name: str
    kind: str
    path: Path
    md5: str

    def split_path(self, split: str) -> Path:
        return self.path / f"{split}.tsv"


def read_frame(path: Path, kind: str):
    """Read one split as a pandas DataFrame, every column kept; text stays text (no 'NA' -> NaN).

    The kind's `prepare` then coerces its columns (a score to numbers, say) so that a bad value reaches the data
    gate as a failure to report rather than a crash here. An unknown kind is an `UnknownKindError`.
    """
    import pandas as pd

    data_kind = get_kind(kind)
    if not path.is_file():
        raise DataError(f"{path} does not exist; run `paperline data pull` to fetch the versioned data")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL)
    return data_kind.prepare(frame)


def read_split(ref: DatasetRef, split: str) -> list:
    """Typed rows of one split (the kind's row class); call after the data gate, which guarantees the columns
    and types the kind's reader relies on."""
    return get_kind(ref.kind).rows(read_frame(ref.split_path(split), ref.kind))


# ---- the DVC version -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataVersion:
    md5: str  # e.g. f1bd840915efd71f73cab4431f31101f.dir
    path: Path  # the data/ folder
    nfiles: int | None
    pulled: bool  # whether this call had to fetch files from the remote


def read_pointer(root: Path) -> dict[str, Any]:
    pointer = root / "data.dvc"
    if not pointer.is_file():
        raise DataError(f"{pointer} does not exist; the data version is the md5 in that file (see README)")
    out = (yaml.safe_load(pointer.read_text()) or {}).get("outs", [{}])[0]
    if "md5" not in out:
        raise DataError(f"{pointer} has no md5; recreate it with `dvc add data`")
    return out


def dataset_ref(version: DataVersion, name: str, kind: str) -> DatasetRef:
    return DatasetRef(name=name, kind=kind, path=version.path / name, md5=version.md5)


# How long a run waits for another DVC command of the same checkout (DVC holds one lock per repository, .dvc/tmp/lock,
# through every status and pull): several runs started at once each check data/ (seconds for 9,569 files on a
# loaded machine), and DVC itself gives up after 3 s. Minutes of waiting means a stuck or very slow holder.
DVC_LOCK_TIMEOUT_S = 600.0


def _with_repo(root: Path, action: Callable[[Any], Any]) -> Any:
    """`action(repo)` on the DVC repository at `root`, retried while another process holds DVC's repository lock,
    for at most DVC_LOCK_TIMEOUT_S; then one DataError naming the lock."""
    from dvc.lock import LockError
    from dvc.repo import Repo

    deadline = time.monotonic() + DVC_LOCK_TIMEOUT_S
    while True:
        try:
            with Repo(str(root)) as repo:
                return action(repo)
        except LockError:
            if time.monotonic() >= deadline:
                raise DataError(
                    f"another DVC command has held {root / '.dvc' / 'tmp' / 'lock'} for over "
                    f"{DVC_LOCK_TIMEOUT_S:.0f} s; wait for it to end (`ps` shows it), or delete the file if no DVC "
                    "process is running, then rerun") from None
            time.sleep(1.0)


def data_status(root: Path) -> dict[str, Any]:
    """What DVC says of data/ against data.dvc: {} when they match, else DVC's status entry."""
    return _with_repo(root, lambda repo: repo.status(targets=[str(root / "data.dvc")]))


def pull_data(root: Path, force: bool = False) -> None:
    """Fetch data/ at the version in data.dvc from the configured DVC remote (`force` overwrites local edits)."""
    from dvc.exceptions import DvcException

    try:
        _with_repo(root, lambda repo: repo.pull(targets=[str(root / "data.dvc")], force=force))
    except DvcException as exc:
        raise DataError(
            f"cannot pull the data from the DVC remote: {exc}; check the remote url in .dvc/config "
            "(`dvc remote list`) and that the store is reachable"
        ) from None


def resolve_data_version(root: Path, pull: bool = True) -> DataVersion:
    """The dataset version for a run; pulls missing files, refuses data that differs from data.dvc."""
    out = read_pointer(root)
    data_dir = root / out.get("path", "data")
    status = data_status(root)
    pulled = False
    if status and pull and _only_missing(status, data_dir):
        pull_data(root)
        pulled = True
        status = data_status(root)
    if status:
        raise DataError(
            f"{data_dir} differs from data.dvc ({_describe(status)}); restore the versioned data with "
            "`paperline data pull --force`, or make the change a new version with `dvc add data`"
        )
    return DataVersion(md5=out["md5"], path=data_dir, nfiles=out.get("nfiles"), pulled=pulled)


def _only_missing(status: dict, data_dir: Path) -> bool:
    """Files that are merely absent may be pulled; modified files must not be silently overwritten."""
    if not data_dir.exists():
        return True
    return all(change in ("deleted", "not in cache") for change in _changes(status))


def _changes(status: dict) -> list[str]:
    changes = []
    for entries in status.values():
        for entry in entries:
            if isinstance(entry, dict):
                for detail in entry.values():
                    changes.extend(detail.values() if isinstance(detail, dict) else [str(detail)])
            else:
                changes.append(str(entry))
    return changes


def _describe(status: dict) -> str:
    return ", ".join(sorted(set(_changes(status)))) or "changed"


def remote_url(root: Path) -> str:
    """The URL of the default DVC remote, as configured in .dvc/config (for the run's dataset source)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
        name = config["core"].get("remote")
        return config["remote"].get(name, {}).get("url", "unknown") if name else "unknown"
