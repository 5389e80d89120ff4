"""Cache keys: what invalidates a cached training result, and what does not."""

import shutil
from pathlib import Path

import pytest

from paperline import pipeline
from paperline.projects import discover

REPO = Path(__file__).resolve().parents[2]
MD5 = "2ed8095159e767091da6de554533a1c3.dir"


@pytest.fixture
def project(tmp_path):
    shutil.copytree(REPO / "projects" / "sbert_sts", tmp_path / "sbert_sts")
    return discover(tmp_path)["sbert_sts"]


def test_key_is_stable_and_covers_config_data_and_project_files(project):
    cfg = project.load_config("smoke")
    key = pipeline.cache_key(project, cfg, MD5)
    assert key == pipeline.cache_key(project, project.load_config("smoke"), MD5)
    assert key != pipeline.cache_key(project, project.load_config("smoke", ["seed=1"]), MD5)
    assert key != pipeline.cache_key(project, cfg, "0" * 32 + ".dir")
    (project.root / "README.md").write_text("a new results table")
    assert key == pipeline.cache_key(project, cfg, MD5)  # docs cannot change a result
    (project.root / "method.py").write_text((project.root / "method.py").read_text() + "\n# changed\n")
    assert key != pipeline.cache_key(project, cfg, MD5)


def test_library_code_that_can_change_results_is_in_the_key_and_plumbing_is_not(project, monkeypatch, tmp_path):
    library = tmp_path / "lib"
    shutil.copytree(pipeline.LIBRARY_DIR, library, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline, "LIBRARY_DIR", library)
    cfg = project.load_config("smoke")
    key = pipeline.cache_key(project, cfg, MD5)
    (library / "cli.py").write_text((library / "cli.py").read_text() + "\n# a new command\n")
    assert pipeline.cache_key(project, cfg, MD5) == key
    (library / "training.py").write_text((library / "training.py").read_text() + "\n# a trainer change\n")
    assert pipeline.cache_key(project, cfg, MD5) != key


def test_plumbing_modules_exist():
    names = {p.name for p in pipeline.LIBRARY_DIR.glob("*.py")}
    assert pipeline.PLUMBING_MODULES <= names, pipeline.PLUMBING_MODULES - names


def test_reference_results_of_the_card_are_checked_against_a_run(project):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_project_flow", REPO / "flows" / "run_project.py")
    flow = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flow)
    good = {"stsb_test_spearman": 83.80, "baseline_stsb_test_spearman": 82.03}
    assert flow.reference_reproduced(project, "default", good) is True
    assert flow.reference_reproduced(project, "default", {**good, "stsb_test_spearman": 83.5}) is False
    assert flow.reference_reproduced(project, "smoke", good) is None  # no reference for that config
