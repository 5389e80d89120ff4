"""infra/prefect.yaml deploys on a real Prefect server, with the flow's real parameters, through `paperline deploy`
(which first creates the work pools of infra/pools/pools.yaml from their templates)."""

import shutil
import subprocess

from repo_copy import BIN, REPO


def test_every_deployment_registers_on_the_server(workspace):
    env = {**workspace.env, "COLUMNS": "300"}
    shutil.copytree(REPO / "infra", workspace.root / "infra")
    only_cpu = workspace.paperline("deploy", "--pool", "cpu", timeout=300)
    assert only_cpu.returncode == 0, only_cpu.stdout[-3000:] + only_cpu.stderr[-3000:]
    assert "work pool cpu (process)" in only_cpu.stdout and "gpu" not in only_cpu.stdout
    deploy = workspace.paperline("deploy", timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    prefect = str(BIN / "prefect")
    for name, config in [("sbert-sts", "default"), ("sbert-sts-nli-then-sts", "nli_then_sts"),
                         ("sbert-sts-smoke", "smoke"), ("sbert-sts-gpu-k8s", "default"),
                         ("sbert-sts-gpu-docker", "default")]:
        shown = subprocess.run([prefect, "deployment", "inspect", f"paperline-run/{name}"], cwd=workspace.root,
                               env=env, capture_output=True, text=True, timeout=120, check=False)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "'project_name': 'sbert_sts'" in shown.stdout and f"'config_name': '{config}'" in shown.stdout
    bad = workspace.paperline("deploy", "--pool", "nope")
    assert bad.returncode == 1 and "no deployment in infra/prefect.yaml uses work pool 'nope'" in bad.stderr
