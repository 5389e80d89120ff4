"""A project folder is the package `paperline_projects.<name>`: its files import each other with relative imports,
and a changed file is imported again in the same process (a long-lived worker runs the method it is handed)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from paperline.project.discovery import discover, project_package

CARD = """name: {name}
title: a test project
paper: {{title: t, bibtex: "@misc{{x}}"}}
data:
  - {{dataset: stsb, kind: scored_pairs, splits: [dev, test]}}
base_model: some/base-model
primary_metric: {{name: stsb_test_spearman}}
status: experimental
"""

METHOD = """from paperline.core.config import ProjectConfig
from paperline.project.sections import EvaluateSection

from .helper import VALUE


class Config(ProjectConfig):
    evaluate: EvaluateSection = EvaluateSection(baseline=False)


def answer():
    return {answer}


def prepare(cfg, data, ctx): ...


def evaluate(model, cfg, data, ctx): ...
"""


def _project(root: Path, name: str = "packaged") -> Path:
    folder = root / name
    (folder / "configs").mkdir(parents=True)
    (folder / "project.yaml").write_text(CARD.format(name=name))
    (folder / "configs" / "default.yaml").write_text("seed: 0\n")
    (folder / "method.py").write_text(METHOD.format(answer="VALUE"))
    (folder / "helper.py").write_text("VALUE = 1\n")
    return folder


def test_a_project_is_a_package_whose_files_import_each_other(tmp_path):
    _project(tmp_path)
    project = discover(tmp_path)["packaged"]
    assert project.problems == []
    method = project.method()
    assert method.__name__ == "paperline_projects.packaged.method" and method.answer() == 1
    assert importlib.import_module("paperline_projects.packaged.helper").VALUE == 1


def test_a_changed_method_or_sibling_is_imported_again_in_the_same_process(tmp_path):
    folder = _project(tmp_path, "edited")
    project = discover(tmp_path)["edited"]
    first = project.method()
    assert first.answer() == 1 and project.method() is first  # unchanged: the same module
    (folder / "method.py").write_text(METHOD.format(answer="VALUE + 1"))  # same second, other bytes
    assert project.method().answer() == 2
    (folder / "helper.py").write_text("VALUE = 10\n")  # a sibling only
    assert project.method().answer() == 11
    assert sys.modules["paperline_projects.edited.helper"].VALUE == 10


def test_the_card_fills_base_model_and_data_unless_a_config_sets_them(tmp_path):
    folder = _project(tmp_path, "filled")
    project = discover(tmp_path)["filled"]
    cfg = project.load_config()
    assert cfg.base_model == "some/base-model"
    assert {n: (u.kind, u.splits) for n, u in cfg.data.items()} == {"stsb": ("scored_pairs", ["dev", "test"])}
    assert project.load_config("default", ["base_model=other/model"]).base_model == "other/model"
    assert project.load_config("default", ["data.stsb.splits=[test]"]).data["stsb"].splits == ["test"]
    (folder / "configs" / "narrow.yaml").write_text("base_model: x/y\ndata: {stsb: {splits: [test]}}\n")
    cfg = project.load_config("narrow")
    assert cfg.base_model == "x/y" and cfg.data["stsb"].kind == "scored_pairs" and cfg.data["stsb"].splits == ["test"]


def test_a_copy_of_a_project_elsewhere_is_its_own_package(tmp_path):
    _project(tmp_path / "a", "twin")
    second = _project(tmp_path / "b", "twin")
    (second / "helper.py").write_text("VALUE = 7\n")
    assert discover(tmp_path / "a")["twin"].method().answer() == 1
    assert discover(tmp_path / "b")["twin"].method().answer() == 7
    assert project_package(second) == "paperline_projects.twin"
