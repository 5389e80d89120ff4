"""The data watcher: notice a new data version in the checkout the deployments run from, gate the datasets it
changed, and say which passed (the flow turns each into a `paperline.data.version-passed` event, which the
deployments of the projects that read that dataset are triggered by).

A data version is the md5 in `data.dvc`; which datasets it changed comes from DVC's own listing of the version
(the `.dir` file in the DVC cache: every file's path and md5), compared per top-level folder with the listing of
the last version the watcher saw. A dataset whose files are the same is not news even when the version is (a
new dataset added beside it retrains nothing that does not read it).

The last version seen is kept in `<workspace>/watch/data.json`, written only after the check is done (and the
flow has sent its events), so a watcher killed half-way looks again next time: at least once, never silently
skipped. The first look at a checkout records the version and reports nothing new (a fresh deployment must not
retrain every project).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from paperline.core.errors import PaperlineError
from paperline.core.settings import Settings
from paperline.data.datasets import read_pointer, resolve_data_version
from paperline.project.dataset_readers import dataset_readers, gate_read_datasets

STATE_FILE = "watch/data.json"


@dataclass
class WatchResult:
    version: str
    previous: str | None  # None: the first look at this checkout
    changed: list[str] = field(default_factory=list)  # datasets whose files differ from the previous version's
    passed: list[str] = field(default_factory=list)  # changed datasets the gate passed
    failed: dict[str, list[str]] = field(default_factory=dict)  # changed datasets the gate failed: their lines
    not_read: list[str] = field(default_factory=list)  # changed datasets no card reads (nothing to retrain)
    readers: dict[str, list[str]] = field(default_factory=dict)  # dataset -> the projects that read it

    @property
    def new_version(self) -> bool:
        return self.previous is not None and self.previous != self.version

    def lines(self) -> list[str]:
        if self.previous is None:
            return [f"first look at this checkout: data version {self.version} recorded; a later version is news"]
        if not self.new_version:
            return [f"data version {self.version}: unchanged since the last look"]
        out = [f"new data version {self.version} (was {self.previous}): "
               f"{', '.join(self.changed) or 'no dataset changed'}"]
        out += [f"{name}: gate passed; retrains {', '.join(self.readers.get(name, [])) or 'nothing'}"
                for name in self.passed]
        out += [f"{name}: gate failed, nothing retrained: {'; '.join(lines)}" for name, lines in self.failed.items()]
        out += [f"{name}: changed, but no project card reads it" for name in self.not_read]
        return out


def dataset_digests(root: Path, md5: str) -> dict[str, str]:
    """Per top-level folder of the data version, a digest of its files' paths and md5s (DVC's `.dir` listing)."""
    if not md5.endswith(".dir"):
        raise PaperlineError(f"data.dvc's md5 {md5} is not a folder version (.dir); `dvc add data` makes one")
    listing = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    if not listing.is_file():
        raise PaperlineError(f"DVC's listing of version {md5} is not in the cache ({listing}); run `paperline data "
                             "pull`")
    by_dataset: dict[str, list[str]] = {}
    for entry in json.loads(listing.read_text()):
        top, _, rest = entry["relpath"].partition("/")
        if rest:
            by_dataset.setdefault(top, []).append(f"{rest}\0{entry['md5']}")
    return {name: hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()
            for name, files in sorted(by_dataset.items())}


def _state_path(settings: Settings) -> Path:
    return settings.workspace / STATE_FILE


def read_state(settings: Settings) -> dict | None:
    path = _state_path(settings)
    return json.loads(path.read_text()) if path.is_file() else None


def write_state(settings: Settings, result: WatchResult, digests: dict[str, str]) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": result.version, "datasets": digests, "checked": time.time()}, indent=1))
    os.replace(tmp, path)


def look(settings: Settings) -> tuple[WatchResult, dict[str, str]]:
    """Compare the checkout's data version with the last one seen and gate the changed datasets; the caller
    records the new state with `write_state` once it has acted on the result."""
    version = read_pointer(settings.root)["md5"]
    state = read_state(settings)
    result = WatchResult(version=version, previous=state["version"] if state else None)
    if state is not None and state["version"] == version:
        return result, state["datasets"]
    data = resolve_data_version(settings.root)  # fetches the new version's files (and listing) if missing
    digests = dataset_digests(settings.root, data.md5)
    if state is None:
        return result, digests
    before = state.get("datasets") or {}
    result.changed = [name for name, digest in digests.items() if before.get(name) != digest]
    cards = dataset_readers(settings.projects_dir)
    read = [name for name in result.changed if name in cards.readers]
    result.not_read = [name for name in result.changed if name not in cards.readers]
    result.readers = {name: cards.projects(name) for name in read}
    if read:
        outcome = gate_read_datasets(data, cards, only=set(read))
        for gated in outcome.results:
            if gated.passed:
                result.passed.append(gated.dataset)
            else:
                result.failed[gated.dataset] = list(gated.summary_lines())
    return result, digests
