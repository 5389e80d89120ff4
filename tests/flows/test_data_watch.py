"""The data watcher on a real DVC checkout: the first look records the version, a new version names the datasets
it changed and who reads them, the gate passes or fails each, and an unchanged version is no news."""

import subprocess

from repo_copy import BIN, make_repo_copy

from paperline.core.settings import Settings
from paperline.ops.production.data_watch import look, write_state


def _new_version(root, path, edit) -> str:
    target = root / "data" / path
    target.write_text(edit(target.read_text()))
    added = subprocess.run([str(BIN / "dvc"), "add", "data"], cwd=root, capture_output=True, text=True, timeout=300)
    assert added.returncode == 0, added.stdout + added.stderr
    return (root / "data.dvc").read_text().split("md5: ")[1].split()[0]


def test_a_new_data_version_names_the_changed_datasets_their_readers_and_the_gates_verdict(tmp_path):
    root = make_repo_copy(tmp_path / "repo")
    settings = Settings.from_env(root)

    first, digests = look(settings)
    assert first.previous is None and not first.new_version and "first look" in first.lines()[0]
    write_state(settings, first, digests)
    again, _ = look(settings)
    assert not again.new_version and "unchanged" in again.lines()[0]

    # 20 dialogue turns fewer: a new version that changes one dataset, read by one project
    version = _new_version(root, "dialogues/test.tsv", lambda text: "".join(text.splitlines(True)[:-20]))
    seen, digests = look(settings)
    assert seen.new_version and seen.version == version and seen.previous == first.version
    assert seen.changed == ["dialogues"] and seen.passed == ["dialogues"] and not seen.failed
    assert seen.readers == {"dialogues": ["uni_encoder"]}
    assert "dialogues: gate passed; retrains uni_encoder" in seen.lines()
    write_state(settings, seen, digests)

    # a score that is no number: the gate fails the dataset, nothing is announced as passed
    def broken(text):
        lines = text.splitlines(True)
        score = lines[0].rstrip("\n").split("\t").index("score")
        row = lines[1].split("\t")
        row[score] = "five"
        return "".join([lines[0], "\t".join(row), *lines[2:]])

    _new_version(root, "stsb/dev.tsv", broken)
    failed, _ = look(settings)
    assert failed.changed == ["stsb"] and failed.passed == [] and list(failed.failed) == ["stsb"]
    assert any("score" in line for line in failed.failed["stsb"]), failed.failed
    assert len(failed.readers["stsb"]) >= 8  # every STS project reads it: all of them would have retrained
