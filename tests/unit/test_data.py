"""Readers per data kind and the DVC version check, against the real team remote."""

import pytest
from repo_copy import SHARED, make_repo_copy

from paperline.data.datasets import DataError, dataset_ref, read_frame, read_split, resolve_data_version
from paperline.data.kinds import UnknownKindError
from paperline.data.kinds.nli_pairs import NliPair
from paperline.data.kinds.scored_pairs import ScoredPair

POINTER_MD5 = "f1bd840915efd71f73cab4431f31101f.dir"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo_copy(tmp_path_factory.mktemp("repo"), pull=False)


def test_missing_data_is_pulled_from_the_remote_then_matches(repo):
    version = resolve_data_version(repo)
    assert version.md5 == POINTER_MD5 and version.pulled
    assert (repo / "data" / "stsb" / "train.tsv").read_bytes() == (SHARED / "datasets/stsb/train.tsv").read_bytes()
    assert not resolve_data_version(repo).pulled


def test_readers_return_typed_rows(repo):
    version = resolve_data_version(repo)
    stsb = read_split(dataset_ref(version, "stsb", "scored_pairs"), "train")
    snli = read_split(dataset_ref(version, "snli", "nli_pairs"), "dev")
    assert len(stsb) == 5749 and isinstance(stsb[0], ScoredPair)
    assert stsb[0] == ScoredPair("A plane is taking off.", "An air plane is taking off.", 5.0)
    assert len(snli) == 9842 and isinstance(snli[0], NliPair)
    assert {p.label for p in snli} <= {"entailment", "neutral", "contradiction", "-"}


def test_a_bad_score_becomes_nan_for_the_gate_not_a_crash(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("sentence1\tsentence2\tscore\na\tb\tfive\nc\t\t2.5\n")
    frame = read_frame(path, "scored_pairs")
    assert frame.score.isna().tolist() == [True, False]
    assert frame.sentence2.tolist() == ["b", ""]  # empty stays empty: the gate reports it


def test_modified_data_is_refused_with_what_to_do(repo):
    resolve_data_version(repo)
    path = repo / "data" / "stsb" / "dev.tsv"
    original = path.read_bytes()
    path.write_bytes(original + b"x\tx\t2012\t9999\t3.0\ta\tb\n")
    try:
        with pytest.raises(DataError, match=r"differs from data.dvc .*paperline data pull --force.*dvc add data"):
            resolve_data_version(repo)
    finally:
        path.write_bytes(original)
    assert resolve_data_version(repo).md5 == POINTER_MD5


def test_unreachable_remote_is_one_clear_error(tmp_path):
    repo = make_repo_copy(tmp_path / "r", pull=False)
    config = repo / ".dvc" / "config"
    config.write_text(config.read_text().replace(str(SHARED / "dvc-remote"), str(tmp_path / "no-such-remote")))
    with pytest.raises(DataError, match="cannot pull the data from the DVC remote"):
        resolve_data_version(repo)


def test_unknown_kind_is_rejected(tmp_path):
    with pytest.raises(UnknownKindError, match="unknown data kind 'images'"):
        read_frame(tmp_path / "x.tsv", "images")


def _hold_dvc_lock(repo, seconds: float):
    """Take DVC's repository lock as another `dvc` command would, released after `seconds` (a thread)."""
    import threading

    import zc.lockfile

    (repo / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    lock = zc.lockfile.LockFile(str(repo / ".dvc" / "tmp" / "lock"))
    timer = threading.Timer(seconds, lock.close)
    timer.start()
    return timer


def test_a_run_waits_for_another_dvc_command_of_the_same_checkout(repo):
    """Runs started at once in one checkout each check data/ with DVC, which holds one lock per repository and
    gives up after 3 s; a run waits for the other command instead of failing with DVC's LockError."""
    import time

    resolve_data_version(repo)
    timer = _hold_dvc_lock(repo, 6.0)  # longer than DVC's own 3 s of retries
    started = time.monotonic()
    try:
        assert resolve_data_version(repo).md5 == POINTER_MD5
    finally:
        timer.join()
    assert time.monotonic() - started >= 5.0


def test_a_dvc_lock_held_too_long_is_one_line(repo, monkeypatch):
    import paperline.data.datasets as datasets

    resolve_data_version(repo)
    monkeypatch.setattr(datasets, "DVC_LOCK_TIMEOUT_S", 1.0, raising=False)
    timer = _hold_dvc_lock(repo, 10.0)
    try:
        with pytest.raises(DataError, match=r"another DVC command has held .*\.dvc/tmp/lock for over 1 s; wait"):
            resolve_data_version(repo)
    finally:
        timer.join()
