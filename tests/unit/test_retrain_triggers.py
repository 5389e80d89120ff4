"""Deployment triggers from lineage: each project's retrain deployment follows its card's datasets and its
config's upstream models, with a concurrency limit; nothing else is triggered."""

import pytest
from repo_copy import REPO

from paperline.ops.production.triggers import add_triggers
from paperline.ops.services.deployment_specs import DeploymentError, deployment_file, load_pools
from paperline.project.discovery import discover


def _spec(retrain_config="default"):
    projects = discover(REPO / "projects")
    spec, _ = deployment_file(REPO, projects, load_pools(REPO))
    return {d["name"]: d for d in add_triggers(spec, projects, REPO / "projects", "cpu", retrain_config)["deployments"]}


def test_the_dse_student_follows_its_teachers_champion_and_its_cards_datasets():
    deployments = _spec()
    student = deployments["distilled-sentence-embedding-default"]
    data, upstream = student["triggers"]
    assert data["expect"] == ["paperline.data.version-passed"]
    assert data["match"]["prefect.resource.id"] == ["paperline.dataset.sts12_16", "paperline.dataset.stsb"]
    assert upstream["match"]["prefect.resource.id"] == ["paperline.model.cross_encoder_sts"]
    assert set(upstream["expect"]) == {"paperline.model.promoted", "paperline.model.approved",
                                       "paperline.model.rolled-back"}
    assert upstream["parameters"] == {"project_name": "distilled_sentence_embedding", "config_name": "default"}
    assert student["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


def test_only_the_retrain_config_on_the_projects_pool_is_triggered():
    deployments = _spec()
    triggered = {name for name, d in deployments.items() if d.get("triggers")}
    assert "distilled-sentence-embedding-smoke" not in triggered and "sbert-sts-smoke" not in triggered
    assert "sbert-sts" in triggered  # infra/prefect.yaml's own default-config deployment
    assert "sbert-sts-gpu-k8s" not in triggered and "sbert-sts-gpu-docker" not in triggered  # one retrain, not three
    assert deployments["sbert-sts-gpu-k8s"]["concurrency_limit"]["collision_strategy"] == "ENQUEUE"
    uni = deployments["uni-encoder-default"]["triggers"]
    assert uni[0]["match"]["prefect.resource.id"] == ["paperline.dataset.dialogues"] and len(uni) == 1
    # hand-written triggers are kept as written (the embed deployment follows sbert_sts's champion)
    assert deployments["embed-sbert-sts-definitions"]["triggers"][0]["match"] == {
        "prefect.resource.id": "paperline.model.sbert_sts"}
    smoke = _spec("smoke")
    assert smoke["distilled-sentence-embedding-smoke"]["triggers"][1]["match"]["prefect.resource.id"] == [
        "paperline.model.cross_encoder_sts-smoke"]
    assert "triggers" not in smoke["distilled-sentence-embedding-default"]
    with pytest.raises(DeploymentError, match="no project has a config 'nightly'"):
        _spec("nightly")
