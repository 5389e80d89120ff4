"""The method contract's check of one project's smoke run through the real flow (tests/flows/test_project_contract).

A project with a flow test of its own calls `check_contract` on that test's smoke run, so its smoke config runs
once in the suite, not twice; the contract test lists those projects and checks that each of them does.
"""

from __future__ import annotations

from paperline.project.discovery import discover


def check_contract(ws, name: str, result=None) -> None:
    """`result`: the project's smoke run when the caller made it; else it is run here."""
    import mlflow

    result = result or ws.paperline("run", name, "--config", "smoke")
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
