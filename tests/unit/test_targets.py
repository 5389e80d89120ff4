"""A path a user names for a command to write (`export OUT`, `data validate --report FILE`): every unusable one is
refused in one line before any work, and a disk that fills up while writing leaves nothing behind.

Root ignores mode bits, so the unwritable places here are real ones: /proc, a read-only tmpfs, and a tmpfs of a
few hundred KiB for a full disk (`mount` needs root, as these tests run in CI and here).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from paperline.core.targets import TargetError, check_target, write_text


def _fill(folder: Path) -> None:
    """Write until the file system is full (bounded: a tmpfs of a few hundred KiB takes a few writes)."""
    with open(folder / "filler", "wb") as out:
        for _ in range(10_000):
            try:
                out.write(b"x" * 65536)
                out.flush()
            except OSError:
                return
    raise AssertionError(f"{folder} never filled up")


def test_a_folder_under_proc_is_refused():
    with pytest.raises(TargetError, match="cannot write /proc/paperline-export: /proc is not a writable folder"):
        check_target("/proc/paperline-export")


def test_a_read_only_mount_is_refused(mount_tmpfs):
    readonly = mount_tmpfs("ro,size=1m")
    with pytest.raises(TargetError, match="is not a writable folder, it is on a read-only file system"):
        check_target(readonly / "out")
    with pytest.raises(TargetError, match="read-only file system"):
        check_target(readonly / "report.md", what="file", replace=True)


def test_a_parent_that_is_a_file_or_missing_is_refused_and_nothing_is_created(tmp_path):
    a_file = tmp_path / "model.txt"
    a_file.write_text("x")
    with pytest.raises(TargetError, match="model.txt is a file, so it is not a writable folder"):
        check_target(a_file / "deeper" / "out")
    with pytest.raises(TargetError, match="the folder .*/no/such does not exist; create it first"):
        check_target(tmp_path / "no" / "such" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.txt"]  # no folder grown, no probe left


def test_a_full_disk_is_refused_before_any_work(mount_tmpfs):
    full = mount_tmpfs("size=256k")
    _fill(full)
    with pytest.raises(TargetError, match="full \\(no space left on device\\)"):
        check_target(full / "out")
    assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_a_disk_that_fills_up_while_exporting_is_one_line_and_leaves_nothing(mount_tmpfs):
    from paperline.ml.models import resolve_model_path

    small = mount_tmpfs("size=2m")  # room for the check, not for a model of 90 MB
    base = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    from paperline.ml.export import export_truncated

    with pytest.raises(TargetError, match="writing .*/out failed: its file system is full .*nothing was written"):
        export_truncated(base, layers=1, dim=32, out=small / "out")
    assert list(small.iterdir()) == []  # no staging folder, no half model


def test_a_report_is_written_whole_or_not_at_all(tmp_path, mount_tmpfs):
    report = tmp_path / "gate.md"
    write_text(check_target(report, what="file", replace=True), "# first\n")
    write_text(check_target(report, what="file", replace=True), "# second\n")  # a report is rewritten
    assert report.read_text() == "# second\n" and sorted(os.listdir(tmp_path)) == ["gate.md"]
    with pytest.raises(TargetError, match="is a folder; a report is a file"):
        check_target(tmp_path, what="file", noun="a report", replace=True)

    small = mount_tmpfs("size=64k")
    target = check_target(small / "gate.md", what="file", replace=True)
    with pytest.raises(TargetError, match="writing .*gate.md failed: its file system is full"):
        write_text(target, "x" * 1_000_000)
    assert list(small.iterdir()) == []
