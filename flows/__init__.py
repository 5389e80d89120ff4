"""Prefect flows: orchestration above the library (paperline never imports this package).

This folder is the package `paperline_flows` (setup.py maps it). One file per flow, each reading like its
pipeline diagram over the shared steps of `pipeline.py`:

    run_project.py   paperline-run: one project's run (`paperline run`, the deployments)
    sweep.py         paperline-sweep: one gate, the trials through a task runner, the best one registered
    promotion.py     paperline-promote / paperline-rollback: an alias moved by hand, from the dashboard
    leaderboard.py   paperline-leaderboard: the leaderboard as a Prefect table artifact

and what the flows share: `pipeline.py` (the steps), `tasks.py` (the Prefect tasks the steps call and how each is
cached), `dashboard.py` (flow-run names, tags, artifact keys), `results.py` (cached results as checked JSON),
`task_runners.py` (thread, Dask, Ray), `deployments.py` (`paperline deploy`, `paperline run --on`). The CLI finds
flows through the `paperline.flows` entry points; deployments name them by module path.
"""
