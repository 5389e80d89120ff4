"""`paperline data pull`, `status` and `validate`: the versioned dataset and its gate."""

from __future__ import annotations

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
    """Gate every dataset folder under data/ that a project card names, as the kind the cards give it, and each
    folder no card names yet that is named after a data kind, as that kind (e.g. `captioned_images`)."""
    from paperline.data.datasets import resolve_data_version
    from paperline.project.dataset_readers import dataset_readers, gate_read_datasets

    settings = workspace_settings()
    report = None
    if args.report:  # before the gate's minutes: a report path that cannot be written is one line now
        from paperline.core.targets import check_target

        report = check_target(args.report, what="file", noun="a report", replace=True)
    cards = dataset_readers(settings.projects_dir)
    version = resolve_data_version(settings.root)
    folders = sorted(p.name for p in version.path.iterdir() if p.is_dir())
    cards = cards.with_kind_folders(folders)
    readers = cards.readers
    outcome = gate_read_datasets(version, cards)
    for result in outcome.results:
        prefix = f"{result.dataset}: " if result.passed else ""  # a failure line names its dataset already
        print("\n".join(prefix + line for line in result.summary_lines()))
    for name in folders:
        if name not in readers:
            print(f"{name}: not gated (no project reads it)")
    missing = sorted(set(readers) - set(folders))
    for name in missing:
        print(f"{name}: not in data/ at version {version.md5}, yet read by {', '.join(cards.projects(name))}; add it to data/ "
              "and `dvc add data`, or fix the cards")
    if report is not None:
        from paperline.core.targets import write_text

        write_text(report, outcome.to_markdown())
        print(f"report: {args.report}")
    if not outcome.passed:
        return BAD_DATA
    return 1 if missing else 0
