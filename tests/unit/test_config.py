"""Configs: overrides, schema validation, and every config in the repository validated against its project."""

from pathlib import Path

import pytest

from paperline.core.config import ConfigError, apply_overrides, config_digest, flatten, load_config, parse_override
from paperline.project.discovery import discover

REPO = Path(__file__).resolve().parents[2]


def test_parse_override_types_values_as_yaml():
    assert parse_override("train.epochs=2") == (["train", "epochs"], 2)
    assert parse_override("base_model=foo/bar") == (["base_model"], "foo/bar")
    assert parse_override("evaluate.baseline=false") == (["evaluate", "baseline"], False)


@pytest.mark.parametrize("bad", ["noequals", "=3", "a=[unclosed"])
def test_malformed_override_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match="override"):
        parse_override(bad) if "[" not in bad else apply_overrides({}, [bad])


def test_overrides_reach_list_items_by_index():
    raw = {"train": {"stages": [{"epochs": 1}, {"epochs": 1}]}}
    out = apply_overrides(raw, ["train.stages.1.epochs=3"])
    assert out["train"]["stages"] == [{"epochs": 1}, {"epochs": 3}]
    assert raw["train"]["stages"][1]["epochs"] == 1  # the input is not mutated
    with pytest.raises(ConfigError, match="index below 2"):
        apply_overrides(raw, ["train.stages.5.epochs=3"])


def _sbert():
    return discover(REPO / "projects")["sbert_sts"]


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        _sbert().load_config("smoke", ["train.stages.0.lr=0.1"])
    message = str(err.value)
    assert "unknown key 'train.stages.0.lr'" in message and "learning_rate" in message
    assert "\n" not in message


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="'train.stages.0.epochs'"):
        _sbert().load_config("smoke", ["train.stages.0.epochs=many"])
    with pytest.raises(ConfigError, match="'train.stages.0.loss'"):
        _sbert().load_config("smoke", ["train.stages.0.loss=hinge"])


def test_unknown_config_name_lists_the_choices():
    with pytest.raises(ConfigError, match="choose one of: default, nli_then_sts, smoke"):
        _sbert().load_config("nope")


def test_digest_changes_with_the_resolved_config_only():
    a = _sbert().load_config("smoke")
    b = _sbert().load_config("smoke", ["seed=0"])
    c = _sbert().load_config("smoke", ["seed=1"])
    assert config_digest(a) == config_digest(b) != config_digest(c)
    assert flatten(a)["train.stages.0.loss"] == "cosent"


def _all_configs():
    for project in discover(REPO / "projects").values():
        for name in project.configs:
            yield pytest.param(project, name, id=f"{project.name}/{name}")


@pytest.mark.parametrize(("project", "config_name"), list(_all_configs()))
def test_every_config_in_the_repository_validates(project, config_name):
    cfg = project.load_config(config_name)
    header = project.config_path(config_name).read_text().splitlines()[:4]
    assert any("Run:" in line and "paperline run" in line for line in header), "header must give the run command"
    for dataset, use in cfg.data.items():
        assert use.kind in {need.kind for need in project.card.data if need.dataset == dataset}


def test_load_config_reports_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "configs" / "x.yaml", _sbert().method().Config)
