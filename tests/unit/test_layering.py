"""The package's layering, checked by import-linter's contracts in pyproject.toml (a real tool, not a list here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layering_contracts_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_ml_module_that_imports_mlflow_breaks_the_contract(tmp_path):
    root = _copy(tmp_path)
    training = root / "src" / "paperline" / "ml" / "training.py"
    training.write_text(training.read_text() + "\n\ndef _log():\n    import mlflow\n")
    result = _lint(root)
    assert result.returncode != 0 and "BROKEN" in result.stdout
    assert "paperline.ml.training -> mlflow" in result.stdout


def test_the_library_importing_a_flow_or_a_higher_layer_breaks_the_contracts(tmp_path):
    root = _copy(tmp_path)
    registry = root / "src" / "paperline" / "ops" / "registry" / "aliases.py"
    registry.write_text(registry.read_text() + "\n\ndef _flow():\n    import paperline_flows.run_project\n")
    config = root / "src" / "paperline" / "core" / "config.py"
    config.write_text(config.read_text() + "\n\ndef _up():\n    from paperline.project import discovery\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "paperline.ops.registry.aliases -> paperline_flows.run_project" in result.stdout
    assert "paperline.core.config -> paperline.project.discovery" in result.stdout


def test_an_import_cycle_inside_ops_or_a_lower_layer_in_ops_importing_a_higher_one_breaks_the_contracts(tmp_path):
    root = _copy(tmp_path)
    tables = root / "src" / "paperline" / "ops" / "store" / "tables.py"  # audit imports tables: now both ways
    tables.write_text(tables.read_text() + "\n\ndef _cycle():\n    from paperline.ops.store import audit\n")
    tags = root / "src" / "paperline" / "ops" / "tracking" / "tags.py"  # tracking is below the registry
    tags.write_text(tags.read_text() + "\n\ndef _up():\n    from paperline.ops.registry import aliases\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "no cycles among siblings, at any depth BROKEN" in result.stdout
    assert "in paperline.ops.store." in result.stdout and "- .tables -> .audit" in result.stdout
    flat = " ".join(result.stdout.split())  # import-linter wraps long contract names
    assert "ops: runs | production > registry > compare > tracking > store | cache | services BROKEN" in flat
    assert "paperline.ops.tracking.tags -> paperline.ops.registry.aliases" in result.stdout


def test_building_the_cli_parser_imports_no_heavy_library():
    """`paperline --help` stays fast, and tqdm is first imported after the quiet environment set TQDM_DISABLE (tqdm
    reads it once, at import): a library bar drawn in a quiet run means an import moved up into the parser."""
    probe = ("import sys; from paperline.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('mlflow', 'tqdm', 'torch', 'prefect', 'faiss', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout
