"""The spread of a project's primary metric over training seeds: what a promotion margin must exceed.

Trains and evaluates one config per seed with the method alone (`paperline.project.local_run`: no registry, no
tracking), and prints each seed's primary metric, the spread (max - min) and the sample standard deviation. The
policy's `min_improvement` for a project is the standard deviation measured here (registry/policy.yaml says
which config and seeds); a training-free method has none (the same numbers on every seed).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/seed_spread.py sbert_sts --config default --seeds 0 1 2
    HF_HUB_OFFLINE=1 .venv/bin/python bench/seed_spread.py cross_encoder_sts matryoshka_2d --config smoke

A project that consumes an upstream model (a teacher) cannot run without the registry and is reported as such.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def spread(project: str, config: str, seeds: list[int]) -> dict:
    from paperline.core.settings import Settings
    from paperline.project.discovery import get_project
    from paperline.project.local_run import run_locally

    settings = Settings.from_env()
    card_project = get_project(settings.projects_dir, project)
    if card_project.load_config(config, []).upstream:
        return {"project": project, "config": config, "note": "consumes an upstream model: run it with paperline run"}
    metric = card_project.card.primary_metric.name
    values, started = [], time.monotonic()
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix=f"seed-spread-{project}-") as workdir:
            _, evaluation = run_locally(project, config, [f"seed={seed}"], workdir=Path(workdir), settings=settings)
        values.append(evaluation.metrics[metric])
        print(f"  {project} [{config}] seed {seed}: {metric} {values[-1]:.2f}", flush=True)
    return {"project": project, "config": config, "metric": metric, "values": values,
            "spread": max(values) - min(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "minutes": (time.monotonic() - started) / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projects", nargs="+")
    parser.add_argument("--config", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = [spread(project, args.config, args.seeds) for project in args.projects]
    print("\n| project | config | seeds | primary metric per seed | spread (max - min) | std | minutes |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "note" in row:
            print(f"| {row['project']} | {row['config']} | - | {row['note']} | - | - | - |")
            continue
        per_seed = " / ".join(f"{v:.2f}" for v in row["values"])
        print(f"| {row['project']} | {row['config']} | {' '.join(map(str, args.seeds))} | {per_seed} | "
              f"{row['spread']:.2f} | {row['std']:.2f} | {row['minutes']:.1f} |")


if __name__ == "__main__":
    main()
