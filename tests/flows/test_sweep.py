"""`paperline sweep` end to end on a Dask LocalCluster (two worker processes on 127.0.0.1): two smoke trials of
sbert_sts as nested MLflow runs under one parent that holds the table, and only the best one registered. Then a
thread-runner sweep in the same workspace: a trial equal to an earlier one is a cache hit, a failing trial is
recorded and does not stop the other."""

from __future__ import annotations

import mlflow

MODEL = "sbert_sts-smoke"


def test_a_dask_sweep_tracks_every_trial_and_registers_only_the_best(shared_workspace):
    workspace = shared_workspace
    result = workspace.paperline("sweep", "sbert_sts", "--config", "smoke", "seed=0,1", "--runner", "dask",
                                 "--workers", "2", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "sweep of 2 trials on dask" in result.stdout and "<- best" in result.stdout

    client = workspace.client()
    experiment = client.get_experiment_by_name("sbert_sts")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("paperline.sweep") == "parent"]
    trials = sorted((r for r in runs if r.data.tags.get("paperline.sweep") == "trial"),
                    key=lambda r: int(r.data.tags["paperline.sweep.trial"]))
    assert len(trials) == 2 and len(runs) == 3
    for trial, seed in zip(trials, ("0", "1")):
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.info.status == "FINISHED" and trial.data.params["seed"] == seed
        assert 0 < trial.data.metrics["stsb_test_spearman"] <= 100

    mlflow.set_tracking_uri(workspace.tracking_uri)
    mlflow.set_experiment(experiment_id=experiment.experiment_id)  # load_table searches the active experiment
    table = mlflow.load_table("sweep/trials.json", run_ids=[parent.info.run_id])
    assert sorted(str(s) for s in table["seed"]) == ["0", "1"] and list(table["status"]) == ["finished", "finished"]
    assert set(table["run_id"]) == {t.info.run_id for t in trials}

    best = max(trials, key=lambda r: (r.data.metrics["stsb_test_spearman"], -int(r.data.tags["paperline.sweep.trial"])))
    (version,) = client.search_model_versions(f"name='{MODEL}'")
    assert version.run_id == best.info.run_id
    assert parent.data.tags["paperline.sweep.best_run_id"] == best.info.run_id
    assert "highest stsb_test_spearman" in parent.data.tags["paperline.sweep.reason"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == str(version.version)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/trials.json", "sweep/decision.md"} <= artifacts


def test_a_failed_trial_is_recorded_and_the_other_goes_on(shared_workspace):
    workspace = shared_workspace  # after the Dask sweep: its seed=0 trial is in the cache
    result = workspace.paperline("sweep", "sbert_sts", "--config", "smoke", "seed=0",
                                 "base_model=sentence-transformers/all-MiniLM-L6-v2,no-such-org/no-such-model",
                                 "--runner", "thread", "--workers", "1", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(1 failed)" in result.stdout and "(cached)" in result.stdout

    client = workspace.client()
    experiment = client.get_experiment_by_name("sbert_sts")
    parents = client.search_runs([experiment.experiment_id], "tags.`paperline.sweep` = 'parent'",
                                 order_by=["attributes.start_time DESC"])
    parent = parents[0]
    trials = {r.data.tags["paperline.sweep.trial"]: r for r in client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    assert trials["0"].info.status == "FINISHED" and trials["0"].data.tags["paperline.cache_hit"] == "True"
    assert trials["1"].info.status == "FAILED" and trials["1"].data.tags["paperline.status"] == "failed"
    assert "no-such-model" in trials["1"].data.tags["paperline.error"]
    assert parent.data.tags["paperline.sweep.best_run_id"] == trials["0"].info.run_id
    assert parent.data.tags["paperline.sweep.failed_trials"] == "1"
    # the best trial's model is registered: now, or by the Dask sweep already if seed=0 won there (same cache key,
    # then no second version of the same model)
    versions = client.search_model_versions(f"name='{MODEL}'")
    by_key = {v.tags["paperline.cache_key"]: v for v in versions}
    assert trials["0"].data.tags["paperline.cache_key"] in by_key and len(by_key) == len(versions)
