"""Deployments and work pools as data: what `infra/prefect.yaml` deploys and which pool each one needs.

Pure reading (no Prefect import: the library stays below the flows); `paperline_flows.deployments` talks to the
Prefect API with it. `infra/pools/pools.yaml` names each work pool the deployments use, its worker type and the
base job template shipped beside it (none: the worker type's default, as for the `process` pool).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from paperline.core.errors import PaperlineError

FLOW_NAME = "paperline-run"  # the run flow's name (@flow(name=...)): deployments are "paperline-run/<name>"


class DeploymentError(PaperlineError):
    """A deployment or work pool that cannot be found or registered; the message says what to do."""


@dataclass(frozen=True)
class PoolSpec:
    name: str
    type: str
    template: Path | None  # a base job template (JSON); None: the worker type's default

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
        pools[name] = PoolSpec(name, entry["type"], folder / template if template else None)
    return pools


def load_deployments(root: Path) -> list[dict]:
    path = prefect_file(root)
    if not path.is_file():
        raise DeploymentError(f"no {path}; run from a paperline checkout (or set PAPERLINE_ROOT)")
    return (yaml.safe_load(path.read_text()) or {}).get("deployments") or []


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
                              "`paperline deploy` registers infra/prefect.yaml")
    for name, parameters in candidates:
        if (parameters or {}).get("project_name") == project:
            return name
    return candidates[0][0]
