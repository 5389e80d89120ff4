"""Which project reads which dataset, as which kind: the project cards' `data:` entries, joined over every card.

One home for that join: `paperline data validate` gates each dataset as the kind the cards give it, the data
watcher gates the datasets a new data version changed, `paperline deploy` gives each project's deployment a
trigger on the datasets its card reads, and a batch encode reads a corpus as its kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from paperline.core.config import ConfigError, DatasetUse, ProjectConfig
from paperline.data.datasets import DataVersion, dataset_ref
from paperline.data.kinds import UnknownKindError, get_kind, kind_names
from paperline.project.discovery import discover


@dataclass
class DatasetReaders:
    # dataset -> kind -> the projects whose card reads the dataset as that kind
    readers: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    floors: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset -> split -> fewest rows any card accepts
    limits: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset -> the loosest limit any card sets

    def kind(self, dataset: str) -> str:
        if dataset not in self.readers:
            raise ConfigError(f"no project card names dataset '{dataset}', so its kind is unknown; add it to a "
                              f"card's `data:` (datasets the cards name: {', '.join(sorted(self.readers))})")
        return next(iter(self.readers[dataset]))

    def projects(self, dataset: str) -> list[str]:
        return sorted({p for names in self.readers.get(dataset, {}).values() for p in names})

    def with_kind_folders(self, folders: list[str]) -> DatasetReaders:
        """These readers plus each folder that no card reads and that is named after a data kind, as that kind
        (`captioned_images/` as `captioned_images`): a dataset added with its kind, before any project reads it,
        is still gated by `paperline data validate`, so its first reader does not find it broken."""
        known = set(kind_names())
        added = {name: {name: []} for name in folders if name not in self.readers and name in known}
        return replace(self, readers={**self.readers, **added})


def dataset_readers(projects_dir: Path) -> DatasetReaders:
    """Join every valid card's `data:`; a typo'd kind or two cards that disagree on a kind is one ConfigError."""
    found = DatasetReaders()
    for project in discover(projects_dir).values():
        if project.card is None:  # a card that does not validate names no data; `paperline ls` says why
            continue
        for need in project.card.data:
            try:
                get_kind(need.kind)  # a typo in a card fails here, before any data is read
            except UnknownKindError as exc:
                raise UnknownKindError(f"{project.name}/project.yaml, dataset '{need.dataset}': {exc}") from None
            found.readers.setdefault(need.dataset, {}).setdefault(need.kind, []).append(project.name)
            for limit, value in project.card.limits().get(need.dataset, {}).items():
                own = found.limits.setdefault(need.dataset, {})
                own[limit] = max(value, own.get(limit, 0.0))
            for split, rows in need.min_rows.items():  # the strictest floor any card states
                floor = found.floors.setdefault(need.dataset, {})
                floor[split] = max(rows, floor.get(split, 0))
    for dataset, by_kind in sorted(found.readers.items()):
        if len(by_kind) > 1:
            claims = "; ".join(f"{kind} by {', '.join(sorted(names))}" for kind, names in sorted(by_kind.items()))
            raise ConfigError(f"project cards give dataset '{dataset}' different kinds ({claims}); a dataset has "
                              "one kind: make the cards' `data:` entries agree")
    return found


def gate_read_datasets(version: DataVersion, readers: DatasetReaders, only: set[str] | None = None):
    """The data gate on every dataset folder of `version` that a card reads (or those in `only`), each as its
    kind, every split; returns the GateOutcome."""
    from paperline.data.quality import gate_datasets

    folders = sorted(p.name for p in version.path.iterdir() if p.is_dir())
    names = [n for n in folders if n in readers.readers and (only is None or n in only)]
    uses = {name: DatasetUse(kind=readers.kind(name),
                             splits=sorted(f.stem for f in (version.path / name).glob("*.tsv")))
            for name in names}
    return gate_datasets({n: dataset_ref(version, n, u.kind) for n, u in uses.items()}, ProjectConfig(data=uses),
                         min_rows=readers.floors, dataset_limits=readers.limits)
