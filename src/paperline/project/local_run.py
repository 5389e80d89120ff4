"""Run a method without the orchestration stack: train (or prepare) and evaluate one config, print the results.

For a bare GPU worker or a quick look: no Prefect, MLflow, DVC or GX is imported. The data is read from data/
as it is (the version in data.dvc is assumed, not checked, and the gate does not run): `paperline run` is the
path that versions, gates, tracks and registers.

    python -m paperline.project.local_run matryoshka_2d --config default train.objective=paper
    python projects/token_prepending/method.py threads=1        # a method's own shortcut to the same (main_file)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from paperline.core.settings import Settings
from paperline.data.datasets import DataVersion, dataset_ref, read_pointer
from paperline.project.discovery import get_project
from paperline.project.interface import Evaluation, ProjectData, RunContext, TrainedModel


def run_locally(project_name: str, config_name: str = "default", overrides: list[str] | None = None,
                workdir: Path | None = None, settings: Settings | None = None) -> tuple[TrainedModel, Evaluation]:
    settings = settings or Settings.from_env()
    project = get_project(settings.projects_dir, project_name)
    cfg = project.load_config(config_name, overrides)
    pointer = read_pointer(settings.root)
    version = DataVersion(md5=pointer["md5"], path=settings.root / pointer.get("path", "data"), nfiles=None,
                          pulled=False)
    data = ProjectData({name: dataset_ref(version, name, use.kind) for name, use in cfg.data.items()})
    ctx = RunContext(workdir=Path(workdir or settings.workspace / "runs" / f"local-{project_name}-{config_name}"),
                     progress=False)
    if project.generates():  # a generating method's files, unchecked here (the gate runs in `paperline run`)
        ctx.generated = project.generate(cfg, data, settings.runs_dir, progress=False)
    model = project.build_model(cfg, data, ctx)
    return model, project.method().evaluate(model, cfg, data, ctx)


def _print_table(name: str, columns: dict[str, list]) -> None:
    print(f"\n{name}:")
    header = list(columns)
    rows = [[str(v) for v in row] for row in zip(*columns.values())]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def main_file(method_file: str) -> None:
    """`python projects/<name>/method.py [--config NAME] [key=value ...]`: `main` for the project whose method.py
    that is, imported as its package (`paperline_projects.<name>`), not run as a loose script."""
    import sys

    main([Path(method_file).resolve().parent.name, *sys.argv[1:]])
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project")
    parser.add_argument("--config", default="default")
    parser.add_argument("--workdir", default=None, help="default: <workspace>/runs/local-<project>-<config>")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    model, evaluation = run_locally(args.project, args.config, args.overrides, args.workdir)
    print(json.dumps({"training": {**model.metrics, **model.notes}, "metrics": evaluation.metrics}, indent=1))
    for name, columns in evaluation.tables.items():
        _print_table(name, columns)
    print("\nartifacts:", {k: str(v) for k, v in evaluation.artifacts.items()})
    print(f"model: {model.path} ({model.flavor}); {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
