"""Cache keys: what invalidates a cached training result, and what does not."""

import shutil
from pathlib import Path

import pytest

from paperline.ops.cache import keys as cache
from paperline.project.discovery import discover

REPO = Path(__file__).resolve().parents[2]
MD5 = "f1bd840915efd71f73cab4431f31101f.dir"


@pytest.fixture
def project(tmp_path):
    shutil.copytree(REPO / "projects" / "sbert_sts", tmp_path / "sbert_sts")
    return discover(tmp_path)["sbert_sts"]


def test_key_is_stable_and_covers_config_data_and_project_files(project):
    cfg = project.load_config("smoke")
    key = cache.cache_key(project, cfg, MD5)
    assert key == cache.cache_key(project, project.load_config("smoke"), MD5)
    assert key != cache.cache_key(project, project.load_config("smoke", ["seed=1"]), MD5)
    assert key != cache.cache_key(project, cfg, "0" * 32 + ".dir")
    (project.root / "README.md").write_text("a new results table")
    assert key == cache.cache_key(project, cfg, MD5)  # docs cannot change a result
    (project.root / "method.py").write_text((project.root / "method.py").read_text() + "\n# changed\n")
    assert key != cache.cache_key(project, cfg, MD5)


@pytest.fixture
def library(monkeypatch, tmp_path):
    copy = tmp_path / "lib"
    shutil.copytree(cache.LIBRARY_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "LIBRARY_DIR", copy)
    return copy


def test_whole_result_layers_are_in_the_key_and_plumbing_is_not(project, library):
    cfg = project.load_config("smoke")
    key = cache.cache_key(project, cfg, MD5)
    (library / "cli" / "runs.py").write_text((library / "cli" / "runs.py").read_text() + "\n# a new command\n")
    (library / "ops" / "registry" / "aliases.py").write_text((library / "ops" / "registry" / "aliases.py").read_text() + "\n# plumbing\n")
    assert cache.cache_key(project, cfg, MD5) == key
    (library / "ml" / "training.py").write_text((library / "ml" / "training.py").read_text() + "\n# a change\n")
    assert cache.cache_key(project, cfg, MD5) != key


def test_a_new_module_in_a_result_layer_changes_the_key_without_a_list_to_edit(project, library):
    cfg = project.load_config("smoke")
    key = cache.cache_key(project, cfg, MD5)
    (library / "ml" / "a_new_loss.py").write_text("def loss():\n    return 0\n")
    assert cache.cache_key(project, cfg, MD5) != key


def test_the_gate_key_covers_the_data_layer_only(project, library):
    cfg = project.load_config("smoke")
    key = cache.gate_cache_key(cfg, MD5)
    (library / "ml" / "training.py").write_text((library / "ml" / "training.py").read_text() + "\n# a change\n")
    assert cache.gate_cache_key(cfg, MD5) == key
    kinds = library / "data" / "kinds"
    (kinds / "scored_pairs.py").write_text((kinds / "scored_pairs.py").read_text() + "\n# a stricter rule\n")
    assert cache.gate_cache_key(cfg, MD5) != key


def test_result_layers_exist():
    assert all((cache.LIBRARY_DIR / name / "__init__.py").is_file() for name in cache.RESULT_SUBPACKAGES)
