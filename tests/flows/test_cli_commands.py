"""The other `paperline` commands, as a user types them, on a repository copy."""

import subprocess

import pytest
from repo_copy import BIN, REPO

COMMANDS = [["ls"], ["run"], ["data"], ["data", "pull"], ["data", "status"], ["data", "validate"], ["models"],
            ["models", "ls"], ["models", "history"], ["promote"], ["rollback"], ["approve"], ["reject"], ["ui"],
            ["export"], ["server"], ["notify"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    result = subprocess.run([str(BIN / "paperline"), *command, "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "usage: paperline" in result.stdout


def test_data_commands_report_the_version_and_the_gate(workspace):
    status = workspace.paperline("data", "status")
    assert status.returncode == 0 and "f1bd840915efd71f73cab4431f31101f.dir" in status.stdout
    assert "matches data.dvc" in status.stdout
    validate = workspace.paperline("data", "validate", "--report", "gate.md")
    assert validate.returncode == 0, validate.stderr
    assert "stsb: passed" in validate.stdout or "passed:" in validate.stdout
    assert (workspace.root / "gate.md").read_text().count("|") > 10
    (workspace.root / "data" / "snli" / "dev.tsv").write_text("premise\thypothesis\tlabel\n")
    changed = workspace.paperline("data", "status")
    assert changed.returncode == 1 and "differs from data.dvc" in changed.stdout
    restored = workspace.paperline("data", "pull", "--force")
    assert restored.returncode == 0 and "f1bd840915efd71f73cab4431f31101f.dir" in restored.stdout


def test_ls_and_ui(workspace):
    listed = workspace.paperline("ls")
    assert listed.returncode == 0 and "sbert_sts" in listed.stdout and "arXiv 1908.10084" in listed.stdout
    ui = workspace.paperline("ui")
    assert ui.returncode == 0 and "Prefect dashboard" in ui.stdout and "mlflow ui --backend-store-uri" in ui.stdout
    workspace.env.update(MLFLOW_TRACKING_URI="http://127.0.0.1:9", PREFECT_API_URL="http://127.0.0.1:9/api")
    dead = workspace.paperline("ui")  # a dashboard address that does not answer is not printed as if it did
    assert dead.returncode == 1 and "MLFLOW_TRACKING_URI http://127.0.0.1:9 does not answer" in dead.stdout
    assert "PREFECT_API_URL http://127.0.0.1:9/api does not answer" in dead.stdout


def test_version():
    from importlib.metadata import version

    shown = subprocess.run([str(BIN / "paperline"), "--version"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.strip() == f"paperline {version('paperline')}"


def test_the_dashboard_of_the_local_server_talks_to_that_server(prefect_api):
    """The tests' server runs on port 4290 (4291 on a second xdist worker), not Prefect's default 4200: its
    dashboard must query that port."""
    import json
    import urllib.request

    url, _ = prefect_api
    with urllib.request.urlopen(url.removesuffix("/api") + "/ui-settings", timeout=10) as response:
        assert json.loads(response.read())["api_url"] == url
