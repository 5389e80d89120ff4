"""`paperline ls`, `new`, `run` (here or `--on` a deployment), `deploy` and `sweep`."""

from __future__ import annotations

import os
import sys

from paperline.cli.common import (
    connect_prefect,
    load_flow,
    print_table,
    stop_on_interrupt,
    workspace_settings,
)
from paperline.core.errors import PaperlineError
from paperline.ops.runs.summary import exit_code
from paperline.ops.services import outages


def cmd_ls(args) -> int:
    """Every project with its card; one that breaks the method contract is listed as broken, with why."""
    from paperline.project.discovery import discover

    rows, broken = [], []
    for p in discover(workspace_settings().projects_dir).values():
        card = p.card
        paper = (f"arXiv {card.paper.arxiv}" if card.paper.arxiv else card.paper.venue or "") if card else ""
        status = "BROKEN" if p.problems else card.status
        rows.append((p.name, card.title if card else "-", paper, status, ", ".join(p.configs)))
        broken += [f"{p.name}: {problem}" for problem in p.problems]
    print_table(["project", "title", "paper", "status", "configs"], rows)
    if broken:
        print("\nbroken projects (`paperline run` refuses them):")
        print("\n".join(f"  {line}" for line in broken))
    return 0


def cmd_new(args) -> int:
    from paperline.project.scaffold import new_project

    folder = new_project(workspace_settings().projects_dir, args.name, args.source)
    print(f"wrote {folder}: it passes the method contract; try it with `paperline run {args.name} --config smoke`,\n"
          f"then edit method.py (the method), project.yaml (the card) and configs/")
    return 0


def cmd_run(args) -> int:
    settings = workspace_settings()
    from paperline.ops.runs.preflight import preflight

    # Everything a user can get wrong is checked before Prefect starts, so it costs a second, not a server.
    checked = preflight(settings, args.project, args.config, args.overrides)
    connect_prefect(settings)
    if args.on:  # a worker of the deployment's pool runs it; this only submits (run_deployment) and says where
        return submit(args)
    run_project = load_flow("run_project")
    stop_on_interrupt()
    with outages.during():  # a Prefect server that stops answering fails Prefect's own calls, outside any step
        state = run_project(args.project, args.config, args.overrides, return_state=True)
    outcome = state.result(raise_on_failure=False)  # a RunSummary, or the exception that ended the flow
    if isinstance(outcome, Exception):  # a lost service or a full disk the flow met outside its steps
        outcome = outages.translate(outcome) or outcome
    if isinstance(outcome, PaperlineError):
        raise outcome
    if state.is_failed():
        print(f"paperline: error: {state.message or 'the flow failed'}", file=sys.stderr)
        return exit_code(True, outcome)
    print("\n".join(outcome.lines(checked.project.card.primary_metric.name)))
    return 0


def submit(args) -> int:
    """`paperline run ... --on DEPLOYMENT_OR_POOL`: create the flow run on the Prefect server and return."""
    submitted = load_flow("submit")(args.on, args.project, args.config, args.overrides)
    print(f"{args.project} [{args.config}]: submitted to {submitted['deployment']} (work pool "
          f"{submitted['work_pool'] or '-'}); a worker of that pool runs it (`prefect worker start --pool "
          f"{submitted['work_pool'] or 'NAME'}`)")
    print(f"  Prefect flow run: {submitted['url'] or submitted['flow_run_id']}")
    return 0


def cmd_deploy(args) -> int:
    """Create the work pools the deployments need (from infra/pools/) and register the deployments: one per project
    config plus infra/prefect.yaml's own."""
    settings = workspace_settings()
    connect_prefect(settings)
    names = load_flow("deploy")(settings.root, args.pool, args.update_pools, retrain_config=args.retrain_config)
    print(f"deployed {len(names)}: " + ", ".join(names))
    print("run one with `paperline run <project> --on <deployment-or-pool>` once a worker polls its pool")
    return 0


def cmd_sweep(args) -> int:
    """Trials of a `key=a,b,c` grid through a Prefect task runner; only the best is registered."""
    settings = workspace_settings()
    from paperline.ops.runs import sweep_grid as grid_ops
    from paperline.ops.runs.preflight import preflight

    grid = grid_ops.parse_grid(args.overrides)
    spec = grid_ops.parse_runner(args.runner)
    trials = grid_ops.trials(grid)
    preflight(settings, args.project, args.config, [])
    for trial in trials:  # every trial's config, before Prefect starts
        preflight(settings, args.project, args.config, grid_ops.overrides(trial))
    connect_prefect(settings)
    workers = args.workers or min(len(trials), os.cpu_count() or 1)
    sweep = load_flow("sweep")
    stop_on_interrupt()
    state = sweep(args.project, args.config, grid, [], str(spec), workers, args.gpus_per_trial, return_state=True)
    outcome = state.result(raise_on_failure=False)  # a SweepSummary, or the exception that ended the flow
    if isinstance(outcome, PaperlineError):
        raise outcome
    if isinstance(outcome, grid_ops.SweepSummary):
        print("\n".join(outcome.lines()))
    if state.is_failed():
        print(f"paperline: error: {state.message or 'the sweep failed'}", file=sys.stderr)
    return exit_code(state.is_failed(), outcome)
