"""The distillation projects end to end through `paperline run`: teacher flow -> student flow, and Trans-Encoder.

Real Prefect, MLflow on SQLite, DVC and GX, as in test_run_flow.py; the assertions read what MLflow, the registry
and the lineage store hold afterwards.
"""

from __future__ import annotations

import hashlib

import mlflow

from paperline.ops.store.audit import AuditStore

STUDENT, TEACHER = "distilled_sentence_embedding-smoke", "cross_encoder_sts-smoke"
PAIRS = [["A plane is taking off.", "An air plane is taking off."], ["A man plays a flute.", "The market fell."]]


def _last_run(ws, experiment: str):
    client = ws.client()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              order_by=["attributes.start_time DESC"])
    return runs[0]


def test_the_student_flow_runs_its_teacher_first_and_records_the_teacher(workspace):
    result = workspace.paperline("run", "distilled_sentence_embedding", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{STUDENT} v1" in result.stdout
    client = workspace.client()
    # No teacher existed: the cross-encoder's own flow ran first and registered it.
    assert [str(v.version) for v in client.search_model_versions(f"name='{TEACHER}'")] == ["1"]
    teacher_run = _last_run(workspace, "cross_encoder_sts")
    assert teacher_run.data.tags["paperline.status"] == "registered"

    run = _last_run(workspace, "distilled_sentence_embedding")
    assert run.data.tags["paperline.upstream.teacher.model"] == TEACHER
    assert run.data.tags["paperline.upstream.teacher.version"] == "1"
    assert run.data.tags["paperline.upstream.teacher.run_id"] == teacher_run.info.run_id
    assert run.data.params["upstream.teacher.version"] == "1"
    assert run.data.params["upstream.teacher.alias"] == "challenger"
    assert {"stsb_test_spearman", "control_stsb_test_spearman", "teacher_stsb_test_spearman",
            "baseline_stsb_test_spearman", "test_gap_to_teacher_pct"} <= set(run.data.metrics)
    student = client.get_model_version_by_alias(STUDENT, "challenger")
    assert student.tags["paperline.upstream.teacher.version"] == "1"
    (lineage,) = AuditStore(workspace.store_url).lineage(mlflow_run_id=run.info.run_id)
    assert lineage.details["upstream"]["teacher"] == {
        "project": "cross_encoder_sts", "model": TEACHER, "version": "1", "alias": "challenger",
        "run_id": teacher_run.info.run_id, "cache_key": lineage.details["upstream"]["teacher"]["cache_key"]}
    assert lineage.details["upstream"]["teacher"]["cache_key"]

    # Both load as pyfuncs that take pairs and return one score each.
    mlflow.set_tracking_uri(workspace.tracking_uri)
    assert mlflow.pyfunc.load_model(f"models:/{TEACHER}@challenger").predict(PAIRS).shape == (2,)
    assert mlflow.pyfunc.load_model(f"models:/{STUDENT}@challenger").predict(PAIRS).shape == (2,)

    # Unchanged: cached, and the teacher is not trained again.
    again = workspace.paperline("run", "distilled_sentence_embedding", "--config", "smoke")
    assert again.returncode == 0 and "cached" in again.stdout, again.stderr[-3000:]
    assert len(client.search_model_versions(f"name='{TEACHER}'")) == 1

    # A new teacher version takes the alias: the student's cache key changes, it retrains and names v2.
    new_teacher = workspace.paperline("run", "cross_encoder_sts", "--config", "smoke", "seed=1")
    assert new_teacher.returncode == 0, new_teacher.stderr[-3000:]
    third = workspace.paperline("run", "distilled_sentence_embedding", "--config", "smoke")
    assert third.returncode == 0, third.stderr[-3000:]
    latest = _last_run(workspace, "distilled_sentence_embedding")
    assert latest.data.tags["paperline.cache_hit"] == "False"
    assert latest.data.tags["paperline.upstream.teacher.version"] == "2"


def test_a_teacher_that_never_gets_the_alias_stops_the_student_with_one_line(workspace):
    # The smoke cross-encoder never clears the policy's floor, so it is registered but never champion.
    result = workspace.paperline("run", "distilled_sentence_embedding", "--config", "smoke",
                                 "upstream.teacher.alias=champion")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("paperline: error:") and f"{TEACHER} still has no 'champion' version" in last
    assert "paperline promote" in last
    assert [m.name for m in workspace.client().search_registered_models()] == [TEACHER]  # no student registered


def test_trans_encoder_records_each_cycle_and_versions_its_pseudo_labels(workspace, tmp_path):
    result = workspace.paperline("run", "trans_encoder", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    client = workspace.client()
    run = _last_run(workspace, "trans_encoder")
    assert {"cycle0_bi_dev_spearman", "cycle1_bi_dev_spearman", "cycle1_cross_dev_spearman",
            "cycle1_cross_test_spearman", "best_cycle", "stsb_test_spearman"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/cycle1_bi_labels.tsv", "evaluation/cycle1_cross_labels.tsv"} <= artifacts
    for side in ("bi", "cross"):
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, tracking_uri=workspace.tracking_uri,
                                                    artifact_path=f"evaluation/cycle1_{side}_labels.tsv",
                                                    dst_path=str(tmp_path / side))
        with open(local, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == run.data.tags[f"trans_encoder.cycle1.{side}_labels.sha256"]
    mlflow.set_tracking_uri(workspace.tracking_uri)
    encoder = mlflow.sentence_transformers.load_model("models:/trans_encoder-smoke@champion")
    assert encoder.encode([p[0] for p in PAIRS]).shape == (2, 384)
