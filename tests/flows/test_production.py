"""After promotion, end to end on real data: batch embeddings of the WordNet glosses under the champion, a search
index that follows the champion blue/green behind @serving, `paperline search`, and drift on real shifts."""

import pytest

MODEL = "sbert_sts-smoke"
ROWS = "1500"  # the first 1,500 glosses of the test split: seconds to embed, enough for the recall check


@pytest.fixture(scope="module")
def two_versions(shared_workspace):
    """Two registered versions of the smoke SBERT (seeds 0 and 1), version 1 the champion."""
    for seed in ("0", "1"):
        run = shared_workspace.paperline("run", "sbert_sts", "--config", "smoke", f"seed={seed}")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    promote = shared_workspace.paperline("promote", MODEL, "1", "--force", "--reason", "first champion")
    assert promote.returncode == 0 or "already the champion" in promote.stderr, promote.stdout + promote.stderr
    return shared_workspace


def test_encode_then_search_and_the_index_follows_the_champion_only_after_its_recall_check(two_versions):
    ws = two_versions
    first = ws.paperline("encode", f"{MODEL}@champion", "--dataset", "definitions:test", "--limit", ROWS)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"encoded definitions:test with {MODEL} v1 (@champion) (openvino): {ROWS} rows" in first.stdout
    assert "index sbert_sts-smoke-definitions-test v1" in first.stdout and "passed" in first.stdout
    assert "sbert_sts-smoke-definitions-test@serving: v- -> v1" in first.stdout
    # the vectors are a versioned artifact of the encode's MLflow run, manifest and chunks
    client = ws.client()
    (encoded,) = client.search_runs([client.get_experiment_by_name("paperline-embeddings").experiment_id],
                                    filter_string=f"tags.`paperline.embeddings.model` = '{MODEL}' and "
                                                  "tags.`paperline.embeddings.model_version` = '1'",
                                    order_by=["attributes.start_time DESC"], max_results=1)
    stored = {f.path for f in client.list_artifacts(encoded.info.run_id, "vectors")}
    stored |= {f.path for f in client.list_artifacts(encoded.info.run_id, "vectors/chunks")}
    assert {"vectors/manifest.json", "vectors/chunks/00000.npy", "vectors/chunks/00000.tsv"} <= stored, stored

    found = ws.paperline("search", "sbert_sts-smoke-definitions-test@serving", "a large animal with a trunk", "-k", "3")
    assert found.returncode == 0, found.stdout + found.stderr
    assert len([line for line in found.stdout.splitlines() if line.strip()[:1] in "123"]) >= 3, found.stdout
    # a query model that is not the index's own version is refused in one line, nothing searched
    refused = ws.paperline("search", "sbert_sts-smoke-definitions-test@serving", "anything",
                           "--model", f"{MODEL}/2")
    assert refused.returncode != 0 and "never compared" in refused.stderr and "Traceback" not in refused.stderr

    again = ws.paperline("encode", f"{MODEL}@champion", "--dataset", "definitions:test", "--limit", ROWS)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1500 rows, already complete" in again.stdout and "@serving already names v1" in again.stdout

    # the champion moves: a re-embed under v2, a new index version, @serving moves after its check
    moved = ws.paperline("promote", MODEL, "2", "--force", "--reason", "a new champion")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    second = ws.paperline("encode", f"{MODEL}@champion", "--dataset", "definitions:test", "--limit", ROWS)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"{MODEL} v2 (@champion)" in second.stdout
    assert "sbert_sts-smoke-definitions-test@serving: v1 -> v2" in second.stdout
    client = ws.client()
    serving = client.get_model_version_by_alias("sbert_sts-smoke-definitions-test", "serving")
    assert str(serving.version) == "2" and serving.tags["paperline.index.model_version"] == "2"


def test_an_index_that_fails_its_recall_check_is_registered_but_never_served(two_versions):
    ws = two_versions
    before = ws.client().get_registered_model("sbert_sts-smoke-definitions-test").aliases.get("serving")
    # an unreachable bar (recall above 1) stands for an index too coarse for its corpus
    failed = ws.paperline("encode", f"{MODEL}/1", "--dataset", "definitions:test", "--limit", "800",
                          "--min-recall", "1.01")
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert "FAILED" in failed.stdout and "stays on" in failed.stdout
    after = ws.client().get_registered_model("sbert_sts-smoke-definitions-test").aliases.get("serving")
    assert after == before


def test_drift_flags_dialogue_turns_and_glosses_against_stsb_and_not_stsb_dev_against_test(two_versions):
    ws = two_versions
    scores = {}
    for current, drifted in (("stsb:test", False), ("dialogues:test", True), ("definitions:test", True)):
        checked = ws.paperline("monitor", f"{MODEL}@champion", "--reference", "stsb:dev", "--current", current,
                               "--max-rows", "600")
        assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
        assert (": DRIFT" in checked.stdout) is drifted, checked.stdout
        scores[current] = checked.stdout
    again = ws.paperline("monitor", f"{MODEL}@champion", "--reference", "stsb:dev", "--current", "stsb:test",
                         "--max-rows", "600")
    assert "history:" in again.stdout  # the second check of one key shows the metric's history
    client = ws.client()
    experiment = client.get_experiment_by_name("paperline-monitoring")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4 and all("drift_report.html" in [a.path for a in client.list_artifacts(r.info.run_id)]
                                  for r in runs)
