"""`paperline export NAME@ALIAS OUT` to a place that cannot hold it: one line, exit 2, before the model is loaded
where the place says so up front (/proc, a read-only mount, a missing or file parent), and nothing left behind
when the disk fills up meanwhile. `data validate --report` checks its file the same way, before the gate.

One registered sentence-transformers model (all-MiniLM-L6-v2 as it is, logged without training) serves the module.
Root ignores mode bits, so the unwritable places are real mounts: a read-only tmpfs and one of a few MiB.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

MODEL = "export_target"


@pytest.fixture(scope="module")
def ws(shared_workspace):
    """The module's workspace, whose registry has MODEL@champion, a plain sentence-transformers model."""
    import mlflow
    from sentence_transformers import SentenceTransformer

    from paperline.ml.models import resolve_model_path

    workspace = shared_workspace
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(workspace.tracking_uri)
    try:
        client = workspace.client()
        experiment = client.create_experiment(MODEL, artifact_location=str(workspace.root / ".paperline" / "art"))
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.sentence_transformers.log_model(
                SentenceTransformer(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), device="cpu"),
                name="model")
        version = mlflow.register_model(info.model_uri, MODEL)
        client.set_registered_model_alias(MODEL, "champion", version.version)
    finally:
        mlflow.set_tracking_uri(previous)
    return workspace


def _one_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """Exit `code`, no traceback, and one `paperline: error:` line, the last one."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("paperline: error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr[-3000:]
    return errors[0]


def _export(ws, out: Path | str) -> subprocess.CompletedProcess:
    return ws.paperline("export", f"{MODEL}@champion", "--layers", "1", "--dim", "32", str(out), timeout=300)


def test_the_model_exports_to_a_usable_folder(ws, tmp_path):
    result = _export(ws, tmp_path / "l1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cut to 1 layers x 32 dims" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l1"]  # no staging or download folder left beside it


@pytest.mark.parametrize(("where", "message"), [
    ("/proc/paperline-export", "cannot write /proc/paperline-export: /proc is not a writable folder"),
    ("data.dvc/out", "data.dvc is a file, so it is not a writable folder"),
    ("no/such/folder/out", "no/such/folder does not exist; create it first"),
])
def test_an_unusable_target_is_one_line_before_the_model_loads(ws, where, message):
    line = _one_line(_export(ws, ws.root / where if not where.startswith("/") else where))
    assert message in line and line.endswith("choose another path")
    assert not (ws.root / "no").exists()  # no parent grown for a target that was refused


def test_a_read_only_mount_is_one_line(ws, mount_tmpfs):
    readonly = mount_tmpfs("ro,size=1m")
    line = _one_line(_export(ws, readonly / "out"))
    assert f"cannot write {readonly}/out: {readonly} is not a writable folder, it is on a read-only file system" in line


def test_a_disk_that_fills_up_during_the_export_leaves_nothing(ws, mount_tmpfs):
    small = mount_tmpfs("size=4m")  # the check passes; the model (90 MB) does not fit
    line = _one_line(_export(ws, small / "out"))
    assert f"writing {small}/out failed: its file system is full (no space left on device); nothing was written" in line
    assert list(small.iterdir()) == []


def test_a_report_path_that_cannot_be_written_stops_data_validate_before_the_gate(ws):
    line = _one_line(ws.paperline("data", "validate", "--report", "/proc/gate.md", timeout=120))
    assert "cannot write /proc/gate.md: /proc is not a writable folder" in line
