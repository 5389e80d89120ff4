"""`paperline run visually_grounded --config smoke` through the real flow: DVC pulls the captioned pictures and
STS-B, the GX gate opens every picture (`captioned_images`) and checks the sentence pairs (`scored_pairs`), the
four arms train, the recall and STS metrics, the arms table and the retrieval pictures reach MLflow, the served arm
is registered with its signature and input example, the leaderboard's image-text task lists it, and `mlflow models
serve` answers a caption and a base64 PNG with two embeddings of the same width in one space."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from contract_check import check_contract
from repo_copy import BIN

MODEL = "visually_grounded-smoke"


def _png_base64() -> str:
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (160, 160), "white")
    ImageDraw.Draw(picture).ellipse([30, 30, 130, 130], fill=(230, 190, 20))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_visually_grounded_smoke_runs_registers_and_serves_captions_and_pictures(workspace):
    import mlflow

    result = workspace.paperline("run", "visually_grounded", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{MODEL} v1, alias" in result.stdout, result.stdout
    assert "test_mean_recall" in result.stdout and "primary" in result.stdout, result.stdout
    check_contract(workspace, "visually_grounded", result)

    client = workspace.client()
    run = client.search_runs([client.get_experiment_by_name("visually_grounded").experiment_id])[0]
    metrics, tags = run.data.metrics, run.data.tags
    for arm in ("text_tower", "grounded", "grounded_sts"):
        for name in ("test_caption_to_image_recall_at_5", "test_image_to_caption_recall_at_10", "test_mean_recall",
                     "stsb_test_spearman", "sts12_16_avg_spearman"):
            assert f"{arm}_{name}" in metrics, f"{arm}_{name}"
    assert "sts_only_stsb_test_spearman" in metrics and "text_only_sts13_spearman" in metrics
    assert metrics["test_mean_recall"] == metrics["grounded_sts_test_mean_recall"]
    assert "STS-B train pairs" in tags["visually_grounded.suite_removed"]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "evaluation")]
    assert "evaluation/retrievals_grounded_sts_test.png" in artifacts, artifacts
    assert any(a.path == "arms.json" for a in client.list_artifacts(run.info.run_id)), "the arms table"
    (version,) = client.search_model_versions(f"name='{MODEL}'")
    assert client.get_run(version.run_id).data.metrics["test_mean_recall"] == pytest.approx(metrics["test_mean_recall"])

    # the policy's floor is on recall: the smoke run's few rows pass or fail it, and the line says which
    assert "floor:" in result.stdout and "test_mean_recall" in result.stdout

    uri = f"models:/{MODEL}/{version.version}"
    mlflow.set_tracking_uri(workspace.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(uri)
        local = np.asarray(model.predict([{"caption": "a yellow sun"}, {"image": _png_base64()}]), dtype=np.float32)
        schema = model.metadata.get_input_schema()
    finally:
        mlflow.set_tracking_uri(None)
    assert local.shape == (2, 384) and np.allclose(np.linalg.norm(local, axis=1), 1.0, atol=1e-4)
    assert "caption" in repr(schema) and "image" in repr(schema)

    served = _serve_and_predict(workspace, uri, {"inputs": [{"caption": "a yellow sun"}, {"image": _png_base64()}]})
    answer = np.asarray(served["predictions"], dtype=np.float32)
    assert answer.shape == (2, 384) and np.allclose(answer, local, atol=1e-4)

    board = workspace.paperline("leaderboard", "--task", "image-text-retrieval", "--include-capped")
    assert board.returncode == 0, board.stderr
    champion = client.get_registered_model(MODEL).aliases.get("champion")
    assert (MODEL in board.stdout) == (champion is not None), board.stdout


def _serve_and_predict(workspace, model_uri: str, payload: dict) -> dict:
    """`mlflow models serve` on a free local port (--env-manager local, 127.0.0.1), one POST, then stopped."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # the server runs `uvicorn` by name: the venv's bin must be on PATH, as in an activated environment
    env = {**workspace.env, "MLFLOW_TRACKING_URI": workspace.tracking_uri,
           "PATH": f"{BIN}{os.pathsep}{workspace.env.get('PATH', '')}"}
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)], cwd=workspace.root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"mlflow models serve exited: {server.stderr.read()[-3000:]}"
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 180 s"
                time.sleep(1)
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the scoring server runs in worker processes of its own
        except ProcessLookupError:  # it had exited already
            pass
        server.wait(timeout=30)


def test_a_corrupted_picture_stops_the_run_at_the_gate_in_one_line_and_nothing_trains(workspace):
    # the first train picture cut to half its bytes: replaced, not written into (pictures are hard-linked copies)
    listing = (workspace.root / "data" / "captioned_images" / "train.tsv").read_text().splitlines()
    image = listing[1].split("\t")[listing[0].split("\t").index("image")]
    picture = workspace.root / "data" / "captioned_images" / image
    damaged = picture.read_bytes()[: picture.stat().st_size // 2]
    picture.unlink()
    picture.write_bytes(damaged)
    subprocess.run([str(BIN / "dvc"), "add", "-q", "data"], cwd=workspace.root, env=workspace.env, check=True)

    result = workspace.paperline("run", "visually_grounded", "--config", "smoke")
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("paperline: error:")]
    assert error.startswith("paperline: error: data gate failed: captioned_images/train:"), error
    assert error.count("captioned_images/") == 1 and image in error and "does not decode" in error, error
    assert "Traceback" not in result.stderr
    assert workspace.client().search_registered_models() == []  # nothing trained, nothing registered
