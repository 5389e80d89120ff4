"""`paperline run` end to end on the smoke config: real Prefect, MLflow, DVC and GX.

One run of the real thing is worth many mocks: these tests assert on what MLflow, the registry and the audit
store hold afterwards, not on what the code meant to do.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import numpy as np
import pytest

from repo_copy import BIN

from paperline.ops.store.audit import AuditStore

MODEL = "sbert_sts-smoke"
MD5 = "f1bd840915efd71f73cab4431f31101f.dir"


def _run(ws, *extra):
    started = time.perf_counter()
    result = ws.paperline("run", "sbert_sts", "--config", "smoke", *extra)
    return result, time.perf_counter() - started


def _runs(ws):
    client = ws.client()
    experiment = client.get_experiment_by_name("sbert_sts")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_run_registers_promotes_and_caches(workspace):
    first, first_seconds = _run(workspace)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "registered" in first.stdout and f"{MODEL} v1, alias champion (promoted)" in first.stdout
    assert "Traceback" not in first.stderr  # e.g. Prefect failing to hash the registry into a cache key
    # Quiet by default: paperline's one training bar, none of the libraries' bars or printed loss dicts ...
    assert "training: 100%" in first.stderr, first.stderr[-3000:]
    for noise in ("Loading weights", "Writing model shards", "Computing widget examples", "{'loss'"):
        assert noise not in first.stdout + first.stderr, noise
    # ... and a summary that says how long it took, where the run is, and how to load the model.
    assert "sbert_sts [smoke]: registered in " in first.stdout
    assert f"load it: models:/{MODEL}/1 or models:/{MODEL}@champion" in first.stdout

    client = workspace.client()
    (run,) = _runs(workspace)
    assert run.info.status == "FINISHED"
    assert f"MLflow run: http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" \
        in first.stdout
    assert {"stsb_dev_spearman", "stsb_test_spearman", "baseline_stsb_test_spearman"} <= set(run.data.metrics)
    assert 0 < run.data.metrics["stsb_test_spearman"] <= 100
    assert run.data.tags["paperline.dataset_md5"] == MD5
    assert len(run.data.tags["paperline.git_commit"]) >= 40
    assert run.data.tags["paperline.gate_passed"] == "True"
    assert run.data.params["train.stages.0.loss"] == "cosent"
    inputs = {i.dataset.name.split("@")[0].split(":")[0]: i.dataset for i in run.inputs.dataset_inputs}
    assert {name[:8] for name in inputs} == {"stsb", "sts12_16"}, inputs  # the evaluation suite is data it reads
    assert {dataset.digest for dataset in inputs.values()} == {MD5}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "data_gate")}
    assert {"data_gate/data_gate.md", "data_gate/data_gate.html", "data_gate/data_gate.json"} <= artifacts

    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1" and version.run_id == run.info.run_id
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "1"
    store = AuditStore(workspace.store_url)
    history = store.alias_history(MODEL)
    assert [(e.alias, e.new_version) for e in history] == [("challenger", "1"), ("champion", "1")]
    assert history[1].actor == "policy" and history[1].gate_passed is True
    assert history[1].flow_run_id == run.data.tags["paperline.flow_run_id"]
    (lineage,) = store.lineage(mlflow_run_id=run.info.run_id)
    assert (lineage.status, lineage.model_version, lineage.dataset_md5) == ("registered", "1", MD5)

    # The champion loads the way a serving job loads it.
    import mlflow

    mlflow.set_tracking_uri(workspace.tracking_uri)
    champion = mlflow.sentence_transformers.load_model(f"models:/{MODEL}@champion")
    assert champion.encode(["a plane is taking off", "a man plays a flute"]).shape == (2, 384)

    printed = workspace.paperline("models", "history", MODEL)
    assert printed.returncode == 0 and "auto-promote" in printed.stdout and "policy" in printed.stdout

    # An unchanged rerun, in a new process: training and evaluation come from the cache.
    second, second_seconds = _run(workspace)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "cached" in second.stdout
    assert re.search(r"Task run 'data gate-\w+' - Finished in state Cached", second.stderr), second.stderr[-3000:]
    latest = _runs(workspace)[-1]
    assert latest.data.tags["paperline.cache_hit"] == "True"
    assert latest.data.metrics["stsb_test_spearman"] == run.data.metrics["stsb_test_spearman"]
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1  # the same model is not registered twice
    assert second_seconds < first_seconds

    # A change to the project's code invalidates the cache: training runs again, a new version is registered.
    method = workspace.root / "projects" / "sbert_sts" / "method.py"
    method.write_text(method.read_text() + "\n# a change to the method\n")
    third = workspace.paperline("--verbose", "run", "sbert_sts", "--config", "smoke")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "'loss'" in third.stdout + third.stderr  # --verbose: the trainer's own output is back
    assert _runs(workspace)[-1].data.tags["paperline.cache_hit"] == "False"
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 2

    # v2 was compared with the champion (v1) scored in the same run, on the same rows, before the policy decided.
    assert "compared: champion: none yet" in first.stdout
    assert "compared: champion v1 on the same 40 rows: stsb_test_spearman" in third.stdout, third.stdout
    assert re.search(r"compared: suite sts13_spearman: [\d.]+ vs champion [\d.]+ \(40 rows, 597 trained-on",
                     third.stdout)
    assert re.search(r"policy: margin: (passed|failed) \(stsb_test_spearman [\d.]+ vs champion v1 [\d.]+ on the same "
                     r"rows: [+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\] \(95% paired bootstrap, 1000 resamples of 40 rows\)",
                     third.stdout), third.stdout
    compared = _runs(workspace)[-1]
    assert compared.data.tags["paperline.compare.champion_version"] == "1"
    assert {"champion_stsb_test_spearman", "delta_stsb_test_spearman_low", "champion_sts12_16_avg_spearman",
            "compare.sts12_spearman"} <= set(compared.data.metrics)
    assert compared.data.metrics["champion_stsb_test_spearman"] == pytest.approx(
        run.data.metrics["stsb_test_spearman"], abs=1e-6)  # v1's number, measured again on the same rows
    v2 = client.get_model_version(MODEL, "2")
    assert v2.tags["paperline.compare.champion_version"] == "1" and "paperline.compare.interval" in v2.tags
    assert v2.description.startswith(f"# {MODEL} v2") and "## STS 2012-2016 suite" in v2.description
    gate_report = client.download_artifacts(compared.info.run_id, "data_gate/data_gate.md")
    assert "sts12_16/test: 4759 pairs are also in what this config trains on (stsb:train)" in open(gate_report).read()
    trend = workspace.paperline("models", "history", MODEL)
    assert "metric trend (stsb_test_spearman" in trend.stdout and "vs v1: " in trend.stdout, trend.stdout


def test_corrupted_data_version_fails_the_gate_and_registers_nothing(workspace):
    dev = workspace.root / "data" / "stsb" / "dev.tsv"
    lines = dev.read_text().splitlines()
    fields = lines[1].split("\t")
    fields[4], fields[5] = "9.5", ""  # a score out of range and an empty sentence
    lines[1] = "\t".join(fields)
    dev.write_text("\n".join(lines) + "\n")
    # What used to pass: a train split cut to 10 rows (the card's floor is 5,000) and a million-character sentence.
    train = workspace.root / "data" / "stsb" / "train.tsv"
    train.write_text("\n".join(train.read_text().splitlines()[:11]) + "\n")
    test = workspace.root / "data" / "stsb" / "test.tsv"
    rows = test.read_text().splitlines()
    fields = rows[1].split("\t")
    fields[5] = "word " * 200_000
    test.write_text("\n".join([rows[0], "\t".join(fields), *rows[2:]]) + "\n")
    subprocess.run([str(BIN / "dvc"), "add", "-q", "data"],
                   cwd=workspace.root, env=workspace.env, check=True)
    result, _ = _run(workspace)
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert "data gate failed" in result.stderr
    assert "stsb/dev" in result.stderr and "score" in result.stderr
    assert "stsb/train: expect_table_row_count_to_be_between: row count outside [5000," in result.stderr
    assert "stsb/test: expect_column_value_lengths_to_be_between(sentence1)" in result.stderr
    client = workspace.client()
    assert client.search_registered_models() == []
    (run,) = _runs(workspace)
    assert run.info.status == "FAILED" and run.data.tags["paperline.status"] == "gate-failed"
    assert run.data.tags["paperline.dataset_md5"] != MD5
    (lineage,) = AuditStore(workspace.store_url).lineage(project="sbert_sts")
    assert lineage.status == "gate-failed" and lineage.model_version is None


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["run", "no_such_project"], {}, 2, "unknown project 'no_such_project'; known projects:"),
        (["run", "sbert_sts", "train.stages.0.lr=1"], {}, 2, "unknown key 'train.stages.0.lr'"),
        (["run", "sbert_sts", "seed=many"], {}, 2, "'seed': Input should be a valid integer"),
        (["run", "sbert_sts", "--config", "../sbert_sts/configs/smoke"], {}, 2, "takes a config name, not a path"),
        (["export", f"{MODEL}@champion", "projects"], {}, 2, "exists already (a folder); pass --force"),
        (["export", f"{MODEL}@champion", "data.dvc/out"], {}, 2, "is not a writable folder"),
        (["run", "sbert_sts", "--config", "smoke"], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, 1,
         "MLflow at http://127.0.0.1:9 is unreachable"),
        # a bare postgresql:// means psycopg 3 to SQLAlchemy (and so to MLflow), which is not installed
        (["run", "sbert_sts", "--config", "smoke"],
         {"MLFLOW_TRACKING_URI": "postgresql://postgres@127.0.0.1:5432/postgres"}, 2,
         "needs the database driver 'psycopg', which is not installed; write postgresql+psycopg2://"),
        (["models", "ls"], {"MLFLOW_TRACKING_URI": "postgresql+psycopg2://postgres@127.0.0.1:5432/no_such_db"}, 2,
         'database "no_such_db" does not exist'),
        (["run", "sbert_sts", "--config", "smoke"], {"PREFECT_API_URL": "http://127.0.0.1:9/api"}, 1,
         "the Prefect API at http://127.0.0.1:9/api (PREFECT_API_URL) does not answer"),
        (["rollback", MODEL, "--reason", "x"], {}, 2, f"there is no registered model '{MODEL}'"),
        (["models", "history", "no_such_model"], {}, 2, "there is no registered model 'no_such_model'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(workspace, args, env, code, message):
    workspace.env.update(env)
    started = time.perf_counter()
    result = workspace.paperline(*args)
    assert time.perf_counter() - started < 60  # refused in preflight, not after minutes of retries
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paperline: error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.postgres
def test_a_config_with_a_python_tag_is_refused_and_runs_nothing(workspace):
    marker = workspace.root / "tag-was-executed"
    evil = workspace.root / "projects" / "sbert_sts" / "configs" / "evil.yaml"
    evil.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    result = workspace.paperline("run", "sbert_sts", "--config", "evil")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "evil.yaml is not valid YAML: could not determine a constructor for the tag" in line
    assert "(line 1, column 7)" in line and "configs hold plain data" in line
    assert not marker.exists()


@pytest.mark.postgres
def test_run_with_mlflow_and_the_store_on_postgresql(make_workspace, new_postgres_database):
    url = new_postgres_database()
    # MLflow reads a bare postgresql:// as psycopg 3 under SQLAlchemy 2.1; psycopg2 is what is installed.
    ws = make_workspace(MLFLOW_TRACKING_URI=url.replace("postgresql://", "postgresql+psycopg2://"),
                        PAPERLINE_STORE_URL=url)
    result = ws.paperline("run", "sbert_sts", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(ws.client().get_model_version_by_alias(MODEL, "champion").version) == "1"
    store = AuditStore(url)
    assert [e.alias for e in store.alias_history(MODEL)] == ["challenger", "champion"]
    assert store.lineage(project="sbert_sts")[0].status == "registered"
    store.close()


def test_a_corrupted_checkpoint_stops_the_run_with_one_line_and_registers_nothing(workspace):
    from paperline.ops.cache.keys import cache_key
    from paperline.project.discovery import get_project

    project = get_project(workspace.root / "projects", "sbert_sts")
    key = cache_key(project, project.load_config("smoke"), MD5)
    checkpoint = workspace.root / ".paperline" / "runs" / key[:16] / "stage0-sts" / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
    (checkpoint / "model.safetensors").write_bytes(b"\x00" * 64)  # bytes changed after the save completed:
    (checkpoint / "paperline-manifest.json").write_text(  # its manifest recorded other ones
        '{"sha256": {"model.safetensors": "' + "0" * 64 + '"}}')
    result, _ = _run(workspace)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("paperline: error: checkpoint") and "is corrupted" in last and "delete" in last
    assert workspace.client().search_registered_models() == []
    (lineage,) = AuditStore(workspace.store_url).lineage(project="sbert_sts")
    assert lineage.status == "failed" and "corrupted" in lineage.details["error"]


def test_a_training_free_project_runs_the_same_flow_and_serves_as_pyfunc(workspace):
    """token_prepending has no train step: `prepare` builds the model; gate, tracking and registry are the same."""
    import mlflow

    result = workspace.paperline("run", "token_prepending", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "token_prepending-smoke v1, alias champion (promoted)" in result.stdout
    mlflow.set_tracking_uri(workspace.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/token_prepending-smoke@champion")
    embeddings = model.predict(["A plane is taking off.", "A man is playing a flute."])
    assert embeddings.shape == (2, 576)
    run = workspace.client().search_runs([workspace.client().get_experiment_by_name("token_prepending").experiment_id])[0]
    assert "stsb_test_spearman" in run.data.metrics
    assert any(a.path.endswith(".png") for a in workspace.client().list_artifacts(run.info.run_id, "evaluation"))

    # `mlflow models serve` serves the registered champion: the REST answer is the same embeddings
    served = _serve_and_predict(workspace, "models:/token_prepending-smoke@champion",
                                {"inputs": ["A plane is taking off.", "A man is playing a flute."]})
    assert np.allclose(np.asarray(served["predictions"], dtype=np.float32), embeddings, atol=1e-4)


def _serve_and_predict(workspace, model_uri: str, payload: dict) -> dict:
    """Start `mlflow models serve` on a free local port (no new environment: --env-manager local), POST once."""
    import json
    import os
    import socket
    import urllib.error
    import urllib.request

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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_stop_a_run_cleanly_and_keep_its_checkpoints(workspace, signum):
    """Either signal ends the run at once with one line, the MLflow run closed, nothing registered."""
    process = subprocess.Popen(
        [str(BIN / "paperline"), "run", "sbert_sts", "--config", "smoke", "train.stages.0.max_steps=2000"],
        cwd=workspace.root, env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a shell starts background jobs (CI's, say) with SIGINT ignored, and children inherit it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    runs = workspace.root / ".paperline" / "runs"
    deadline = time.monotonic() + 300
    while not list(runs.glob("**/checkpoint-*/trainer_state.json")):  # training is under way
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it trained"
        time.sleep(0.5)
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{signal.Signals(signum).name} did not stop the run within 30 s")
    assert process.returncode == 130, stderr[-2000:]
    assert "paperline: interrupted; rerun the same command to resume" in stderr
    assert list(runs.glob("**/checkpoint-*/trainer_state.json"))  # what the rerun resumes from
    assert workspace.client().search_registered_models() == []
    (run,) = _runs(workspace)
    assert run.info.status == "FAILED"  # not left "running" in the MLflow UI
    assert run.data.tags["paperline.status"] == "interrupted", AuditStore(workspace.store_url).lineage(project="sbert_sts")[0].details
    (lineage,) = AuditStore(workspace.store_url).lineage(project="sbert_sts")
    assert lineage.status == "interrupted" and lineage.model_version is None


def test_a_sigkilled_run_is_closed_by_doctor_and_a_rerun_resumes(workspace):
    """SIGKILL runs no cleanup: the MLflow run stays RUNNING and the lineage says `running` until the next start
    (or `paperline doctor`) finds the run's lock free and closes it."""
    process = subprocess.Popen(
        [str(BIN / "paperline"), "run", "sbert_sts", "--config", "smoke", "train.stages.0.max_steps=2000"],
        cwd=workspace.root, env=workspace.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = workspace.root / ".paperline" / "runs"
    deadline = time.monotonic() + 300
    while not list(runs.glob("**/checkpoint-*/trainer_state.json")):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it trained"
        time.sleep(0.5)
    process.kill()
    process.wait(timeout=30)
    (run,) = _runs(workspace)
    assert run.info.status == "RUNNING"  # what a kill leaves behind
    store = AuditStore(workspace.store_url)
    assert [r.status for r in store.lineage(project="sbert_sts")] == ["running"]
    doctor = workspace.paperline("doctor")
    assert doctor.returncode == 0 and f"sbert_sts run {run.info.run_id}: MLflow run closed as FAILED" in doctor.stdout
    assert workspace.client().get_run(run.info.run_id).info.status == "FAILED"
    assert [r.status for r in store.lineage(project="sbert_sts")] == ["interrupted"]
    assert "nothing to repair" in workspace.paperline("doctor").stdout


def test_two_concurrent_runs_of_one_unchanged_project_register_one_version(workspace):
    """The second waits on the first's cache-key lock, then finds its cached results and registered version."""
    command = [str(BIN / "paperline"), "run", "sbert_sts", "--config", "smoke"]
    first, second = (subprocess.Popen(command, cwd=workspace.root, env=workspace.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for _ in range(2))
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [err[-2000:] for _, err in outputs]
    versions = workspace.client().search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]
    statuses = sorted(r.status for r in AuditStore(workspace.store_url).lineage(project="sbert_sts"))
    assert statuses == ["cached", "registered"]
