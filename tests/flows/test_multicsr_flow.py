"""multicsr end to end through `paperline run --config smoke`: SmolLM2 generates triplets for 6 SNLI premises,
the generated file passes the data gate under its own kind, the four arms train and are scored in one run, the
generated file's sha256 is recorded on the run and the file attached, and an unchanged rerun is a cache hit that
neither generates nor trains again."""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL = "multicsr-smoke"


def test_smoke_run_generates_gates_and_scores_every_arm_then_hits_the_cache(workspace):
    result = workspace.paperline("run", "multicsr", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{MODEL} v1" in result.stdout and "data gate: passed" in result.stdout
    assert "generating triplets" in result.stderr  # the generation's progress bar

    client = workspace.client()
    (run,) = client.search_runs([client.get_experiment_by_name("multicsr").experiment_id])
    metrics = run.data.metrics
    arms = ("human", "generated", "curated", "guided")
    assert {f"{arm}_stsb_{split}_spearman" for arm in arms for split in ("dev", "test")} <= set(metrics)
    assert metrics["stsb_test_spearman"] == metrics["guided_stsb_test_spearman"]  # the headline arm, unprefixed
    assert metrics["generated_rows"] == 6 and metrics["human_global_step"] == metrics["guided_global_step"] == 2

    sha = run.data.tags["multicsr.generated.sha256"]
    local = client.download_artifacts(run.info.run_id, "evaluation/triplets.tsv")
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == sha

    again = workspace.paperline("run", "multicsr", "--config", "smoke")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cached" in again.stdout and "generating triplets" not in again.stderr
    latest = max(client.search_runs([run.info.experiment_id]), key=lambda r: r.info.start_time)
    assert latest.data.tags["paperline.cache_hit"] == "True"
    assert latest.data.tags["multicsr.generated.sha256"] == sha
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
