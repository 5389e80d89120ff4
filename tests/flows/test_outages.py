"""A service that goes away in the middle of `paperline run`, and a disk that fills while it writes.

Each test starts its own server on 127.0.0.1 and a free port (an MLflow server on a private SQLite store, a Prefect
server with a private home, a private PostgreSQL made with initdb), starts a smoke run that trains long
enough, kills the server by PID while the model trains, and checks what the user gets: the run ends within a
bounded time with one line naming the service and what to do, exit 1, nothing registered; once the service is
back, `paperline doctor` (or the next run) leaves no MLflow run RUNNING and no lineage row `running`.
The disk test mounts a small tmpfs where the workspace keeps its checkpoints (it needs root: it fails, never skips,
where it cannot mount). Every wait is bounded; every process a test starts is stopped by it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from repo_copy import BIN

from paperline.ops.store.audit import AuditStore

PAPERLINE = BIN / "paperline"
MODEL = "sbert_sts-smoke"
# Long enough to kill a server while it trains (first checkpoint at step 4), short enough for a CPU.
SLOW_SMOKE = ["train.stages.0.max_steps=16", "train.stages.0.checkpoint_every=4"]
# The bound each test allows from the kill to the run's exit: the client retries (about 30 s for MLflow, about
# 60 s for Prefect) plus the training left to do, on a loaded 2-core machine. Today's code took over 10 minutes.
END_WITHIN_S = 300


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        _kill_group(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _wait_until(check, seconds: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds * 2) + 1):
        if check():
            return
        if process is not None and process.poll() is not None:
            output = process.stderr.read()[-3000:] if process.stderr else ""
            pytest.fail(f"{what}: the process exited with {process.returncode}: {output}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {seconds:.0f} s")


def _start_run(workspace, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(PAPERLINE), "run", "sbert_sts", "--config", "smoke", *SLOW_SMOKE, *extra],
                            cwd=workspace.root, env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for_training(workspace, run: subprocess.Popen) -> None:
    runs = workspace.root / ".paperline" / "runs"
    _wait_until(lambda: any(runs.glob("**/checkpoint-*/trainer_state.json")), 420, "the run's first checkpoint", run)


def _finish(run: subprocess.Popen, seconds: float = END_WITHIN_S) -> tuple[str, float]:
    """The run's stderr once it exits, and how long it took; fails (and kills it) past `seconds`."""
    started = time.monotonic()
    try:
        _, stderr = run.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        _stop(run)
        pytest.fail(f"the run did not end within {seconds} s of the outage")
    return stderr, time.monotonic() - started


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-4000:]
    errors = [line for line in stderr.splitlines() if line.startswith("paperline: error:")]
    assert len(errors) == 1, stderr[-4000:]
    return errors[0]


def _kill_mid_training(workspace, server, what: str) -> str:
    """Start a run, kill `server` once the model trains, and return the run's one error line (exit 1)."""
    run = _start_run(workspace)
    _wait_for_training(workspace, run)
    server.kill()
    stderr, seconds = _finish(run)
    print(f"{what} killed while training: the run ended {seconds:.0f} s later")
    assert run.returncode == 1, stderr[-3000:]
    return _one_error_line(stderr)


# ---- MLflow ---------------------------------------------------------------------------------------------------


class LoopbackServer:
    """A server of this test on 127.0.0.1 and a free port, its files in `folder`: start() (each subclass's),
    kill() SIGKILLs its process group, start() again brings it back on the same port and files."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, _free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        if self.process is not None:
            _kill_group(self.process.pid)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    @classmethod
    def serving(cls, folder: Path):
        """The fixture's body: started, yielded, stopped whatever the test did."""
        folder.mkdir()
        server = cls(folder)
        server.start()
        yield server
        server.stop()


class MlflowServer(LoopbackServer):
    """`mlflow server` on a private SQLite store and artifact folder."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # it runs uvicorn by name
        with (self.folder / "server.log").open("a") as log:
            self.process = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                 "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_until(lambda: _answers(f"{self.url}/health"), 180, "mlflow server", self.process)


@pytest.fixture
def mlflow_server(tmp_path):
    yield from MlflowServer.serving(tmp_path / "mlflow")


def test_an_mlflow_server_killed_mid_run_ends_the_run_in_one_line_and_doctor_closes_it(make_workspace,
                                                                                         mlflow_server):
    workspace = make_workspace(MLFLOW_TRACKING_URI=mlflow_server.url)
    line = _kill_mid_training(workspace, mlflow_server, "MLflow")
    assert line == (f"paperline: error: the MLflow tracking server at {mlflow_server.url} stopped answering during "
                    "training; start it again and rerun; the run is closed by the next run or paperline doctor")
    (lineage,) = AuditStore(workspace.store_url).lineage(project="sbert_sts")
    assert lineage.status == "failed" and lineage.model_version is None  # closed already: the store answered

    mlflow_server.start()  # back: doctor closes the MLflow run the dead server could not be told about
    client = workspace.client()
    assert client.get_run(lineage.mlflow_run_id).info.status == "RUNNING"
    doctor = workspace.paperline("doctor", timeout=300)
    assert doctor.returncode == 0, doctor.stderr[-3000:]
    assert f"sbert_sts run {lineage.mlflow_run_id}: MLflow run closed as FAILED" in doctor.stdout
    closed = client.get_run(lineage.mlflow_run_id)
    assert closed.info.status == "FAILED" and "stopped answering during training" in closed.data.tags["paperline.error"]
    assert client.search_registered_models() == []  # nothing registered
    assert "nothing to repair" in workspace.paperline("doctor", timeout=300).stdout


# ---- a team's Prefect server (PREFECT_API_URL) ---------------------------------------------------------------


class PrefectServer(LoopbackServer):
    """`prefect server start` with a private PREFECT_HOME (its SQLite database)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(self.folder), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        with (self.folder / "server.log").open("a") as log:
            self.process = subprocess.Popen(
                [str(BIN / "python"), "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                 "--port", str(self.port)], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        # a fresh database's migrations took over 120 s on a loaded 2-core machine
        _wait_until(lambda: _answers(f"{self.url}/health"), 300, "prefect server", self.process)


@pytest.fixture
def prefect_server(tmp_path):
    yield from PrefectServer.serving(tmp_path / "prefect")


def _flow_run_state(api_url: str, flow_run_id: str) -> str:
    import json

    with urllib.request.urlopen(f"{api_url}/flow_runs/{flow_run_id}", timeout=30) as response:
        return json.loads(response.read())["state_type"]


def test_a_prefect_server_killed_mid_run_ends_the_run_in_one_line_and_doctor_closes_it(make_workspace,
                                                                                         prefect_server):
    workspace = make_workspace(PREFECT_API_URL=prefect_server.url)
    line = _kill_mid_training(workspace, prefect_server, "Prefect")
    assert line.startswith(f"paperline: error: the Prefect server at {prefect_server.url} (PREFECT_API_URL) stopped "
                           "answering during "), line
    assert line.endswith("; start it again and rerun; the run is closed by the next run or paperline doctor"), line
    store = AuditStore(workspace.store_url)
    (lineage,) = store.lineage(project="sbert_sts")
    assert lineage.status == "failed"  # closed by the run itself: the store and MLflow answered
    client = workspace.client()
    assert client.get_run(lineage.mlflow_run_id).info.status == "FAILED"
    # The kill is noticed at the run's next call to Prefect's API (task states travel as events): the last
    # report, after the registry moved. Whatever moved did so whole, and the lineage says so: a version exists
    # only with its `register` audit row, and the row of the run that registered it names it.
    versions = [str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")]
    registered = [e.new_version for e in store.alias_history(MODEL) if e.action == "register"]
    assert sorted(versions) == sorted(registered) and len(versions) <= 1, (versions, registered)
    assert lineage.model_version == (versions[0] if versions else None)

    prefect_server.start()  # back: doctor closes the flow run the dead server could not be told about
    assert _flow_run_state(prefect_server.url, lineage.flow_run_id) == "RUNNING"
    doctor = workspace.paperline("doctor", timeout=300)
    assert doctor.returncode == 0, doctor.stderr[-3000:]
    assert f"sbert_sts run {lineage.mlflow_run_id}: Prefect flow run {lineage.flow_run_id} closed as CRASHED" \
        in doctor.stdout, doctor.stdout
    assert _flow_run_state(prefect_server.url, lineage.flow_run_id) == "CRASHED"
    assert "nothing to repair" in workspace.paperline("doctor", timeout=300).stdout


# ---- the audit/lineage store on PostgreSQL --------------------------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL of this test only: initdb as user postgres in a temporary folder, 127.0.0.1 and a free port,
    trust auth; kill() SIGKILLs the postmaster's process group, start() brings it back on the same data."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="paperline-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(self.folder / "data"),
                        "-A", "trust", "-U", "postgres"], check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        log = (self.folder / "server.log").open("a")
        self.process = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(self.folder / "data"),
             "-p", str(self.port), "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            return subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                  capture_output=True, timeout=10).returncode == 0

        _wait_until(ready, 60, "private postgres", self.process)

    def kill(self) -> None:
        if self.process is not None:
            _kill_group(self.process.pid)  # runuser, the postmaster and its backends: one process group
            self.process.wait(timeout=30)
            _wait_until(lambda: not _listening(self.port), 30, "postgres to stop listening")

    def remove(self) -> None:
        if self.process is not None:
            _stop(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def private_postgres():
    server = PrivatePostgres()
    server.start()
    yield server
    server.remove()


def test_a_store_killed_mid_run_ends_the_run_in_one_line_and_doctor_closes_its_lineage(make_workspace,
                                                                                       private_postgres):
    workspace = make_workspace(PAPERLINE_STORE_URL=private_postgres.url)
    line = _kill_mid_training(workspace, private_postgres, "PostgreSQL")
    assert line == (f"paperline: error: the paperline store at {private_postgres.url} (PAPERLINE_STORE_URL) stopped "
                    "answering during registration; start it again and rerun; the run is closed by the next run or "
                    "paperline doctor")
    client = workspace.client()
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("sbert_sts").experiment_id])
    assert mlflow_run.info.status == "FAILED"  # the run closed it itself: MLflow answered
    assert [v for m in client.search_registered_models() for v in client.search_model_versions(f"name='{m.name}'")] \
        == []  # the version registration created was deleted when its audit row could not be written

    private_postgres.start()  # back: the lineage row the run could not close is closed by doctor
    store = AuditStore(private_postgres.url)
    assert [r.status for r in store.lineage(project="sbert_sts")] == ["running"]
    doctor = workspace.paperline("doctor", timeout=300)
    assert doctor.returncode == 0, doctor.stderr[-3000:]
    (lineage,) = store.lineage(project="sbert_sts")
    assert lineage.status == "failed" and "stopped answering during registration" in lineage.details["error"]
    store.close()


# ---- a full disk under the workspace --------------------------------------------------------------------------


@pytest.fixture
def small_checkpoint_disk(workspace):
    """A 400 MB tmpfs where the workspace keeps its checkpoints (.paperline/runs): one MiniLM checkpoint (~270 MB:
    weights and optimizer state) fits, the second does not. Unmounted at the end whatever happens."""
    runs = workspace.root / ".paperline" / "runs"
    runs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(runs)], capture_output=True,
                             text=True, timeout=30)
    if mounted.returncode != 0:  # never a skip: the test would then pass on a machine that cannot run it
        pytest.fail(f"cannot mount a tmpfs at {runs} (needs root): {mounted.stderr.strip()}")
    yield runs
    subprocess.run(["umount", "-l", str(runs)], capture_output=True, timeout=60)


def test_a_full_disk_while_a_checkpoint_is_written_is_one_line_and_the_partial_checkpoint_is_skipped(
        workspace, small_checkpoint_disk):
    runs = small_checkpoint_disk
    run = _start_run(workspace)
    stderr, _ = _finish(run, 600)
    assert run.returncode == 1, stderr[-3000:]
    line = _one_error_line(stderr)
    assert line.startswith(f"paperline: error: no space left on device writing {runs}"), line
    assert line.endswith(" free); free space and rerun"), line
    assert workspace.client().search_registered_models() == []
    (lineage,) = AuditStore(workspace.store_url).lineage(project="sbert_sts")
    assert lineage.status == "failed"
    (mlflow_run,) = workspace.client().search_runs([lineage and workspace.client().get_experiment_by_name(
        "sbert_sts").experiment_id])
    assert mlflow_run.info.status == "FAILED"
    complete = sorted(runs.glob("**/checkpoint-*/paperline-manifest.json"))
    partial = [c for c in runs.glob("**/*checkpoint-*") if c.is_dir() and not (c / "paperline-manifest.json").exists()]
    assert len(complete) == 1 and partial, "the disk should have filled during the second checkpoint"
    resumable_step = int(complete[0].parent.name.split("-")[-1])

    # Space again: the rerun resumes from the complete checkpoint, never from the partial one
    subprocess.run(["mount", "-o", "remount,size=2g", str(runs)], check=True, timeout=30)
    rerun = workspace.paperline("run", "sbert_sts", "--config", "smoke", *SLOW_SMOKE, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    client = workspace.client()
    (latest, _) = client.search_runs([client.get_experiment_by_name("sbert_sts").experiment_id],
                                     order_by=["attributes.start_time DESC"])
    resumed = [value for name, value in latest.data.metrics.items() if name.endswith("resumed_from_step")]
    assert resumed == [resumable_step], latest.data.metrics
