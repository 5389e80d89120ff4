"""Deployment triggers from lineage: a change starts the work it affects, not a clock.

`paperline deploy` gives each project's *retrain* deployment (its `default` config's, or the config named by
`paperline deploy --retrain-config`) Prefect deployment triggers, written into the generated prefect.yaml:

- **new data**: `paperline.data.version-passed` for any dataset the project's card reads (the data watcher
  emits it once a new data version changed that dataset and the gate passed it);
- **new upstream champion**: a champion move (`paperline.model.promoted`, `.approved`, `.rolled-back`) of any
  model the config consumes through `upstream:` (the DSE student follows `cross_encoder_sts@champion`).

Training is cached, so a trigger on unchanged inputs costs a cache hit, and every run deployment gets a
concurrency limit of one run at a time with collision strategy ENQUEUE: a burst of events (a data version that
changes three datasets a project reads) queues the extra runs, which then hit the cache, instead of starting
several trainings of one project at once or dropping a run that a later event needed (CANCEL_NEW would). A
deployment written in infra/prefect.yaml with its own `triggers:` or `concurrency_limit:` keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from paperline.ops.registry.upstream import model_name
from paperline.ops.services.deployment_specs import RUN_ENTRYPOINT, DeploymentError, pool_of
from paperline.ops.services.event_names import CHAMPION_MOVED, DATA_VERSION_PASSED, dataset_id, model_id
from paperline.project.discovery import Project

DEFAULT_RETRAIN_CONFIG = "default"
RUN_CONCURRENCY = {"limit": 1, "collision_strategy": "ENQUEUE"}


def retrain_triggers(projects_dir: Path, project: Project, config: str) -> list[dict]:
    """The triggers of one project config's deployment: its card's datasets, its config's upstream models."""
    parameters = {"project_name": project.name, "config_name": config}
    triggers = []
    datasets = sorted({need.dataset for need in (project.card.data if project.card else ())})
    if datasets:
        triggers.append({
            "type": "event", "enabled": True, "name": f"{project.name}: new data ({', '.join(datasets)})",
            "match": {"prefect.resource.id": [dataset_id(d) for d in datasets]},
            "expect": [DATA_VERSION_PASSED], "parameters": parameters})
    cfg = project.load_config(config)
    upstream = sorted({model_name(projects_dir, use) for use in cfg.upstream.values()})
    if upstream:
        triggers.append({
            "type": "event", "enabled": True, "name": f"{project.name}: new upstream champion ({', '.join(upstream)})",
            "match": {"prefect.resource.id": [model_id(m) for m in upstream]},
            "expect": list(CHAMPION_MOVED), "parameters": parameters})
    return triggers


def add_triggers(spec: dict, projects: Mapping[str, Project], projects_dir: Path, pool: str,
                 retrain_config: str = DEFAULT_RETRAIN_CONFIG) -> dict:
    """`spec` (a prefect.yaml as data) with a concurrency limit on its run deployments, and retrain triggers on
    those of `pool` (the projects pool, infra/pools/pools.yaml) that run `retrain_config`: one retrain per
    change, not one per pool (a GPU deployment that should retrain instead is given `triggers:` by hand)."""
    if not any(retrain_config in project.configs for project in projects.values()):
        raise DeploymentError(f"no project has a config '{retrain_config}' (--retrain-config names the config a "
                              "trigger retrains with; most projects have default and smoke)")
    out = []
    for deployment in spec.get("deployments") or []:
        deployment = dict(deployment)
        parameters = deployment.get("parameters") or {}
        project = projects.get(parameters.get("project_name", ""))
        if deployment.get("entrypoint") == RUN_ENTRYPOINT:
            deployment.setdefault("concurrency_limit", dict(RUN_CONCURRENCY))
            if (project is not None and project.card is not None and "triggers" not in deployment
                    and parameters.get("config_name") == retrain_config and pool_of(deployment) == pool):
                deployment["triggers"] = retrain_triggers(projects_dir, project, retrain_config)
        out.append(deployment)
    return {**spec, "deployments": out}
