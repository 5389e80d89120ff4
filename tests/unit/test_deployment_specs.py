"""`paperline deploy`'s deployment list without a server: infra/prefect.yaml's own deployments kept as written,
one generated per project config, the merged file `prefect deploy` reads, and the pull step's one-line failure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from repo_copy import REPO

from paperline.core.settings import Settings
from paperline.ops.services import deployment_specs as deployments
from paperline.project.discovery import discover


def _spec(root: Path) -> tuple[dict, list[str]]:
    return deployments.deployment_file(root, discover(root / "projects"), deployments.load_pools(root))


def _runs(spec: dict, pool: str = "cpu") -> dict[tuple[str, str], dict]:
    return {(d["parameters"]["project_name"], d["parameters"]["config_name"]): d for d in spec["deployments"]
            if d.get("entrypoint") == deployments.RUN_ENTRYPOINT and deployments.pool_of(d) == pool}


def test_every_project_config_has_a_cpu_deployment_and_the_written_ones_are_kept():
    spec, skipped = _spec(REPO)
    projects = discover(REPO / "projects")
    wanted = {(name, config) for name, project in projects.items() for config in project.configs}
    assert len(projects) >= 6 and skipped == []
    assert wanted <= set(_runs(spec))
    written = deployments.load_deployments(REPO)
    assert spec["deployments"][:len(written)] == written  # GPU ones, schedules, operations flows: as written
    names = [d["name"] for d in spec["deployments"]]
    assert len(names) == len(set(names))
    generated = _runs(spec)[("matryoshka_2d", "paper_high_lr")]
    assert generated["name"] == "matryoshka-2d-paper-high-lr"
    assert generated["tags"] == ["project:matryoshka_2d", "config:paper_high_lr"]
    assert generated["description"].startswith(projects["matryoshka_2d"].card.title)
    # a config written by hand is not generated twice: sbert_sts's default is `sbert-sts`, with its schedule
    assert _runs(spec)[("sbert_sts", "default")]["name"] == "sbert-sts"
    assert "sbert-sts-default" not in names and "sbert-sts-smoke" in names
    # the build and pull steps are infra/prefect.yaml's, as Prefect records them
    source = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
    assert spec["build"] == source["build"] and spec["pull"] == source["pull"]


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "infra", root / "infra")
    shutil.copytree(REPO / "projects", root / "projects", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_a_new_project_is_deployable_without_editing_yaml(tmp_path):
    root = _checkout(tmp_path)
    new = root / "projects" / "new_method"
    shutil.copytree(root / "projects" / "sbert_sts", new)
    card = new / "project.yaml"
    card.write_text(card.read_text().replace("name: sbert_sts", "name: new_method", 1))
    spec, _ = _spec(root)
    assert {d["name"] for d in _runs(spec).values() if "project:new_method" in d.get("tags", [])} == {
        "new-method-default", "new-method-nli-then-sts", "new-method-smoke"}
    path = deployments.write_deployment_file(tmp_path / "workspace", spec)
    assert path.name == "prefect.generated.yaml"
    again = yaml.safe_load(path.read_text())
    assert again == spec and again["pull"][0]["paperline_flows.deployments.enter_checkout"] == {
        "directory": "{{ checkout.stdout }}"}  # the template stays for `prefect deploy` to fill in


def test_a_broken_card_is_left_out_and_a_taken_name_or_unmarked_pool_is_one_line(tmp_path):
    root = _checkout(tmp_path)
    (root / "projects" / "trans_encoder" / "project.yaml").write_text("name: trans_encoder\n")
    spec, skipped = _spec(root)
    assert skipped == ["trans_encoder"] and not any(p == "trans_encoder" for p, _ in _runs(spec))

    prefect_yaml = root / "infra" / "prefect.yaml"
    prefect_yaml.write_text(prefect_yaml.read_text().replace("name: sbert-sts-gpu-docker", "name: trans-encoder-smoke"))
    (root / "projects" / "trans_encoder" / "project.yaml").write_text(
        (REPO / "projects" / "trans_encoder" / "project.yaml").read_text())
    with pytest.raises(deployments.DeploymentError, match="'trans-encoder-smoke' .* already taken"):
        _spec(root)

    pools = root / "infra" / "pools" / "pools.yaml"
    pools.write_text(pools.read_text().replace("projects: true", "projects: false"))
    with pytest.raises(deployments.DeploymentError, match=r"mark exactly one pool `projects: true`.*none"):
        _spec(root)


def test_the_pull_step_fails_in_one_line_naming_the_checkout(tmp_path, monkeypatch):
    from paperline_flows.deployments import enter_checkout

    missing = tmp_path / "gone" / "paperline"
    with pytest.raises(deployments.DeploymentError) as error:
        enter_checkout(str(missing))
    line = str(error.value)
    assert "\n" not in line and str(missing) in line and "does not exist on this machine" in line
    assert "checkout at that path" in line and "git_clone pull step" in line

    (tmp_path / "empty").mkdir()
    with pytest.raises(deployments.DeploymentError, match="holds no projects/ folder"):
        enter_checkout(str(tmp_path / "empty"))

    monkeypatch.chdir(tmp_path)  # restored after the test
    (tmp_path / "repo" / "projects").mkdir(parents=True)
    assert enter_checkout(str(tmp_path / "repo")) == {"directory": str(tmp_path / "repo")}
    assert Path.cwd() == tmp_path / "repo"


def test_the_result_cache_is_the_workspaces_unless_prefect_is_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("PAPERLINE_WORKSPACE", raising=False)
    monkeypatch.delenv("PREFECT_LOCAL_STORAGE_PATH", raising=False)
    settings = Settings.from_env(tmp_path)
    assert settings.results_dir == tmp_path / ".paperline" / "prefect" / "results"
    monkeypatch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(tmp_path / "elsewhere"))
    assert settings.results_dir == tmp_path / "elsewhere"


def test_gpu_pools_have_a_concurrency_limit_and_a_bad_one_is_one_line(tmp_path):
    pools = deployments.load_pools(REPO)
    assert pools["gpu-docker"].concurrency_limit == 1 and pools["gpu-k8s"].concurrency_limit >= 1
    assert pools["cpu"].concurrency_limit is None
    shutil.copytree(REPO / "infra", tmp_path / "infra")
    spec = tmp_path / "infra" / "pools" / "pools.yaml"
    spec.write_text(spec.read_text().replace("concurrency_limit: 1 ", "concurrency_limit: 0 "))
    with pytest.raises(deployments.DeploymentError, match="pool 'gpu-docker' has concurrency_limit 0"):
        deployments.load_pools(tmp_path)
