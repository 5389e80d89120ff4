"""The method contract, over every project: each smoke config through the real flow, and broken projects refused.

One parametrized test over `discover()` replaces a copy of the same checks per project: the run registers a
model, reports the card's primary metric, the reference-result metrics and everything its config declares, and
the registered model loads back in its flavor. The runs share one workspace (a teacher registered by one
project's run is the upstream model of the next).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from paperline.project.discovery import discover

REPO = Path(__file__).resolve().parents[2]
PROJECTS = sorted(discover(REPO / "projects"))


def _check_contract(ws, name: str) -> None:
    import mlflow

    result = ws.paperline("run", name, "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    project = discover(ws.root / "projects")[name]
    cfg = project.load_config("smoke")
    model_name = cfg.model_name or name
    client = ws.client()
    version = client.get_model_version_by_alias(model_name, "challenger")
    run = client.get_run(version.run_id)
    wanted = {project.card.primary_metric.name} | {r.metric for r in project.card.reference_results
                                                   if r.config == "smoke"} | cfg.metric_names()
    assert wanted <= set(run.data.metrics), wanted - set(run.data.metrics)
    assert f"{model_name} v{version.version}" in result.stdout
    mlflow.set_tracking_uri(ws.tracking_uri)
    try:
        uri = f"models:/{model_name}/{version.version}"
        flavors = set(mlflow.models.get_model_info(uri).flavors)
        if "sentence_transformers" in flavors:
            assert mlflow.sentence_transformers.load_model(uri).encode(["a man plays a guitar"]).shape[0] == 1
        else:
            assert mlflow.pyfunc.load_model(uri) is not None
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("name", PROJECTS)
def test_every_project_satisfies_the_contract_through_the_flow(shared_workspace, name):
    _check_contract(shared_workspace, name)


def test_a_scaffolded_project_runs_as_generated(shared_workspace):
    """`paperline new demo --from sbert_sts` then its smoke run registers a model; so does a bare template."""
    for args in (["demo", "--from", "sbert_sts"], ["fresh_method"]):
        made = shared_workspace.paperline("new", *args)
        assert made.returncode == 0, made.stderr
        assert (shared_workspace.root / "projects" / args[0] / "README.md").is_file()
        _check_contract(shared_workspace, args[0])
    again = shared_workspace.paperline("new", "demo")
    assert again.returncode == 2 and "exists already" in again.stderr


def test_a_broken_project_is_listed_with_the_reason_and_refused_in_one_line(workspace):
    broken = workspace.root / "projects" / "broken"
    broken.mkdir()
    (broken / "project.yaml").write_text((REPO / "projects" / "sbert_sts" / "project.yaml").read_text()
                                         .replace("name: sbert_sts", "name: broken"))
    (broken / "configs").mkdir()
    (broken / "configs" / "default.yaml").write_text("train: {stages: [{name: s, dataset: stsb, loss: cosent}]}\n")
    method = (REPO / "projects" / "sbert_sts" / "method.py").read_text()
    (broken / "method.py").write_text(method.split("def evaluate(")[0])  # no evaluate
    listed = workspace.paperline("ls")
    assert listed.returncode == 0 and "BROKEN" in listed.stdout
    assert "broken: method.py has no `evaluate(model, cfg, data, ctx)`" in listed.stdout
    refused = workspace.paperline("run", "broken")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paperline: error: project 'broken' is broken: method.py has no")

    (broken / "method.py").write_text(method.replace("def evaluate(model: TrainedModel, cfg: Config",
                                                     "def evaluate(cfg: Config"))
    listed = workspace.paperline("ls")
    assert "`evaluate` takes (cfg, data, ctx), the contract is (model, cfg, data, ctx)" in listed.stdout
    assert "sbert_sts" in listed.stdout  # the sound projects are still listed and usable
