"""The real `captioned_images` set (dataset v3, 9,554 PNGs pulled by DVC) passes its data gate, every split, with
the kind's default limits, through `paperline data validate` as a user runs it. The bad inputs are in
tests/unit/test_captioned_images_gate.py, on a tiny set built in a temporary folder."""

from __future__ import annotations

import os
import subprocess

from repo_copy import BIN, make_repo_copy


def test_the_real_captioned_images_pass_the_gate(tmp_path):
    root = make_repo_copy(tmp_path / "repo")
    env = {**os.environ, "PAPERLINE_ROOT": str(root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    validate = subprocess.run([str(BIN / "paperline"), "data", "validate", "--report", "gate.md"], cwd=root,
                              env=env, capture_output=True, text=True, timeout=600)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    # No project card reads the set yet: it is gated as the kind its folder is named after.
    assert ("captioned_images: passed: 56 expectations on splits dev (1454 rows), test (639 rows), train (7461 rows)"
            in validate.stdout.splitlines()), validate.stdout
    report = (root / "gate.md").read_text()
    # The known look-alikes stay under the limits (kinds/captioned_images.py): 2.00% of train repeats a picture,
    # 6 dev and 3 test pictures share a hash with train.
    assert "| train | expect_column_proportion_of_unique_values_to_be_between | image_key | yes | 0.9800 |" in report
    leaks = "| train+{} | expect_column_values_to_be_in_set | image_in_train | yes | {} rows unexpected |"
    assert leaks.format("dev", "6 of 1454") in report and leaks.format("test", "3 of 639") in report
    assert "## Sample pictures" in report
