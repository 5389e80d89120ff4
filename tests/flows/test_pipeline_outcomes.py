"""`paperline run` and `paperline sweep` are two drivers of one pipeline (paperline_flows.pipeline): a sweep's
trial is planned and cached exactly where a run is, and a data gate stops both with the same outcome type, which
the CLI turns into exit 3."""

from __future__ import annotations

import subprocess
import sys

from repo_copy import BIN

SMOKE_SEED = "0"  # projects/sbert_sts/configs/smoke.yaml


def _latest_run(workspace, filter_string: str = ""):
    client = workspace.client()
    experiment = client.get_experiment_by_name("sbert_sts")
    return client.search_runs([experiment.experiment_id], filter_string, order_by=["attributes.start_time DESC"])[0]


def test_a_sweep_trial_with_a_runs_settings_is_that_runs_cache_hit(workspace):
    ran = workspace.paperline("run", "sbert_sts", "--config", "smoke")
    assert ran.returncode == 0, ran.stderr[-3000:]
    run = _latest_run(workspace)
    assert run.data.tags["paperline.cache_hit"] == "False"

    swept = workspace.paperline("sweep", "sbert_sts", "--config", "smoke", f"seed={SMOKE_SEED}",
                                "--runner", "thread", "--workers", "1")
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    assert "(cached)" in swept.stdout
    trial = _latest_run(workspace, "tags.`paperline.sweep` = 'trial'")
    assert trial.data.tags["paperline.cache_hit"] == "True"
    assert trial.data.tags["paperline.cache_key"] == run.data.tags["paperline.cache_key"]
    assert trial.data.metrics["stsb_test_spearman"] == run.data.metrics["stsb_test_spearman"]
    # one result store, the workspace's (Settings.results_dir), whoever trained
    results = workspace.root / ".paperline" / "prefect" / "results"
    assert (results / f"{run.data.tags['paperline.cache_key']}-train").is_file()


def test_a_failed_gate_is_one_outcome_type_and_exit_3_in_run_and_sweep(workspace):
    dev = workspace.root / "data" / "stsb" / "dev.tsv"
    lines = dev.read_text().splitlines()
    fields = lines[1].split("\t")
    fields[4] = "9.5"  # a similarity score outside [0, 5]
    lines[1] = "\t".join(fields)
    dev.write_text("\n".join(lines) + "\n")
    subprocess.run([str(BIN / "dvc"), "add", "-q", "data"], cwd=workspace.root, env=workspace.env, check=True)

    for command in (["run", "sbert_sts", "--config", "smoke"],
                    ["sweep", "sbert_sts", "--config", "smoke", f"seed={SMOKE_SEED}", "--workers", "1"]):
        result = workspace.paperline(*command)
        assert result.returncode == 3, " ".join(command) + result.stdout[-2000:] + result.stderr[-2000:]
        assert "data gate failed" in result.stderr and "stsb/dev" in result.stderr

    # What the two flows return, read in one process: the same type, whose exit code the CLI uses.
    script = (
        "from paperline_flows.run_project import run_project\n"
        "from paperline_flows.sweep import sweep\n"
        "for state in (run_project('sbert_sts', 'smoke', return_state=True),\n"
        "              sweep('sbert_sts', 'smoke', {'seed': ['0']}, workers=1, return_state=True)):\n"
        "    outcome = state.result(raise_on_failure=False)\n"
        "    print('OUTCOME', state.is_failed(), type(outcome).__module__, type(outcome).__name__, outcome.exit_code)\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], cwd=workspace.root, env=workspace.env,
                         capture_output=True, text=True, timeout=600)
    outcomes = [line for line in ran.stdout.splitlines() if line.startswith("OUTCOME")]
    assert outcomes == ["OUTCOME True paperline.ops.runs.summary GateFailure 3"] * 2, ran.stdout[-2000:] + \
        ran.stderr[-3000:]
    client = workspace.client()
    assert client.search_registered_models() == []
