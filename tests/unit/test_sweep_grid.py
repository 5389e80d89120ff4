"""Sweep grids, runner specs, the best trial and the sweep table; deployments and pools as data (no services)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from repo_copy import REPO

from paperline.ops.services import deployment_specs as deployments
from paperline.ops.runs.sweep_grid import (
    SweepError,
    TrialResult,
    best_trial,
    decision_markdown,
    decision_reason,
    overrides,
    parse_grid,
    parse_runner,
    sweep_table,
    trials,
    varying,
)


def test_a_grid_is_the_cartesian_product_of_its_axes():
    grid = parse_grid(["seed=0,1", "train.stages.0.loss=cosent,cosine", "evaluate.max_rows=40"])
    assert grid == {"seed": ["0", "1"], "train.stages.0.loss": ["cosent", "cosine"], "evaluate.max_rows": ["40"]}
    combos = trials(grid)
    assert len(combos) == 4 and combos[0] == {"seed": "0", "train.stages.0.loss": "cosent", "evaluate.max_rows": "40"}
    assert combos[1]["train.stages.0.loss"] == "cosine" and combos[2]["seed"] == "1"  # first axis slowest
    assert overrides(combos[3]) == ["seed=1", "train.stages.0.loss=cosine", "evaluate.max_rows=40"]
    assert varying(grid) == ["seed", "train.stages.0.loss"]  # a one-value axis is a plain override


@pytest.mark.parametrize("args, message", [
    (["seed"], "not key=a,b,c"), (["=1,2"], "not key=a,b,c"), (["seed=0,,1"], "empty value"),
    (["seed=0,0"], "repeats a value"), (["seed=0", "seed=1"], "given twice"), ([], "at least one axis"),
])
def test_a_malformed_axis_is_one_clear_config_error(args, message):
    with pytest.raises(SweepError, match=message):
        parse_grid(args)


def test_runner_specs():
    assert (parse_runner("thread").kind, parse_runner("thread").address) == ("thread", None)
    assert parse_runner("dask:tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    assert str(parse_runner("ray:ray://head:10001")) == "ray:ray://head:10001"
    for bad, message in [("spark", "unknown runner"), ("dask:", "empty address"), ("thread:x", "no address")]:
        with pytest.raises(SweepError, match=message):
            parse_runner(bad)


def _results():
    return [TrialResult(0, {"seed": "0"}, "r0", metrics={"m": 80.0}),
            TrialResult(1, {"seed": "1"}, "r1", metrics={"m": 82.5}),
            TrialResult(2, {"seed": "2"}, "r2", status="failed", error="CUDA out of memory\ntraceback"),
            TrialResult(3, {"seed": "3"}, "r3", metrics={"m": math.nan})]


def test_the_best_trial_follows_the_cards_direction_and_skips_failed_and_nan_trials():
    results = _results()
    assert best_trial(results, "m", greater_is_better=True).index == 1
    assert best_trial(results, "m", greater_is_better=False).index == 0
    results[2].metrics = {"m": 99.0}  # a failed trial never wins, whatever it logged before failing
    assert best_trial(results, "m", greater_is_better=True).index == 1
    tie = [TrialResult(0, {}, "a", metrics={"m": 1.0}), TrialResult(1, {}, "b", metrics={"m": 1.0})]
    assert best_trial(tie, "m", True).index == 0
    assert best_trial([results[2]], "m", True) is None


def test_the_sweep_table_and_the_decision_name_every_trial():
    results = _results()
    best = best_trial(results, "m", True)
    table = sweep_table(results, ["seed"], "m")
    assert table["trial"] == [0, 1, 2, 3] and table["status"][2] == "failed" and table["m"][2] is None
    assert table["seed"] == ["0", "1", "2", "3"] and "out of memory" in table["error"][2]
    assert {len(column) for column in table.values()} == {4}
    json.dumps(table)  # what mlflow.log_table and Prefect's table artifact take
    reason = decision_reason(best, results, "m", True)
    assert "trial 1" in reason and "highest m" in reason and "1 failed" in reason
    markdown = decision_markdown(results, ["seed"], "m", True, best)
    assert "| 1 **best** | 1 | 82.5000 |" in markdown and "failed: CUDA out of memory" in markdown
    assert "nothing registered" in decision_reason(None, results[2:3], "m", True)


def test_every_deployment_names_a_described_pool_and_the_templates_expose_the_gpu_variables():
    pools = deployments.load_pools(REPO)
    chosen, needed = deployments.select(deployments.load_deployments(REPO), pools, None)
    assert {p.name for p in needed} == {"cpu", "cpu-docker", "gpu-docker", "gpu-k8s"}
    # the installed package's flows (module paths): the run flow, and operations flows such as promote-model
    assert all(d["entrypoint"].startswith("paperline_flows.") for d in chosen)
    assert all(d["entrypoint"] == deployments.RUN_ENTRYPOINT for d in chosen if "project_name" in d.get("parameters", {}))
    for name in ("gpu-docker", "gpu-k8s"):
        schema = pools[name].base_job_template()["variables"]["properties"]
        assert schema["gpu_count"]["type"] == "integer" and schema["gpu_count"]["minimum"] == 0
        assert {"image", "env", "shm_size"} <= set(schema)
    assert {"node_selector", "tolerations", "credentials_secret"} <= set(
        pools["gpu-k8s"].base_job_template()["variables"]["properties"])
    # a GPU device request fails to start on a host without the NVIDIA toolkit, even for 0 GPUs: none on cpu-docker
    cpu_docker = pools["cpu-docker"].base_job_template()
    assert "device_requests" not in cpu_docker["job_configuration"]["container_create_kwargs"]
    assert "gpu_count" not in cpu_docker["variables"]["properties"]
    with pytest.raises(deployments.DeploymentError, match="no deployment .* uses work pool 'nope'"):
        deployments.select(deployments.load_deployments(REPO), pools, "nope")


def test_a_target_is_a_deployment_or_a_pool():
    assert deployments.full_name("sbert-sts") == "paperline-run/sbert-sts"
    assert deployments.full_name("other-flow/x") == "other-flow/x"
    candidates = [("a", {"project_name": "matryoshka_2d"}), ("b", {"project_name": "sbert_sts"})]
    assert deployments.pick_for_pool(candidates, "sbert_sts", "cpu") == "b"
    assert deployments.pick_for_pool(candidates, "token_prepending", "cpu") == "a"
    with pytest.raises(deployments.DeploymentError, match="neither a deployment nor a work pool"):
        deployments.pick_for_pool([], "sbert_sts", "gpu")


def test_the_pull_step_does_not_depend_on_a_variable_at_run_time():
    spec = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
    (step,) = spec["pull"]
    directory = step["paperline_flows.deployments.enter_checkout"]["directory"]
    assert "$" not in directory  # recorded at deploy time by the build step, not read on the worker


def test_the_runner_spec_picks_prefects_task_runner():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from paperline_flows.task_runners import make_task_runner

    assert isinstance(make_task_runner(parse_runner("thread"), 3), ThreadPoolTaskRunner)
    local = make_task_runner(parse_runner("dask"), 2)
    assert isinstance(local, DaskTaskRunner)
    assert local.cluster_kwargs["n_workers"] == 2 and local.cluster_kwargs["host"] == "127.0.0.1"
    assert make_task_runner(parse_runner("dask:tcp://127.0.0.1:8786"), 2).address == "tcp://127.0.0.1:8786"
    try:
        import prefect_ray  # noqa: F401  (optional: the ray extra)
    except ImportError:
        with pytest.raises(SweepError, match=r"pip install .*\[ray\]"):
            make_task_runner(parse_runner("ray"), 2)
