"""A method that writes its own training data (`GeneratingMethod.generate`): the contract check of `generate`, and
what the platform does with its files besides the flow (the cache key follows their sha256, the typed rows)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from paperline.core.config import ProjectConfig
from paperline.ops.cache.keys import cache_key
from paperline.project.contract import check_method
from paperline.project.discovery import discover
from paperline.project.interface import ContractError, GeneratedData, RunContext

REPO = Path(__file__).resolve().parents[2]


def _method(**functions) -> SimpleNamespace:
    def evaluate(model, cfg, data, ctx): ...

    return SimpleNamespace(Config=ProjectConfig, evaluate=evaluate, **functions)


def test_generate_is_checked_like_train():
    def train(cfg, data, ctx): ...

    def generate(cfg, data, ctx): ...

    def generate_wrong(cfg, ctx): ...

    def prepare(cfg, data, ctx): ...

    assert check_method(_method(train=train, generate=generate)) == []
    assert check_method(_method(train=train, generate=generate_wrong)) == [
        "`generate` takes (cfg, ctx), the contract is (cfg, data, ctx)"]
    assert check_method(_method(prepare=prepare, generate=generate)) == [
        "`generate` writes training data, so it belongs to a method with `train`"]


def test_the_training_cache_key_follows_the_generated_files_sha256():
    project = discover(REPO / "projects")["multicsr"]
    cfg = project.load_config("smoke")
    plain = cache_key(project, cfg, "md5")
    first = cache_key(project, cfg, "md5", generated={"multicsr_generated": "a" * 64})
    assert first == cache_key(project, cfg, "md5", generated={"multicsr_generated": "a" * 64})  # unchanged: a hit
    assert len({plain, first, cache_key(project, cfg, "md5", generated={"multicsr_generated": "b" * 64})}) == 3


def test_generated_rows_are_typed_and_a_missing_name_is_one_clear_error(tmp_path):
    path = tmp_path / "triplets.tsv"
    path.write_text("premise\tentailment\tcontradiction\tentailment_score\tcontradiction_score\n"
                    "a dog runs\ta dog is running\ta cat sleeps\t4\t1\n")
    data = GeneratedData(name="g", kind="nli_generated", path=path)
    (row,) = data.rows()
    assert (row.premise, row.entailment_score) == ("a dog runs", 4.0)
    ctx = RunContext(workdir=tmp_path, generated={"g": data})
    assert ctx.generated_data("g") is data
    with pytest.raises(ContractError, match="no generated dataset 'other'.*have: g"):
        ctx.generated_data("other")
