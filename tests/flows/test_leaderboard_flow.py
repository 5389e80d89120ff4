"""classical_baselines' smoke config through the real flow, then `paperline leaderboard` lists its champion:
printed, logged to MLflow as a table, and written as the Prefect table artifact `leaderboard-stsb`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from contract_check import check_contract
from repo_copy import BIN

READ_ARTIFACT = """
import json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
with get_client(sync_client=True) as client:
    found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["leaderboard-stsb"])),
                                  sort=ArtifactSort.CREATED_DESC, limit=1)
print(json.dumps({"type": found[0].type, "data": found[0].data} if found else {}))
"""


def test_classical_baselines_smoke_serves_sif_and_the_leaderboard_lists_it(workspace):
    import mlflow

    result = workspace.paperline("run", "classical_baselines", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    check_contract(workspace, "classical_baselines", result)
    assert "classical_baselines-smoke v1, alias champion (promoted)" in result.stdout

    # The served SIF model gives the embeddings the method computes from the same corpus rows (smoke: 500 pairs).
    mlflow.set_tracking_uri(workspace.tracking_uri)
    served = mlflow.pyfunc.load_model("models:/classical_baselines-smoke@champion")
    sentences = ["A plane is taking off.", "A man is playing a flute."]
    got = served.predict(sentences)
    sys.path.insert(0, str(workspace.root / "projects" / "classical_baselines"))
    try:
        import static_vectors as sv
    finally:
        sys.path.pop(0)
    import csv

    with open(workspace.root / "data" / "stsb" / "train.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[:500]
    texts = [t for r in rows for t in (r["sentence1"], r["sentence2"])]
    words, vectors = sv.load_glove_50d()
    encoder = sv.StaticEncoder(words, vectors, sv.sif_weights(words, sv.word_counts(texts), 1e-3))
    encoder.fit_pc(texts)
    assert got.shape == (2, 50)
    assert np.allclose(got, encoder.embed(sentences), atol=1e-5)

    # the smoke champion is scored on 100 rows per split: left out of the ranking, with the reason ...
    default = workspace.paperline("leaderboard")
    assert default.returncode == 0, default.stderr[-3000:]
    assert "classical_baselines-smoke v1 (evaluated on the first 100 rows, not the whole split" in default.stdout
    assert not [line for line in default.stdout.splitlines() if line.startswith("classical_baselines ")]
    # ... and listed, marked, on request
    board = workspace.paperline("leaderboard", "--include-capped")
    assert board.returncode == 0, board.stderr[-3000:]
    lines = board.stdout.splitlines()
    header = next(line for line in lines if line.startswith("project"))
    assert "stsb_test_spearman" in header and "encode ms/1k" in header and "data version" in header
    (row,) = [line for line in lines if "classical_baselines-smoke" in line]
    run = workspace.client().search_runs(
        [workspace.client().get_experiment_by_name("classical_baselines").experiment_id])[0]
    assert f"{run.data.metrics['stsb_test_spearman']:.2f}" in row
    assert "base_model=all-MiniLM-L6-v2" in row and run.data.tags["paperline.dataset_md5"] in row
    assert "(scored on the first 100 rows)" in row
    assert "Prefect artifact: leaderboard-stsb" in board.stdout

    # MLflow: one run per call in `paperline-leaderboard`, the table as a JSON artifact
    experiment = workspace.client().get_experiment_by_name("paperline-leaderboard")
    logged = max(workspace.client().search_runs([experiment.experiment_id]), key=lambda r: r.info.start_time)
    table = json.loads(Path(workspace.client().download_artifacts(logged.info.run_id, "leaderboard_stsb.json")).read_text())
    assert "classical_baselines-smoke" in json.dumps(table)
    # its artifacts live where every project's do (the workspace's artifact root), never in ./mlruns of the cwd
    location = experiment.artifact_location.removeprefix("file://")
    assert Path(location).is_relative_to(workspace.root / ".paperline"), location
    assert not (workspace.root / "mlruns").exists()

    read = subprocess.run([sys.executable, "-c", READ_ARTIFACT], env=workspace.env, capture_output=True, text=True,
                          timeout=120, check=True)
    artifact = json.loads(read.stdout)
    assert artifact["type"] == "table" and "classical_baselines-smoke" in json.dumps(artifact["data"])

    # no Prefect server named, and the workspace's own local one not running: the table is still printed and logged, the artifact skipped
    env = {k: v for k, v in workspace.env.items() if k != "PREFECT_API_URL"}
    quiet = subprocess.run([str(BIN / "paperline"), "leaderboard", "--include-capped"], cwd=workspace.root, env=env,
                           capture_output=True,
                           text=True, timeout=300, check=False)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "classical_baselines-smoke" in quiet.stdout and "Prefect artifact: skipped" in quiet.stdout
    assert len(workspace.client().search_runs([experiment.experiment_id])) == 3

    # a task name that does not exist is a usage error, one line
    wrong = workspace.paperline("leaderboard", "--task", "sts")
    assert wrong.returncode == 2 and "invalid choice: 'sts'" in wrong.stderr
