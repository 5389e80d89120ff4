"""Nothing in paperline unpickles a file a user can write to without a reason written next to it.

A pickle (cloudpickle, joblib, torch.load without weights_only) runs code when it is read: a file swapped into
the workspace (the result store, a checkpoint, a registered model's folder) would run as the next command's
user. Models load from safetensors, configs with yaml.safe_load, cached results with paperline's JSON codec;
an exception needs a comment `# pickle-ok: <why>` on the same line.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RISKY = re.compile(r"\b(import pickle|from pickle|import cloudpickle|cloudpickle\.loads?\(|import dill|joblib\.load|pickle\.loads?\(|"
                   r"yaml\.load\(|yaml\.unsafe_load|torch\.load\((?![^)]*weights_only=True))")


def risky_lines(folders: list[Path]) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if RISKY.search(line) and "# pickle-ok:" not in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_no_code_reads_a_pickle_without_a_written_reason():
    assert risky_lines([ROOT / "src", ROOT / "projects"]) == []


def test_the_check_finds_a_pickle(tmp_path):  # the scan itself can fail
    (tmp_path / "bad.py").write_text("import torch\nstate = torch.load(path)\nok = torch.load(p, weights_only=True)\n"
                                     "import cloudpickle  # pickle-ok: a reason\nfrom pickle import loads\n")
    original = ROOT
    try:
        globals()["ROOT"] = tmp_path
        assert [line.split(":")[1] for line in risky_lines([tmp_path])] == ["2", "5"]
    finally:
        globals()["ROOT"] = original
