"""`paperline data pull`, `status` and `validate`: the versioned dataset and its gate."""

from __future__ import annotations

from pathlib import Path

from paperline.cli.common import workspace_settings
from paperline.core.errors import BAD_DATA


def cmd_data_pull(args) -> int:
    from paperline.data.datasets import pull_data, read_pointer, resolve_data_version

    settings = workspace_settings()
    if args.force:
        pull_data(settings.root, force=True)
    version = resolve_data_version(settings.root)
    print(f"data/ is at version {version.md5} ({read_pointer(settings.root).get('nfiles')} files)")
    return 0


def cmd_data_status(args) -> int:
    from paperline.data.datasets import data_status, read_pointer

    settings = workspace_settings()
    out = read_pointer(settings.root)
    status = data_status(settings.root)
    print(f"version (data.dvc): {out['md5']}  size {out.get('size')} bytes, {out.get('nfiles')} files")
    print("data/: matches data.dvc" if not status else f"data/: differs from data.dvc: {status}")
    return 0 if not status else 1


def cmd_data_validate(args) -> int:
    """Gate every dataset folder under data/ that a project card names, as the kind the cards give it."""
    from paperline.core.config import ConfigError, DatasetUse, ProjectConfig
    from paperline.data.datasets import dataset_ref, resolve_data_version
    from paperline.data.kinds import UnknownKindError, get_kind
    from paperline.data.quality import gate_datasets
    from paperline.project.discovery import discover

    settings = workspace_settings()
    # dataset -> kind -> the projects whose card reads the dataset as that kind
    readers: dict[str, dict[str, list[str]]] = {}
    floors: dict[str, dict[str, int]] = {}  # dataset -> split -> fewest rows the cards accept
    own_limits: dict[str, dict[str, float]] = {}  # dataset -> the loosest limit any card sets for it
    for project in discover(settings.projects_dir).values():
        if project.card is None:  # a card that does not validate names no data; `paperline ls` says why
            continue
        for need in project.card.data:
            try:
                get_kind(need.kind)  # a typo in a card fails here, before any data is read
            except UnknownKindError as exc:
                raise UnknownKindError(f"{project.name}/project.yaml, dataset '{need.dataset}': {exc}") from None
            readers.setdefault(need.dataset, {}).setdefault(need.kind, []).append(project.name)
            for limit, value in project.card.limits().get(need.dataset, {}).items():
                own = own_limits.setdefault(need.dataset, {})
                own[limit] = max(value, own.get(limit, 0.0))
            for split, rows in need.min_rows.items():  # the strictest floor any card states
                floor = floors.setdefault(need.dataset, {})
                floor[split] = max(rows, floor.get(split, 0))
    for dataset, by_kind in sorted(readers.items()):
        if len(by_kind) > 1:
            claims = "; ".join(f"{kind} by {', '.join(sorted(names))}" for kind, names in sorted(by_kind.items()))
            raise ConfigError(f"project cards give dataset '{dataset}' different kinds ({claims}); a dataset has "
                              "one kind: make the cards' `data:` entries agree")
    version = resolve_data_version(settings.root)
    folders = sorted(p.name for p in version.path.iterdir() if p.is_dir())
    kinds = {name: next(iter(readers[name])) for name in folders if name in readers}  # one each, checked above
    uses = {name: DatasetUse(kind=kind, splits=sorted(f.stem for f in (version.path / name).glob("*.tsv")))
            for name, kind in kinds.items()}
    outcome = gate_datasets({n: dataset_ref(version, n, u.kind) for n, u in uses.items()}, ProjectConfig(data=uses),
                            min_rows=floors, dataset_limits=own_limits)
    for result in outcome.results:
        prefix = f"{result.dataset}: " if result.passed else ""  # a failure line names its dataset already
        print("\n".join(prefix + line for line in result.summary_lines()))
    for name in folders:
        if name not in readers:
            print(f"{name}: not gated (no project reads it)")
    missing = sorted(set(readers) - set(folders))
    for name in missing:
        projects = sorted({p for names in readers[name].values() for p in names})
        print(f"{name}: not in data/ at version {version.md5}, yet read by {', '.join(projects)}; add it to data/ "
              "and `dvc add data`, or fix the cards")
    if args.report:
        Path(args.report).write_text(outcome.to_markdown())
        print(f"report: {args.report}")
    if not outcome.passed:
        return BAD_DATA
    return 1 if missing else 0
