"""The Prefect task runners a sweep fans its trials out through: Prefect's thread pool, Dask, or Ray.

paperline schedules nothing itself: a sweep's trials are Prefect tasks, and where they run is the runner's
business. GPUs per trial are asked for in each engine's own way (`gpu_options`).
"""

from __future__ import annotations

from contextlib import nullcontext

from paperline.ops.runs.sweep_grid import RunnerSpec, SweepError


def make_task_runner(spec: RunnerSpec, workers: int):
    """The Prefect task runner for a runner spec. Dask without an address: a LocalCluster of `workers` worker
    processes (one thread each, so two trainings never share a process) on 127.0.0.1, no dashboard. Ray without an
    address: a local Ray instance (`ray.init()`)."""
    if spec.kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if spec.kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise SweepError("the dask runner needs prefect-dask: pip install -c constraints.txt "
                             "-e '.[dask]'") from None
        if spec.address:
            return DaskTaskRunner(address=spec.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "host": "127.0.0.1", "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise SweepError("the ray runner needs prefect-ray: pip install -c constraints.txt -e '.[ray]'") from None
    return RayTaskRunner(address=spec.address) if spec.address else RayTaskRunner()


def gpu_options(spec: RunnerSpec, gpus: float):
    """The runner's own way to ask for GPUs for the trials submitted inside this context: Dask resources
    (`dask.annotate(resources={"GPU": n})`: the workers must be started with `--resources GPU=N`) and Ray's
    `remote_options(num_gpus=n)` (Ray also sets CUDA_VISIBLE_DEVICES per trial); the thread runner has no such
    option (all trials see every GPU of the machine)."""
    if not gpus or spec.kind == "thread":
        return nullcontext()
    if spec.kind == "dask":
        import dask

        return dask.annotate(resources={"GPU": gpus})
    from prefect_ray.context import remote_options

    return remote_options(num_gpus=gpus)
