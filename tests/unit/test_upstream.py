"""Upstream models: the config block, the graph check, what goes in the cache key and the run's lineage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from paperline.ops.cache import keys as cache
from paperline.ops.registry import upstream
from paperline.core.config import ConfigError
from paperline.project.interface import RunContext, UpstreamModel
from paperline.project.discovery import get_project

REPO = Path(__file__).resolve().parents[2]
MD5 = "f1bd840915efd71f73cab4431f31101f.dir"


@pytest.fixture
def projects(tmp_path):
    """A copy of the projects folder that a test may edit."""
    shutil.copytree(REPO / "projects", tmp_path / "projects", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "projects"


def _teacher(version: str, cache_key: str = "k1") -> UpstreamModel:
    return UpstreamModel(role="teacher", project="cross_encoder_sts", name="cross_encoder_sts", alias="champion",
                         version=version, run_id="r" * 32, cache_key=cache_key, path=Path("/nowhere"))


def test_the_dse_configs_name_their_teacher_by_alias(projects):
    dse = get_project(projects, "distilled_sentence_embedding")
    default, smoke = dse.load_config("default"), dse.load_config("smoke")
    assert (default.upstream["teacher"].project, default.upstream["teacher"].alias) == ("cross_encoder_sts", "champion")
    assert upstream.model_name(projects, default.upstream["teacher"]) == "cross_encoder_sts"
    # The smoke teacher is the smoke cross-encoder, named by that config's model_name.
    assert upstream.model_name(projects, smoke.upstream["teacher"]) == "cross_encoder_sts-smoke"
    with pytest.raises(ConfigError, match="unknown key 'upstream.teacher.version'"):
        dse.load_config("default", ["upstream.teacher.version=3"])


def test_unknown_upstream_projects_configs_and_cycles_are_config_errors(projects):
    dse = get_project(projects, "distilled_sentence_embedding")
    upstream.check_graph(projects, dse.name, dse.load_config("default"))  # the real graph is fine
    with pytest.raises(Exception, match="unknown project 'nope'"):
        upstream.check_graph(projects, dse.name, dse.load_config("default", ["upstream.teacher.project=nope"]))
    with pytest.raises(ConfigError, match="no config 'huge'"):
        upstream.check_graph(projects, dse.name, dse.load_config("default", ["upstream.teacher.config=huge"]))
    # The cross-encoder consuming the student: a cycle, found before anything runs.
    ce = projects / "cross_encoder_sts" / "configs" / "default.yaml"
    ce.write_text(ce.read_text() + "upstream:\n  student: {project: distilled_sentence_embedding}\n")
    with pytest.raises(ConfigError, match="cycle .*distilled_sentence_embedding -> cross_encoder_sts -> "
                                          "distilled_sentence_embedding"):
        upstream.check_graph(projects, dse.name, dse.load_config("default"))


def test_the_teachers_version_is_part_of_the_students_cache_key(projects):
    dse = get_project(projects, "distilled_sentence_embedding")
    cfg = dse.load_config("smoke")
    v1 = cache.cache_key(dse, cfg, MD5, {"teacher": _teacher("1").identity()})
    assert v1 == cache.cache_key(dse, cfg, MD5, {"teacher": _teacher("1").identity()})
    assert v1 != cache.cache_key(dse, cfg, MD5, {"teacher": _teacher("2").identity()})
    assert v1 != cache.cache_key(dse, cfg, MD5, {"teacher": _teacher("1", cache_key="k2").identity()})
    assert v1 != cache.cache_key(dse, cfg, MD5)
    # A project without upstream models keeps the key it had.
    sbert = get_project(projects, "sbert_sts")
    assert cache.cache_key(sbert, sbert.load_config("smoke"), MD5, {}) == cache.cache_key(
        sbert, sbert.load_config("smoke"), MD5)


def test_lineage_tags_name_the_upstream_model_and_version():
    tags = _teacher("7").tags()
    assert tags["paperline.upstream.teacher.model"] == "cross_encoder_sts"
    assert tags["paperline.upstream.teacher.version"] == "7"
    assert tags["paperline.upstream.teacher.alias"] == "champion"
    ctx = RunContext(workdir=Path("/tmp"), upstream={"teacher": _teacher("7")})
    assert ctx.upstream_model("teacher").version == "7"
    with pytest.raises(LookupError, match="no upstream model 'retriever'.*have: teacher"):
        ctx.upstream_model("retriever")
