"""Deployments and work pools as data: what `paperline deploy` deploys and which pool each one needs.

Pure reading (no Prefect import: the library stays below the flows); `paperline_flows.deployments` talks to the
Prefect API with it. `infra/pools/pools.yaml` names each work pool the deployments use, its worker type and the
base job template shipped beside it (none: the worker type's default, as for the `process` pool).

The deployments are those written in `infra/prefect.yaml` (GPU ones, schedules, operations flows: kept as
written) plus one `paperline-run` deployment per project config that none of them covers, generated from
`projects/` on the pool pools.yaml marks `projects: true`, so a new project is deployable without editing YAML.
`deployment_file` merges both into one prefect.yaml for `prefect deploy`, with the written build and pull steps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from paperline.core.errors import PaperlineError
from paperline.project.discovery import Project

FLOW_NAME = "paperline-run"  # the run flow's name (@flow(name=...)): deployments are "paperline-run/<name>"
RUN_ENTRYPOINT = "paperline_flows.run_project:run_project"  # the installed package's run flow
GENERATED_FILE = "prefect.generated.yaml"  # in the workspace: what `prefect deploy` reads (never edit it)


class DeploymentError(PaperlineError):
    """A deployment or work pool that cannot be found or registered; the message says what to do."""

    exit_code = 2  # the user named something that does not exist (paperline.core.errors.USAGE)


@dataclass(frozen=True)
class PoolSpec:
    name: str
    type: str
    template: Path | None  # a base job template (JSON); None: the worker type's default
    projects: bool = False  # the pool every project config gets a generated deployment on
    concurrency_limit: int | None = None  # flow runs the pool's workers run at once (None: no limit)

    def base_job_template(self) -> dict | None:
        return json.loads(self.template.read_text()) if self.template else None


def prefect_file(root: Path) -> Path:
    return root / "infra" / "prefect.yaml"


def load_pools(root: Path) -> dict[str, PoolSpec]:
    folder = root / "infra" / "pools"
    raw = yaml.safe_load((folder / "pools.yaml").read_text()) or {}
    pools = {}
    for name, entry in raw.items():
        template = entry.get("base_job_template")
        limit = entry.get("concurrency_limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise DeploymentError(f"infra/pools/pools.yaml: pool '{name}' has concurrency_limit {limit!r}; give a "
                                  "whole number of runs at a time (at least 1), or leave it out for no limit")
        pools[name] = PoolSpec(name, entry["type"], folder / template if template else None,
                               bool(entry.get("projects", False)), limit)
    return pools


def projects_pool(pools: Mapping[str, PoolSpec]) -> str:
    """The one pool marked `projects: true` in infra/pools/pools.yaml."""
    marked = [spec.name for spec in pools.values() if spec.projects]
    if len(marked) != 1:
        raise DeploymentError(f"infra/pools/pools.yaml must mark exactly one pool `projects: true` (where every "
                              f"project config is deployed); marked: {', '.join(marked) or 'none'}")
    return marked[0]


def deployment_name(project: str, config: str) -> str:
    """`sbert_sts`, `nli_then_sts` -> `sbert-sts-nli-then-sts` (deployment names are dashed, as the written ones)."""
    return f"{project}-{config}".replace("_", "-")


def project_deployments(projects: Mapping[str, Project], pool: str,
                        written: list[dict]) -> tuple[list[dict], list[str]]:
    """A run deployment on `pool` per project config that no written deployment of the run flow on that pool
    already runs; returns them and the projects left out (a card that does not validate: `paperline ls` says
    why, and a run of it would stop at preflight anyway)."""
    covered = {((d.get("parameters") or {}).get("project_name"), (d.get("parameters") or {}).get("config_name"))
               for d in written if d.get("entrypoint") == RUN_ENTRYPOINT and pool_of(d) == pool}
    taken = {d.get("name") for d in written}
    generated, skipped = [], []
    for name, project in sorted(projects.items()):
        if project.card is None:
            skipped.append(name)
            continue
        for config in project.configs:
            if (name, config) in covered:
                continue
            deployment = deployment_name(name, config)
            if deployment in taken:
                raise DeploymentError(f"deployment name '{deployment}' (project {name}, config {config}) is already "
                                      "taken in infra/prefect.yaml; rename that deployment or the config")
            taken.add(deployment)
            generated.append({
                "name": deployment,
                "description": f"{project.card.title} [{config} config]",
                "entrypoint": RUN_ENTRYPOINT,
                "parameters": {"project_name": name, "config_name": config},
                "tags": [f"project:{name}", f"config:{config}"],
                "work_pool": {"name": pool},
            })
    return generated, skipped


def deployment_file(root: Path, projects: Mapping[str, Project],
                    pools: Mapping[str, PoolSpec]) -> tuple[dict, list[str]]:
    """infra/prefect.yaml with the generated deployments after its own; and the projects left out."""
    spec = _read_prefect_file(root)
    written = spec.get("deployments") or []
    generated, skipped = project_deployments(projects, projects_pool(pools), written)
    return {**spec, "deployments": [*written, *generated]}, skipped


def write_deployment_file(workspace: Path, spec: dict) -> Path:
    path = workspace / GENERATED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Written by `paperline deploy` from infra/prefect.yaml and projects/ (one deployment per project\n"
              "# config); edit those, not this file: the next deploy rewrites it.\n")
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=120))
    return path


def checkout_problem(directory: Path) -> str | None:
    """Why a deployment's recorded checkout cannot run the flow on this machine (one line), or None."""
    if not directory.is_dir():
        what = "does not exist on this machine"
    elif not (directory / "projects").is_dir():
        what = "holds no projects/ folder"
    else:
        return None
    return (f"the deployment's checkout {directory} {what}: a worker needs a paperline checkout at that path "
            "(`paperline deploy` records the folder it ran in; redeploy from a checkout the worker has), or give "
            "the deployment a git_clone pull step")


def _read_prefect_file(root: Path) -> dict:
    path = prefect_file(root)
    if not path.is_file():
        raise DeploymentError(f"no {path}; run from a paperline checkout (or set PAPERLINE_ROOT)")
    return yaml.safe_load(path.read_text()) or {}


def load_deployments(root: Path) -> list[dict]:
    """The deployments written in infra/prefect.yaml (without the generated ones: `deployment_file`)."""
    return _read_prefect_file(root).get("deployments") or []


def pool_of(deployment: dict) -> str:
    pool = deployment.get("work_pool") or {}
    return pool.get("name", "") if isinstance(pool, dict) else str(pool)


def select(deployments: list[dict], pools: dict[str, PoolSpec], pool: str | None) -> tuple[list[dict], list[PoolSpec]]:
    """The deployments to register (those of `pool`, or all) and the pools they need, each checked to be known."""
    chosen = [d for d in deployments if pool is None or pool_of(d) == pool]
    if not chosen:
        known = sorted({pool_of(d) for d in deployments})
        raise DeploymentError(f"no deployment in infra/prefect.yaml uses work pool '{pool}'; pools used: "
                              f"{', '.join(known)}")
    needed = []
    for name in dict.fromkeys(pool_of(d) for d in chosen):
        if name not in pools:
            raise DeploymentError(f"work pool '{name}' is used in infra/prefect.yaml but not described in "
                                  f"infra/pools/pools.yaml (its type and base job template)")
        needed.append(pools[name])
    return chosen, needed


def full_name(name: str) -> str:
    """`sbert-sts-gpu` -> `paperline-run/sbert-sts-gpu`; a name with a slash is already `<flow>/<deployment>`."""
    return name if "/" in name else f"{FLOW_NAME}/{name}"


def pick_for_pool(candidates: list[tuple[str, dict]], project: str, pool: str) -> str:
    """Among (deployment name, parameters) in a pool, the one for `project` (else the first): a pool name given
    to `paperline run --on` runs the project on one of the pool's deployments with the run's own parameters."""
    if not candidates:
        raise DeploymentError(f"'{pool}' is neither a deployment nor a work pool with a {FLOW_NAME} deployment; "
                              "`paperline deploy` registers the deployments")
    for name, parameters in candidates:
        if (parameters or {}).get("project_name") == project:
            return name
    return candidates[0][0]
