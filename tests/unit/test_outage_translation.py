"""paperline.ops.services.outages: each library's way of saying "the service is gone" or "the disk is full" becomes
one line; anything else is left alone. The end-to-end kills are in tests/flows/test_outages.py."""

from __future__ import annotations

import errno
import socket
import subprocess

import pytest

from paperline.ml.checkpoints import CheckpointError
from paperline.ops.services import outages
from paperline.ops.store.audit import AuditStore, StoreError


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def workspace_env(tmp_path, monkeypatch):
    (tmp_path / "projects").mkdir()
    (tmp_path / "data.dvc").write_text("")
    monkeypatch.setenv("PAPERLINE_ROOT", str(tmp_path))
    for name in ("MLFLOW_TRACKING_URI", "PAPERLINE_STORE_URL", "PREFECT_API_URL", "PAPERLINE_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_enospc_names_the_path_and_the_space_left(workspace_env):
    target = workspace_env / "model.safetensors"
    error = OSError(errno.ENOSPC, "No space left on device", str(target))
    translated = outages.translate(error, "training")
    assert isinstance(translated, outages.DiskFull)
    assert str(translated).startswith(f"no space left on device writing {target} (")
    assert str(translated).endswith(" free); free space and rerun")


def test_a_library_that_loses_the_errno_still_reads_as_a_full_disk(workspace_env):
    # safetensors' Rust writer and torch's zip writer say it in their own words, inside a chain
    for message in ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left '
                    'on device" })',):
        try:
            try:
                raise RuntimeError(message)
            except RuntimeError as inner:
                raise ValueError("the trainer's own wrapper") from inner
        except ValueError as error:
            translated = outages.translate(error, "training")
        assert isinstance(translated, outages.DiskFull), message
        assert str(translated).startswith(f"no space left on device writing {workspace_env / '.paperline'}")


def test_an_mlflow_call_refused_names_the_server_and_stops_retrying(workspace_env, monkeypatch):
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    error = MlflowException("API request to http://127.0.0.1:5999/api/2.0/mlflow/runs/log-batch failed with "
                            "exception HTTPConnectionPool(host='127.0.0.1', port=5999): Max retries exceeded with "
                            "url: /api/2.0/mlflow/runs/log-batch (Caused by NewConnectionError('Failed to establish "
                            "a new connection: [Errno 111] Connection refused'))")
    translated = outages.translate(error, "training")
    assert isinstance(translated, outages.ServiceOutage) and translated.service == outages.MLFLOW
    assert str(translated) == ("the MLflow tracking server at http://127.0.0.1:5999 stopped answering during "
                               "training; start it again and rerun; the run is closed by the next run or paperline "
                               "doctor")
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"  # the run's closing calls fail at once


def test_a_store_that_refuses_connections_names_the_store(workspace_env, monkeypatch):
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/paperline"
    monkeypatch.setenv("PAPERLINE_STORE_URL", url)
    with pytest.raises(StoreError) as raised:
        AuditStore(url).check()
    translated = outages.translate(raised.value, "registration")
    assert isinstance(translated, outages.ServiceOutage) and translated.service == outages.STORE
    assert str(translated) == (f"the paperline store at {url} (PAPERLINE_STORE_URL) stopped answering during "
                               "registration; start it again and rerun; the run is closed by the next run or "
                               "paperline doctor")


def test_a_team_prefect_server_that_refuses_connections_names_the_variable(workspace_env, monkeypatch):
    import httpx

    api = f"http://127.0.0.1:{_free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", api)
    with pytest.raises(httpx.ConnectError) as raised:
        httpx.get(f"{api}/health", timeout=5)
    translated = outages.translate(raised.value, "training")
    assert isinstance(translated, outages.ServiceOutage) and translated.service == outages.PREFECT
    assert str(translated) == (f"the Prefect server at {api} (PREFECT_API_URL) stopped answering during training; "
                               "start it again and rerun; the run is closed by the next run or paperline doctor")


def test_other_errors_are_left_alone(workspace_env):
    assert outages.translate(ValueError("a bug keeps its traceback"), "training") is None
    assert outages.translate(CheckpointError("checkpoint x is corrupted; delete x"), "training") is None
    with pytest.raises(ValueError):
        with outages.during("training"):
            raise ValueError("not an outage")


def test_tolerate_skips_only_the_service_that_is_gone(workspace_env, monkeypatch):
    monkeypatch.setenv("PAPERLINE_STORE_URL", f"postgresql://postgres@127.0.0.1:{_free_port()}/paperline")
    with outages.tolerate(outages.STORE):
        AuditStore(f"postgresql://postgres@127.0.0.1:{_free_port()}/paperline").check()
    with pytest.raises(StoreError), outages.tolerate(outages.MLFLOW):
        AuditStore(f"postgresql://postgres@127.0.0.1:{_free_port()}/paperline").check()


def test_torchs_bare_write_failure_is_a_full_disk_only_when_the_workspace_is_full(workspace_env, tmp_path):
    import torch

    runs = workspace_env / ".paperline" / "runs"
    runs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(runs)], capture_output=True,
                             text=True, timeout=30)
    if mounted.returncode != 0:  # never a skip: it needs root, as the end-to-end disk test does
        pytest.fail(f"cannot mount a tmpfs at {runs}: {mounted.stderr.strip()}")
    try:
        with pytest.raises(RuntimeError) as raised:  # "unexpected pos N vs M", raised while handling an iostream error
            torch.save({"weights": torch.zeros(2_000_000)}, runs / "optimizer.pt")
        translated = outages.translate(raised.value, "training")
        assert isinstance(translated, outages.DiskFull), raised.value
        assert str(translated).startswith(f"no space left on device writing {runs} ("), translated
        (runs / "optimizer.pt").unlink()
        subprocess.run(["mount", "-o", "remount,size=512m", str(runs)], check=True, timeout=30)
        assert outages.translate(raised.value, "training") is None  # the same words with space left: not ours
    finally:
        subprocess.run(["umount", "-l", str(runs)], capture_output=True, timeout=60)
