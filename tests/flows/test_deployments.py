"""infra/prefect.yaml deploys on a real Prefect server, with the flow's real parameters."""

import subprocess

from repo_copy import BIN, REPO


def test_every_deployment_registers_on_the_server(workspace):
    env = {**workspace.env, "PREFECT_API_URL": workspace.env["PREFECT_API_URL"]}
    prefect = str(BIN / "prefect")
    pool = subprocess.run([prefect, "work-pool", "create", "cpu", "--type", "process", "--overwrite"],
                          cwd=workspace.root, env=env, capture_output=True, text=True, timeout=120)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    (workspace.root / "infra").mkdir()
    (workspace.root / "infra" / "prefect.yaml").write_text((REPO / "infra" / "prefect.yaml").read_text())
    deploy = subprocess.run([prefect, "--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--all"],
                            cwd=workspace.root, env=env, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    for name, config in [("sbert-sts", "default"), ("sbert-sts-nli-then-sts", "nli_then_sts")]:
        shown = subprocess.run([prefect, "deployment", "inspect", f"paperline-run/{name}"], cwd=workspace.root,
                               env={**env, "COLUMNS": "300"}, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "'project_name': 'sbert_sts'" in shown.stdout and f"'config_name': '{config}'" in shown.stdout
