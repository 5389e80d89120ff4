"""Register the deployments and their work pools, submit a run to a deployment, and the deployments' pull step.

`paperline deploy [--pool NAME]` and `paperline run <project> --on <deployment-or-pool>` load these functions
through the `paperline.flows` entry points `deploy` and `submit` (the library never imports Prefect; see the
layering contracts in pyproject.toml). Work pools are created from the base job templates in infra/pools/
(`pools.yaml` says which pool has which worker type and template). The deployments are infra/prefect.yaml's
plus one per project config (`paperline.ops.services.deployment_specs.deployment_file`), written to the workspace
and registered by Prefect's own `prefect deploy --prefect-file <workspace>/prefect.generated.yaml`, which runs the
build step and records the pull step, `enter_checkout` below.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from paperline.core.settings import Settings
from paperline.ops.services.deployment_specs import (
    FLOW_NAME,
    RUN_ENTRYPOINT,
    DeploymentError,
    PoolSpec,
    checkout_problem,
    deployment_file,
    full_name,
    load_pools,
    pick_for_pool,
    projects_pool,
    select,
    write_deployment_file,
)
from paperline.ops.production.triggers import DEFAULT_RETRAIN_CONFIG, add_triggers
from paperline.project.discovery import discover


def enter_checkout(directory: str) -> dict[str, str]:
    """The deployments' pull step (`paperline_flows.deployments.enter_checkout: {directory: ...}` in
    infra/prefect.yaml): run the flow in the checkout recorded at deploy time. A folder that is missing on the
    worker's machine, or is no paperline checkout, fails the flow run with one line saying so, instead of a
    flow that cannot be imported or a run in the wrong folder."""
    path = Path(directory).expanduser()
    problem = checkout_problem(path)
    if problem:
        _fail_flow_run(problem)
        raise DeploymentError(problem)
    os.chdir(path)
    return {"directory": str(path)}


def _fail_flow_run(message: str) -> None:
    """Set the flow run this pull step prepares to Failed with `message`: otherwise the engine exits 1 and the
    worker marks it Crashed with "infrastructure exited with non-zero status code" (the reason only in the logs)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Failed

    if not flow_run.id:  # called outside a worker's flow run (a test, a shell): raising is all there is to do
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Failed(message=message), force=True)


def ensure_pool(client, spec: PoolSpec, update: bool = False) -> str:
    """Create the work pool from its shipped template if it is missing (or `update` its template); returns what
    was done. An existing pool is left as it is by default: an administrator may have tuned it on the server."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    template = spec.base_job_template()
    if template is None:
        from prefect.workers.process import ProcessWorker

        if spec.type != "process":
            raise DeploymentError(f"work pool '{spec.name}' of type {spec.type} needs a base_job_template in "
                                  "infra/pools/pools.yaml")
        template = ProcessWorker.get_default_base_job_template()
    try:
        existing = client.read_work_pool(spec.name)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=spec.name, type=spec.type, base_job_template=template,
                                               concurrency_limit=spec.concurrency_limit))
        return "created"
    if existing.type != spec.type:
        raise DeploymentError(f"work pool '{spec.name}' exists with type {existing.type}, not {spec.type}; "
                              "delete it (`prefect work-pool delete`) or rename the pool in infra/")
    if update:
        client.update_work_pool(spec.name, WorkPoolUpdate(base_job_template=template,
                                                          concurrency_limit=spec.concurrency_limit))
        return "updated"
    return "exists"


def keep_schedule_state(client, deployments: list[dict], echo=print) -> list[dict]:
    """The deployments with each schedule's `active` taken from the server where that deployment and schedule
    already exist: a schedule someone switched on (or off) in the dashboard stays so across `paperline deploy`.

    `prefect deploy` sends every schedule with the `active` written in the YAML, so without this a redeploy
    switches a schedule turned on in the dashboard off again (Prefect issues #14973, #17538). The YAML's `active`
    is the state of a *new* schedule. A schedule is the same one when its `slug` matches (infra/prefect.yaml gives
    every schedule one), else when its cron, interval or rrule and time zone do.
    """
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    names = [d["name"] for d in deployments if d.get("schedules")]
    if not names:
        return deployments
    server = {d.name: d for d in client.read_deployments(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names)))}
    out = []
    for deployment in deployments:
        existing = server.get(deployment["name"])
        if existing is None or not deployment.get("schedules"):
            out.append(deployment)
            continue
        schedules = []
        for written in deployment["schedules"]:
            match = next((s for s in existing.schedules if _same_schedule(written, s)), None)
            if match is not None and match.active != written.get("active", True):
                echo(f"deployment {deployment['name']}: schedule {written.get('slug') or _schedule_text(written)} "
                     f"kept {'on' if match.active else 'off'}, as set on the server")
                written = {**written, "active": match.active}
            schedules.append(written)
        out.append({**deployment, "schedules": schedules})
    return out


def _schedule_text(written: dict) -> str:
    return str(written.get("cron") or written.get("interval") or written.get("rrule"))


def _same_schedule(written: dict, on_server) -> bool:
    if written.get("slug") and on_server.slug:
        return written["slug"] == on_server.slug
    schedule = on_server.schedule
    timezone = getattr(schedule, "timezone", None) or "UTC"
    if (written.get("timezone") or "UTC") != timezone:
        return False
    if "cron" in written:
        return getattr(schedule, "cron", None) == written["cron"]
    if "interval" in written:
        interval = getattr(schedule, "interval", None)
        return interval is not None and interval.total_seconds() == float(written["interval"])
    return getattr(schedule, "rrule", None) == written.get("rrule")


def deploy(root: Path, pool: str | None = None, update_pools: bool = False, echo=print,
           retrain_config: str = DEFAULT_RETRAIN_CONFIG) -> list[str]:
    """Create the pools the chosen deployments need, then `prefect deploy` them; returns their full names.
    Idempotent: a second deploy of the same checkout leaves the server as the first left it, schedules switched
    on or off in the dashboard included (`keep_schedule_state`); triggers are replaced, not added twice."""
    from prefect.client.orchestration import get_client

    settings = Settings.from_env(root)
    known = load_pools(root)
    projects = discover(settings.projects_dir)
    spec, skipped = deployment_file(root, projects, known)
    for name in skipped:
        echo(f"project {name}: not deployed, its project.yaml does not validate (see `paperline ls`)")
    spec = add_triggers(spec, projects, settings.projects_dir, projects_pool(known), retrain_config)
    chosen, pools = select(spec["deployments"], known, pool)
    with get_client(sync_client=True) as client:
        for needed in pools:
            done = ensure_pool(client, needed, update_pools)
            echo(f"work pool {needed.name} ({needed.type}): {done}")
        kept = {d["name"]: d for d in keep_schedule_state(client, chosen, echo)}
    spec = {**spec, "deployments": [kept.get(d["name"], d) for d in spec["deployments"]]}
    path = write_deployment_file(settings.workspace, spec)
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(path)]
    command += ["--all"] if pool is None else [arg for d in chosen for arg in ("--name", d["name"])]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False,
                            env={**os.environ, "PAPERLINE_ROOT": str(root)})
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise DeploymentError("prefect deploy failed:\n" + "\n".join(tail))
    # another flow's deployment (promote-model) is "<its flow>/<name>": shown by its name alone
    return [full_name(d["name"]) if d.get("entrypoint") == RUN_ENTRYPOINT else d["name"] for d in chosen]


def submit(target: str, project: str, config: str, overrides: list[str] | None = None,
           job_variables: dict | None = None) -> dict[str, str]:
    """Create a flow run of `target` (a deployment, or a work pool: one of its paperline-run deployments, the
    project's if it has one) with this run's parameters, without waiting; returns its id, deployment and link.
    The pool's workers pick it up; the run's own summary is in the Prefect UI and MLflow."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.urls import url_for

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(full_name(target))
            name = full_name(target)
        except ObjectNotFound:
            if "/" in target:
                raise DeploymentError(f"no deployment '{target}'; `paperline deploy` registers one per project "
                                      "config and infra/prefect.yaml's, `prefect deployment ls` lists them") from None
            found = client.read_deployments(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[target])))
            name = full_name(pick_for_pool([(d.name, d.parameters) for d in found], project, target))
            deployment = client.read_deployment_by_name(name)
    parameters = {"project_name": project, "config_name": config, "overrides": list(overrides or [])}
    run = run_deployment(name, parameters=parameters, timeout=0, as_subflow=False,
                         job_variables=job_variables or None)
    return {"deployment": name, "work_pool": deployment.work_pool_name or "", "flow_run_id": str(run.id),
            "flow_run_name": run.name, "url": url_for("flow-run", obj_id=run.id) or ""}
