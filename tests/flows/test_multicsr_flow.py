"""multicsr end to end through `paperline run --config smoke`: SmolLM2 generates triplets for 6 SNLI premises in the
method's `generate`; the platform gates the file under its own kind, logs it as an MLflow dataset input digested by
its sha256 and keys training on that sha256. The four arms train and are scored in one run; an unchanged rerun is a
cache hit that neither generates nor trains; a generated file that breaks the gate stops the run with exit code 3
and registers nothing; a changed generation retrains."""

from __future__ import annotations

import hashlib
from pathlib import Path

from contract_check import check_contract

MODEL = "multicsr-smoke"


def _latest_run(client, experiment_id: str):
    return max(client.search_runs([experiment_id]), key=lambda r: r.info.start_time)


def test_smoke_run_generates_gates_and_scores_every_arm_then_hits_the_cache(workspace):
    result = workspace.paperline("run", "multicsr", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{MODEL} v1" in result.stdout and "data gate: passed" in result.stdout
    assert "generating triplets" in result.stderr  # the generation's progress bar
    check_contract(workspace, "multicsr", result)

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
    # the generated file is a dataset version of its own: an input of the run, its digest the file's sha256
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    generated = inputs["multicsr_generated:train"]
    assert generated.dataset.digest == sha[:36] and {t.key: t.value for t in generated.tags}["sha256"] == sha
    assert run.data.tags["paperline.generated_gate_passed"] == "True"
    (triplets,) = (workspace.root / ".paperline" / "runs" / "multicsr-generated").glob("*/triplets.tsv")
    assert hashlib.sha256(triplets.read_bytes()).hexdigest() == sha

    again = workspace.paperline("run", "multicsr", "--config", "smoke")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cached" in again.stdout and "generating triplets" not in again.stderr
    latest = _latest_run(client, run.info.experiment_id)
    assert latest.data.tags["paperline.cache_hit"] == "True"
    assert latest.data.tags["multicsr.generated.sha256"] == sha

    # a generated file that breaks its kind's gate (a rating out of [-1, 5]): exit 3, the file named, nothing new
    original = triplets.read_text()
    header, first, *rest = original.splitlines(keepends=True)
    cells = first.rstrip("\n").split("\t")
    triplets.write_text(header + "\t".join([*cells[:3], "9", cells[4]]) + "\n" + "".join(rest))
    refused = workspace.paperline("run", "multicsr", "--config", "smoke")
    assert refused.returncode == 3, refused.stderr[-3000:]
    assert "generated data" in refused.stdout + refused.stderr and "entailment_score" in refused.stdout + refused.stderr
    assert _latest_run(client, run.info.experiment_id).data.tags["paperline.generated_gate_passed"] == "False"
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1

    # a changed generation (one entailment written differently) is a new dataset version: every arm retrains
    triplets.write_text(header + "\t".join([cells[0], cells[1] + " indeed", *cells[2:]]) + "\n" + "".join(rest))
    retrained = workspace.paperline("run", "multicsr", "--config", "smoke")
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    assert f"{MODEL} v2" in retrained.stdout
    latest = _latest_run(client, run.info.experiment_id)
    assert latest.data.tags["paperline.cache_hit"] == "False"
    assert latest.data.tags["multicsr.generated.sha256"] == hashlib.sha256(triplets.read_bytes()).hexdigest() != sha
