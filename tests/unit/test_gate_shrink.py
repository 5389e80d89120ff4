"""The shrink check of the data gate: a split that lost more rows than its kind allows, against the last version
that passed the gate (kept in the audit store), fails unless the config says the cut is meant."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from paperline.core.config import DatasetUse, ProjectConfig
from paperline.data.datasets import DatasetRef
from paperline.data.kinds import DataKind, KindDefinitionError, get_kind
from paperline.data.quality import GateLimits, gate_datasets, gate_splits
from paperline.data.shrink import shrink_floor
from paperline.ops.cache import keys as cache
from paperline.ops.store.audit import AuditStore
from paperline.project.card import DataNeed

from gate_frames import stsb_frame

SHRINK = "expect_table_row_count_to_be_between"


def splits(train_rows: int) -> dict[str, pd.DataFrame]:
    return {"train": stsb_frame(train_rows), "dev": stsb_frame(20, first_id=1000)}


def test_the_kinds_default_fraction_is_a_fifth_and_the_floor_rounds_up():
    assert get_kind("scored_pairs").max_shrink_fraction == 0.2
    assert shrink_floor(40, 0.2) == 32
    assert shrink_floor(5749, 0.2) == 4600  # 5749 * 0.8 = 4599.2: 4599 rows is more than a fifth fewer
    assert shrink_floor(10, 0.0) == 10 and shrink_floor(10, 1.0) == 0


def test_a_split_cut_against_the_last_gated_version_is_one_failure_naming_split_counts_and_fraction():
    result = gate_splits("stsb", "scored_pairs", splits(10), previous_rows={"train": 40, "dev": 20})
    assert not result.passed
    (failure,) = result.failures
    assert (failure.split, failure.expectation, failure.column) == ("train", SHRINK, None)
    assert "train has 10 rows, 75.00% fewer than the 40 of the last version that passed the gate" in failure.detail
    assert "at most 20% fewer allowed (at least 32 rows)" in failure.detail
    assert "data.stsb.allow_shrink: true" in failure.detail
    line = result.summary_lines()[0]
    assert line.startswith("stsb/train: expect_table_row_count_to_be_between: train has 10 rows")


@pytest.mark.parametrize(("rows", "passed"), [(32, True), (31, False), (40, True), (400, True)])
def test_the_bound_is_the_fraction_and_growth_never_fails(rows, passed):
    assert gate_splits("stsb", "scored_pairs", splits(rows), previous_rows={"train": 40}).passed is passed


def test_no_history_or_a_split_never_gated_is_not_checked():
    assert gate_splits("stsb", "scored_pairs", splits(10)).passed
    assert gate_splits("stsb", "scored_pairs", splits(10), previous_rows={"test": 4000}).passed


def test_allow_shrink_leaves_the_check_out():
    def row_checks(result):
        return [o for o in result.outcomes if o.expectation == SHRINK and o.split == "train"]

    checked = gate_splits("stsb", "scored_pairs", splits(40), previous_rows={"train": 40})
    allowed = gate_splits("stsb", "scored_pairs", splits(10), previous_rows={"train": 40}, allow_shrink=True)
    assert allowed.passed
    assert len(row_checks(checked)) == 2 and len(row_checks(allowed)) == 1  # the floor check stays


def test_limits_override_the_kinds_fraction():
    loose = GateLimits(max_shrink_fraction=0.8)
    assert gate_splits("stsb", "scored_pairs", splits(10), loose, previous_rows={"train": 40}).passed
    with pytest.raises(ValueError, match="max_shrink_fraction"):
        GateLimits(max_shrink_fraction=1.5)


def test_a_kind_with_a_fraction_outside_0_1_is_refused():
    kind = get_kind("scored_pairs")
    with pytest.raises(KindDefinitionError, match="max_shrink_fraction"):
        DataKind(name="x", columns=kind.columns, text_columns=kind.text_columns, row_type=kind.row_type,
                 rows=kind.rows, key=kind.key, max_shrink_fraction=-0.1)


def _gate_files(tmp_path, train_rows: int, **use):
    folder = tmp_path / "stsb"
    folder.mkdir(exist_ok=True)
    for name, frame in splits(train_rows).items():
        frame.to_csv(folder / f"{name}.tsv", sep="\t", index=False)
    cfg = ProjectConfig(data={"stsb": DatasetUse(kind="scored_pairs", splits=["train", "dev"], **use)})
    return {"stsb": DatasetRef("stsb", "scored_pairs", folder, "v")}, cfg


def test_gate_datasets_takes_the_history_the_configs_allow_shrink_and_the_cards_fraction(tmp_path):
    refs, cfg = _gate_files(tmp_path, 10)
    previous = {"stsb": {"train": 40, "dev": 20}}
    failed = gate_datasets(refs, cfg, previous_rows=previous)
    assert not failed.passed and [f.split for f in failed.results[0].failures] == ["train"]
    own = {"stsb": {"max_shrink_fraction": 0.9}}
    assert gate_datasets(refs, cfg, previous_rows=previous, dataset_limits=own).passed
    refs, allowed = _gate_files(tmp_path, 10, allow_shrink=True)
    assert gate_datasets(refs, allowed, previous_rows=previous).passed


def test_allow_shrink_is_a_config_key_and_the_cards_fraction_is_bounded():
    assert DatasetUse(kind="scored_pairs", splits=["train"]).allow_shrink is False
    assert DataNeed(dataset="stsb", kind="scored_pairs", max_shrink=0.5).max_shrink == 0.5
    with pytest.raises(ValidationError):
        DataNeed(dataset="stsb", kind="scored_pairs", max_shrink=1.5)


def test_the_store_keeps_the_latest_gated_rows_per_split(tmp_path):
    store = AuditStore(f"sqlite:///{tmp_path / 'paperline.db'}")
    assert store.gated_rows(["stsb"]) == {}
    store.record_gated_rows("v1", {"stsb": {"train": 5749, "dev": 1500}, "snli": {"dev": 9842}})
    store.record_gated_rows("v2", {"stsb": {"train": 10}})
    assert store.gated_rows(["stsb"]) == {"stsb": {"train": 10, "dev": 1500}}
    assert store.gated_rows(["stsb", "snli"], with_md5=True)["snli"] == {"dev": ("v1", 9842)}
    # the version being gated is no reference for itself: a rerun of v2 compares against v1, as its first run did
    assert store.gated_rows(["stsb"], excluding_md5="v2") == {"stsb": {"train": 5749, "dev": 1500}}
    # A rerun of the same version adds nothing; going back to an older version is a new latest.
    store.record_gated_rows("v2", {"stsb": {"train": 10}})
    store.record_gated_rows("v1", {"stsb": {"train": 5749}})
    assert store.gated_rows(["stsb"])["stsb"]["train"] == 5749
    with store.transaction() as session:
        from sqlalchemy import func, select

        from paperline.ops.store.tables import GatedRowsRow

        assert session.scalar(select(func.count()).select_from(GatedRowsRow)) == 5


def test_the_gate_cache_key_covers_the_history_allow_shrink_and_the_cards_fraction():
    cfg = ProjectConfig(data={"stsb": DatasetUse(kind="scored_pairs", splits=["train"])})
    key = cache.gate_cache_key(cfg, "md5")
    assert cache.gate_cache_key(cfg, "md5", previous_rows={}) == key
    assert cache.gate_cache_key(cfg, "md5", previous_rows={"stsb": {"train": 40}}) != key
    assert cache.gate_cache_key(cfg, "md5", dataset_limits={"stsb": {"max_shrink_fraction": 0.5}}) != key
    allowed = ProjectConfig(data={"stsb": DatasetUse(kind="scored_pairs", splits=["train"], allow_shrink=True)})
    assert cache.gate_cache_key(allowed, "md5") != key
